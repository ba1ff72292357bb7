"""Which local addresses the server offers as ICE host candidates.

aioice gathers host candidates from every interface but loopback, and aiortc offers
no setting for it. ``rtc.ice_host_addresses`` replaces that list for this process
(aioice looks the function up at call time), so a test or a single-interface
deployment keeps every candidate where it wants. Empty: aioice's own choice.
"""

from __future__ import annotations

import aioice.ice

_original = aioice.ice.get_host_addresses


def restrict_host_addresses(addresses: tuple[str, ...]) -> None:
    if not addresses:
        aioice.ice.get_host_addresses = _original
        return
    chosen = list(addresses)

    def configured(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = configured
