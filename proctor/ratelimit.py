"""In-process rate limiters: token buckets and a sliding window of failures.

Each node counts for itself (no shared state); N nodes behind a balancer allow up to N
times the configured rates. Memory is bounded: each limiter keeps at most ``max_keys``
keys and forgets the least recently used one beyond that (a forgotten key starts again
with a full bucket or an empty window).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
DEFAULT_MAX_KEYS = 100_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up, one bucket per key."""

    def __init__(self, rate_per_second: float, burst: int, clock: Clock = time.monotonic,
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of 1 or more")
        self.rate = rate_per_second
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens: 0 when allowed (and spent), else the seconds until
        they are there (nothing spent)."""
        now = self._clock()
        bucket = self._buckets.pop(key, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        self._remember(key, bucket)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        if cost > self.burst:
            return math.inf
        return (cost - bucket.tokens) / self.rate

    def _remember(self, key: str, bucket: _Bucket) -> None:
        self._buckets[key] = bucket
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)


class FailureWindow:
    """At most ``limit`` failures per key within the last ``window`` seconds."""

    def __init__(self, limit: int, window_seconds: float, clock: Clock = time.monotonic,
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.limit = limit
        self.window = window_seconds
        self._clock = clock
        self._max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def blocked_for(self, key: str) -> float:
        """0 while the key may still fail; else the seconds until its oldest failure
        leaves the window."""
        times = self._current(key)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(times[0] + self.window - self._clock(), 0.001)

    def fail(self, key: str) -> None:
        times = self._current(key) or deque()
        times.append(self._clock())
        while len(times) > self.limit:
            times.popleft()
        self._failures[key] = times
        self._failures.move_to_end(key)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    def _current(self, key: str) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        horizon = self._clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times


def retry_after(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1, at most an hour."""
    return max(1, math.ceil(min(seconds, 3600.0)))
