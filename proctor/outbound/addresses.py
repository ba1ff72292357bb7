"""Where webhooks may be sent: public addresses, and the networks an operator allows.

A webhook URL is chosen by an integrator, and the server fetches it. Left unchecked, a
key holder could make the server post to its own loopback services, the cloud metadata
address or the operator's private network (server-side request forgery). So by default
a delivery goes only to globally routable addresses; ``webhooks.allowed_networks`` lists
the private networks (CIDR) an operator's own receivers live on.

The check runs twice: when a webhook is registered (an address in the URL, or a name
that resolves only to refused addresses, is answered 400 at once) and on every delivery,
on the addresses the name resolves to at that moment, so a name that later points
somewhere private (DNS rebinding) is refused then.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
RESOLVE_TIMEOUT_SECONDS = 2.0  # at registration only; a slow resolver must not hang it


class AddressRefused(OSError):
    """A webhook's address is neither public nor in ``webhooks.allowed_networks``."""


def parse_networks(networks: Sequence[str]) -> tuple[IpNetwork, ...]:
    """CIDR strings as networks (``10.0.0.0/8``; a bare address is one host);
    ValueError names the bad one."""
    parsed = []
    for network in networks:
        try:
            parsed.append(ipaddress.ip_network(network, strict=False))
        except ValueError as exc:
            raise ValueError(f"{network!r} is not a network (CIDR, e.g. 10.0.0.0/8)") from exc
    return tuple(parsed)


class AddressPolicy:
    """Public addresses, plus the allowed networks; everything else is refused."""

    def __init__(self, allowed_networks: Sequence[str] = ()) -> None:
        self.allowed = parse_networks(allowed_networks)

    def permits(self, address: str) -> bool:
        ip: IpAddress = ipaddress.ip_address(address.split("%", 1)[0])  # drop a zone id
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return True
        return ip.is_global and not ip.is_multicast

    def check_literal(self, host: str) -> None:
        """Refuse ``host`` if it is an address (not a name) this policy refuses."""
        if is_address(host) and not self.permits(host):
            raise AddressRefused(self.refusal(host))

    async def check_name(self, host: str) -> None:
        """Refuse a name that resolves, right now, only to refused addresses. A name that
        does not resolve passes: its deliveries are checked when they are sent."""
        if is_address(host):
            self.check_literal(host)
            return
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, type=socket.SOCK_STREAM),
                RESOLVE_TIMEOUT_SECONDS)
        except (OSError, TimeoutError, UnicodeError):
            return
        addresses = {str(info[4][0]) for info in infos}
        if addresses and not any(self.permits(a) for a in addresses):
            raise AddressRefused(self.refusal(host))

    @staticmethod
    def refusal(host: str) -> str:
        return (f"{host} is a private, loopback or reserved address; webhooks go to public "
                "addresses unless the server's webhooks.allowed_networks includes it")


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


class GuardedResolver(AbstractResolver):
    """The default resolver with the refused addresses taken out of every answer."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        permitted = [r for r in results if self.policy.permits(r["host"])]
        if not permitted:
            raise AddressRefused(self.policy.refusal(host))
        return permitted

    async def close(self) -> None:
        await self._inner.close()
