"""Token buckets, alone and per source. Pure: callers pass ``now``.

A bucket earns ``rate`` tokens a second up to ``burst``; taking ``cost`` tokens succeeds only if
that many are there. The RPC layer counts requests with them (per source and overall), the
store counts bytes written (a write budget per source).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable


class TokenBucket:
    __slots__ = ("at", "tokens")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.at = now

    def take(self, rate: float, burst: float, now: float, cost: float = 1.0) -> bool:
        tokens = min(burst, self.tokens + (now - self.at) * rate)
        self.at = now
        if tokens < cost:
            self.tokens = tokens
            return False
        self.tokens = tokens - cost
        return True

    def charge(self, rate: float, burst: float, now: float, cost: float) -> None:
        """Take ``cost`` tokens whether or not they are there (see Buckets.charge)."""
        tokens = min(burst, self.tokens + (now - self.at) * rate)
        self.at = now
        self.tokens = max(tokens - cost, -burst)


class Buckets:
    """One bucket per key (a source), at most ``max_keys`` kept: when full, the quarter seen
    first is forgotten (a stranger with many addresses gets a fresh bucket, not our memory; the
    overall limit is what stops it)."""

    def __init__(self, rate: float, burst: float = 0.0, max_keys: int = 16_384) -> None:
        self.rate = rate
        self.burst = burst or 2 * rate
        self.max_keys = max_keys
        self._buckets: dict[Hashable, TokenBucket] = {}

    def take(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                for old in list(itertools.islice(self._buckets, max(1, self.max_keys // 4))):
                    del self._buckets[old]
            bucket = self._buckets[key] = TokenBucket(self.burst, now)
        # TokenBucket.take, inline: the RPC layer runs this for every datagram.
        tokens = bucket.tokens + (now - bucket.at) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket.at = now
        if tokens < cost:
            bucket.tokens = tokens
            return False
        bucket.tokens = tokens - cost
        return True

    def charge(self, key: Hashable, now: float, cost: float) -> None:
        """Take ``cost`` more tokens from ``key``'s bucket (one it has) whether or not they are
        there: a debt, down to minus the burst, that the next datagrams wait out (what a
        request turned out to cost once handled, when that was more than its one token)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.charge(self.rate, self.burst, now, cost)


def source_of(addr: tuple[str, int]) -> Hashable:
    """Who a datagram's sender is, for limits: its IP address, except for 127.0.0.1 and ::1,
    which every process of a machine shares by default, so that only the port tells them
    apart (a local ring; other loopback addresses are "hosts" of their own, as in tests)."""
    host = addr[0]
    return addr if host == "127.0.0.1" or host == "::1" else host
