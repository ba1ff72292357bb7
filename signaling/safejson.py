"""JSON from clients, parsed so that no input raises anything but ValueError.

``json.loads`` raises RecursionError for deep nesting (``"[" * 30000``), and ValueError
(not JSONDecodeError) for an integer over Python's digit limit; a handler that only
expected JSONDecodeError answered 500, and a DataChannel handler that raised closed the
peer. Nesting is bounded well below the recursion limit, before parsing.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def loads(text: str) -> Any:
    """The value, or ValueError with words fit to send back."""
    if nesting(text) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from exc
    except (ValueError, RecursionError) as exc:  # an integer too long to convert
        raise ValueError(f"not JSON we accept: {exc}"[:200]) from exc


def nesting(text: str) -> int:
    """The deepest ``[``/``{`` nesting outside strings, or MAX_DEPTH when it cannot be
    more (a bound, not a validation)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return MAX_DEPTH  # cannot be deeper: skip the scan
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRINGS.sub('""', text)):
        char = match.group()
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest
