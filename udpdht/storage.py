"""Versioned records with TTL, in memory or on disk. No network, no clock: callers pass ``now``.

A record is what the store keeps for one key: the value (already msgpack-encoded, so sizes are
exact and nodes never decode what they only hold), a version, and an optional absolute expiry.
A delete is a *tombstone*: a record with no value, which expires like any other, so an older
replica cannot bring the value back while the tombstone lives.

Versions order writes. The primary of a key stamps each write with ``(stamp, writer)`` where
``stamp`` is a hybrid clock in milliseconds: at least the wall clock, and always past the
version it replaces, so a newer write wins even when clocks disagree. ``writer`` (the primary's
id) breaks ties between two primaries that stamped the same millisecond during a partition.
:meth:`Store.put` applies a record only if its version is newer: an older replica never
overwrites (the failure of kademlia#107).

Nothing a peer can ask may cost work in proportion to the store: a node holding gigabytes
must stay responsive. So every engine keeps, updated by each put, remove and purge:

* totals (:meth:`Store.stats`, ``len``) in O(1);
* 4,096 fixed buckets over the key-id space (the top 12 bits of the id), each with its record
  count, bytes and a digest, the XOR of :func:`record_hash` over its records. A range count or
  digest sums the whole buckets it covers and reads only the records of its (at most two)
  edge buckets from the index;
* ring order in an index, so a scan reads one page, never the whole range: a sorted list per
  bucket in memory; on disk a table clustered on ``(key_id, key)`` that holds no values.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
import os
import sqlite3
import threading
import time
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from heapq import heapify, heappop, heappush
from itertools import islice
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar
from zlib import crc32

from . import ids
from .errors import StoreFull
from .limits import BATCH_BYTES, ITEM_OVERHEAD, MAX_ITEMS
from .limits import MAX_KEY as MAX_KEY
from .limits import MAX_VALUE as MAX_VALUE

log = logging.getLogger("udpdht.storage")

#: What DiskStore raises when the medium under it fails (a disk error, a damaged file), besides
#: StoreFull for a full disk.
EngineError = sqlite3.Error

STORE_FILE = "store.sqlite3"  # DiskStore's file in its directory


class Version(NamedTuple):
    stamp: int  # hybrid clock, milliseconds
    writer: bytes  # id of the primary that stamped it

    @staticmethod
    def next_after(current: Version | None, wall_ms: int, writer: bytes) -> Version:
        """The version of a new write: past ``current`` even if our clock is behind."""
        stamp = wall_ms if current is None else max(wall_ms, current.stamp + 1)
        return Version(stamp, writer)


class Record(NamedTuple):
    key: bytes
    value: bytes | None  # msgpack-encoded value; None for a tombstone
    version: Version
    expires_at: float | None  # wall-clock seconds; None: never

    @property
    def key_id(self) -> int:
        return ids.hash_key(self.key)

    @property
    def is_tombstone(self) -> bool:
        return self.value is None

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now

    def size(self) -> int:
        return len(self.key) + (len(self.value) if self.value is not None else 0)

    def to_wire(self) -> list[object]:
        v = self.version
        return [self.key, self.value, v.stamp, v.writer, self.expires_at]

    @classmethod
    def from_wire(cls, item: object) -> Record:
        """Parse ``[key, value|nil, stamp, writer, expires|nil]``; ValueError otherwise."""
        if not isinstance(item, list) or len(item) != 5:
            raise ValueError("a record is [key, value, stamp, writer, expires]")
        key, value, stamp, writer, expires = item
        if not isinstance(key, bytes) or not 0 < len(key) <= MAX_KEY:
            raise ValueError(f"a key is 1..{MAX_KEY} bytes")
        if value is not None and (not isinstance(value, bytes) or len(value) > MAX_VALUE):
            raise ValueError(f"a value is at most {MAX_VALUE} encoded bytes")
        if type(stamp) is not int or not 0 <= stamp < 1 << 63 or not isinstance(writer, bytes):
            raise ValueError("a version is [int in 0..2**63-1, bytes]")  # sqlite's INTEGER
        if expires is not None and (
            type(expires) not in (int, float) or math.isnan(expires)  # bool is not a time
        ):
            raise ValueError("expiry must be a number or nil")
        return cls(key, value, Version(stamp, writer), None if expires is None else float(expires))


def newer(a: Record, b: Record | None) -> bool:
    """Whether ``a`` should replace ``b``."""
    return b is None or a.version > b.version


# --- what every engine keeps besides the records: counters and bucket digests -----------------

BUCKET_BITS = 12
BUCKETS = 1 << BUCKET_BITS  # fixed hash buckets over the key-id space, by the top 12 bits
_SHIFT = ids.BITS - BUCKET_BITS
PURGE_LIMIT = 10_000  # records one purge() drops at most, unless told (the rounds take 1,000)
PAGE_LIMIT = MAX_ITEMS
PAGE_BUDGET = BATCH_BYTES  # the batch budget of PROTOCOL.md §10.3

Cursor = tuple[int, bytes]
"""A position in ring order, ``(key_id, key)``: a scan resumes strictly after it."""


class StoreStats(NamedTuple):
    # records held: values, tombstones, expired ones not yet purged (the field hides the
    # tuple's count() method, which nobody calls on these)
    count: int  # type: ignore[assignment]
    bytes: int  # sum of Record.size(): key + value bytes (a tombstone counts its key)
    tombstones: int


class Entry(NamedTuple):
    """A record without its value: what a version scan returns."""

    key: bytes
    version: Version
    expires_at: float | None
    tombstone: bool
    size: int  # Record.size(): key + value bytes


_U16 = 0xFFFF
_U64 = (1 << 64) - 1


def _hash(key: bytes, stamp: int, writer: bytes) -> int:
    # Masks only matter for records no wire could carry (a stamp outside 0..2**63-1, a key over
    # 64 KiB): they keep the function total instead of raising inside a put.
    data = (len(key) & _U16).to_bytes(2, "big") + key + (stamp & _U64).to_bytes(8, "big") + writer
    return int.from_bytes(hashlib.sha1(data).digest(), "big")


def record_hash(record: Record) -> int:
    """SHA-1 of ``uint16_be(len(key)) ‖ key ‖ uint64_be(stamp) ‖ writer``, as an int.

    A bucket's digest is the XOR of these over its records. XOR needs no order and can be
    updated in O(1) when a record comes or goes; the value and the expiry are left out, as in
    the protocol's digest, so equal digests mean equal (key, version) sets. (XOR of hashes is a
    check between honest replicas, not a proof against someone choosing keys to cancel out.)
    """
    v = record.version
    return _hash(record.key, v.stamp, v.writer)


def _bucket_start(b: int) -> int:
    return b << _SHIFT


def _bucket_end(b: int) -> int:
    return ((b + 1) << _SHIFT) - 1


def _segments(low: int, high: int) -> list[tuple[int, int]]:
    """The ring interval ``(low, high]`` as closed key-id intervals, in ring order from low.

    Ring order starts just after ``low`` and wraps past ``2**160 - 1`` to 0, so a wrapping
    interval is two segments; ``low == high`` is the whole ring, also starting after ``low``.
    """
    low &= ids.MASK
    high &= ids.MASK
    if low < high:
        return [(low + 1, high)]
    segments = [(low + 1, ids.MASK)] if low < ids.MASK else []
    segments.append((0, high))
    return segments


def _plan(low: int, high: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Split ``(low, high]`` into whole buckets and edge pieces.

    Returns ``(full, edges)``: ``full`` are inclusive ranges of bucket numbers covered
    entirely, answered from the counters; ``edges`` are closed key-id intervals that each lie
    in one bucket and cover it partly, answered from the index. There are at most two edge
    buckets (those of ``low + 1`` and of ``high``).
    """
    if (low - high) & ids.MASK == 0:
        return [(0, BUCKETS - 1)], []
    full: list[tuple[int, int]] = []
    edges: list[tuple[int, int]] = []
    for a, z in _segments(low, high):
        ba, bz = a >> _SHIFT, z >> _SHIFT
        if ba == bz:
            if a == _bucket_start(ba) and z == _bucket_end(ba):
                full.append((ba, ba))
            else:
                edges.append((a, z))
            continue
        first, last = ba, bz
        if a != _bucket_start(ba):
            edges.append((a, _bucket_end(ba)))
            first += 1
        if z != _bucket_end(bz):
            edges.append((_bucket_start(bz), z))
            last -= 1
        if first <= last:
            full.append((first, last))
    return full, edges


def split_range(low: int, high: int, parts: int) -> list[tuple[int, int]]:
    """``(low, high]`` cut into at most ``parts`` consecutive intervals ``(a, b]``, in ring
    order from ``low``, of about equal width. Each cut falls just before a bucket boundary
    where that keeps it inside the interval, so a part made of whole buckets has a digest and
    a count read from the counters alone. Pure and deterministic: two nodes that cut the same
    interval get the same parts (anti-entropy compares them part by part).
    """
    if parts < 1:
        raise ValueError("parts must be at least 1")
    low &= ids.MASK
    high &= ids.MASK
    span = (high - low) & ids.MASK or ids.RING
    cuts: list[int] = []
    prev = low
    for k in range(1, parts):
        c = (low + span * k // parts) & ids.MASK
        aligned = (_bucket_start(c >> _SHIFT) - 1) & ids.MASK  # the last id before c's bucket
        for cut in (aligned, c):
            if ids.in_interval(cut, prev, high):
                cuts.append(cut)
                prev = cut
                break
    bounds = [low, *cuts, high]
    return list(itertools.pairwise(bounds))


def _resume(low: int, high: int, after: Cursor | None) -> list[tuple[int, int, Cursor | None]]:
    """The segments of ``(low, high]`` still to scan after ``after``, each with the cursor to
    resume strictly after (only the first may have one).

    A cursor outside the interval sits after every position of it in ring order (ring order
    starts just after ``low``, and the interval is its first part), so nothing remains.
    """
    segments = _segments(low, high)
    if after is None:
        return [(a, z, None) for a, z in segments]
    for i, (a, z) in enumerate(segments):
        if a <= after[0] <= z:
            return [(a, z, after)] + [(a2, z2, None) for a2, z2 in segments[i + 1 :]]
    return []


def _max_items(limit: int, budget: int) -> int:
    """Items a page can hold: each costs at least ITEM_OVERHEAD bytes, and there is always one."""
    if limit < 1:
        raise ValueError("a page holds at least one item: limit must be >= 1")
    return min(limit, max(1, budget // ITEM_OVERHEAD))


_T = TypeVar("_T")


def _take(
    rows: Iterable[tuple[Cursor, int, _T]], limit: int, budget: int
) -> tuple[list[_T], Cursor | None]:
    """A page from ``(position, cost, item)`` rows in ring order.

    Stops after ``limit`` items or before the item that would take the running cost over
    ``budget``, but always holds one item if any remains. The cursor is the position of the
    last item when something remains (the row that did not fit proves it), else None; so
    ``rows`` must go on one row past what fits: one more than :func:`_max_items` is enough.
    """
    out: list[_T] = []
    last: Cursor | None = None
    total = 0
    for position, cost, item in rows:
        total += cost
        if out and (len(out) >= limit or total > budget):
            return out, last
        out.append(item)
        last = position
    return out, None


class _Tally:
    """Counters of a store: totals, and per bucket ``[count, bytes, xor digest]``.

    Buckets live in a dict holding only the non-empty ones: the simulator runs thousands of
    small stores, and 4,096 preallocated slots each would cost it megabytes for nothing.
    """

    __slots__ = ("buckets", "bytes", "count", "digest", "tombstones")

    def __init__(self) -> None:
        self.buckets: dict[int, list[int]] = {}
        self.count = 0
        self.bytes = 0
        self.tombstones = 0
        self.digest = 0  # XOR over every record: the whole-ring digest in O(1)

    def add(self, bucket: int, size: int, h: int, tombstone: bool) -> None:
        state = self.buckets.get(bucket)
        if state is None:
            state = self.buckets[bucket] = [0, 0, 0]
        state[0] += 1
        state[1] += size
        state[2] ^= h
        self.count += 1
        self.bytes += size
        self.tombstones += tombstone
        self.digest ^= h

    def sub(self, bucket: int, size: int, h: int, tombstone: bool) -> None:
        state = self.buckets[bucket]
        state[0] -= 1
        state[1] -= size
        state[2] ^= h
        if not state[0]:
            del self.buckets[bucket]
        self.count -= 1
        self.bytes -= size
        self.tombstones -= tombstone
        self.digest ^= h

    def stats(self) -> StoreStats:
        return StoreStats(self.count, self.bytes, self.tombstones)

    def full(self, ranges: list[tuple[int, int]]) -> tuple[int, int, int]:
        """``(count, bytes, xor)`` over whole buckets: O(number of buckets) at most."""
        count = size = digest = 0
        for b0, b1 in ranges:
            if b0 == 0 and b1 == BUCKETS - 1:
                count += self.count
                size += self.bytes
                digest ^= self.digest
                continue
            buckets = self.buckets
            if len(buckets) < b1 - b0 + 1:
                states: Iterable[list[int]] = (s for b, s in buckets.items() if b0 <= b <= b1)
            else:
                states = (s for s in map(buckets.get, range(b0, b1 + 1)) if s is not None)
            for state in states:
                count += state[0]
                size += state[1]
                digest ^= state[2]
        return count, size, digest


class Store(Protocol):
    """What the node needs from a storage engine.

    Every method costs O(its answer) (plus at most O(buckets) = 4,096 steps of arithmetic),
    never O(store): a peer's request must not stall a node holding gigabytes. The two engines
    have the same semantics; the tests hold them to one model.
    """

    #: Bytes a record takes in this engine besides its key and value: what the quota counts
    #: for it (replication: ``--max-store-bytes``), measured with small records.
    RECORD_COST: int

    def get(self, key: bytes) -> Record | None: ...

    def put(self, record: Record) -> bool:
        """Keep ``record`` if it is newer than what we hold; return whether it was kept."""
        ...

    def put_many(self, records: Iterable[Record]) -> int:
        """:meth:`put` each record, in one transaction on disk; return how many were kept."""
        ...

    def remove(self, key: bytes) -> None:
        """Forget a key entirely (hand-off done: another node is responsible now)."""
        ...

    def records(self) -> Iterator[Record]:
        """Every record, as a snapshot taken at the call (the store may change meanwhile)."""
        ...

    def in_range(self, low: int, high: int) -> Iterator[Record]:
        """Records whose key id lies in the ring interval ``(low, high]``, in ring order
        (a snapshot, like :meth:`records`); O(range): prefer the scans."""
        ...

    def purge(self, now: float, limit: int = PURGE_LIMIT) -> int:
        """Drop up to ``limit`` records (values and tombstones) with ``expires_at <= now``,
        earliest expiry first (ties by key); return how many."""
        ...

    def stats(self) -> StoreStats:
        """Totals over every record held, in O(1)."""
        ...

    def count_range(self, low: int, high: int) -> tuple[int, int]:
        """``(records, bytes)`` with key id in ``(low, high]`` (``low == high``: all)."""
        ...

    def digest(self, low: int, high: int) -> tuple[bytes, int]:
        """The 20-byte XOR of :func:`record_hash` over the records in ``(low, high]``, and
        their count. Every record held counts: values, tombstones, expired ones."""
        ...

    def scan_records(
        self,
        low: int,
        high: int,
        after: Cursor | None = None,
        *,
        limit: int = PAGE_LIMIT,
        budget: int = PAGE_BUDGET,
    ) -> tuple[list[Record], Cursor | None]:
        """A page of the records in ``(low, high]`` in ring order, strictly after ``after``.

        Ring order: by key id clockwise from just after ``low`` (wrapping past zero), ties by
        key. The page stops after ``limit`` records or before the one that would take the sum
        of ``len(key) + len(value) + 64`` over ``budget``, and holds at least one record if
        any remains. The cursor is the last record's position, None once the range is done.
        """
        ...

    def scan_versions(
        self,
        low: int,
        high: int,
        after: Cursor | None = None,
        *,
        limit: int = PAGE_LIMIT,
        budget: int = PAGE_BUDGET,
    ) -> tuple[list[Entry], Cursor | None]:
        """As :meth:`scan_records` without values (each item costs ``len(key) + 64``); no
        value is read."""
        ...

    def outside(
        self, low: int, high: int, limit: int, *, after: Cursor | None = None
    ) -> list[Record]:
        """Up to ``limit`` records whose key id is not in ``(low, high]``, in ring order from
        ``high`` (strictly after ``after`` when given): what a node no longer holds."""
        ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


# --- in memory ---------------------------------------------------------------------------------


def _due(expires_at: float) -> float:
    # NaN never compares, which would corrupt the heap; live() says a NaN expiry is already
    # past, so it sorts first. (The wire rejects NaN; this only keeps the heap sound.)
    return -math.inf if math.isnan(expires_at) else expires_at


class MemoryStore:
    """Dicts and per-bucket sorted lists; for tests, the simulator and nodes without a data dir.

    Ring order lives in one sorted list of ``(key_id, key)`` per non-empty bucket: an insert
    is a bisect into about n/4,096 entries (cheap at a million keys, where one sorted list
    would move megabytes per insert), and a page or an edge bucket touches only its part.
    Expiries sit in a heap with lazy deletion, so a purge with nothing due is O(1).
    """

    __slots__ = ("_data", "_expiry", "_ring", "_tally")

    #: 50,000 records of an 8-byte key and a 2-byte value took 463 bytes each (tracemalloc):
    #: the record, its version, its entries in the dict and the ring, and the bytes objects.
    RECORD_COST = 448

    def __init__(self) -> None:
        self._data: dict[bytes, Record] = {}
        self._ring: dict[int, list[Cursor]] = {}  # bucket -> sorted (key_id, key)
        self._tally = _Tally()
        # (expires_at, key) for every record with an expiry, plus stale entries of records
        # since replaced or removed (skipped when popped; compacted when they pile up).
        self._expiry: list[tuple[float, bytes]] = []

    def get(self, key: bytes) -> Record | None:
        return self._data.get(key)

    def put(self, record: Record) -> bool:
        old = self._data.get(record.key)
        if not newer(record, old):
            return False
        key_id = record.key_id
        bucket = key_id >> _SHIFT
        if old is None:
            insort(self._ring.setdefault(bucket, []), (key_id, record.key))
        else:
            self._tally.sub(bucket, old.size(), record_hash(old), old.is_tombstone)
        self._tally.add(bucket, record.size(), record_hash(record), record.is_tombstone)
        self._data[record.key] = record
        if record.expires_at is not None:
            self._schedule(record)
        return True

    def put_many(self, records: Iterable[Record]) -> int:
        return sum(self.put(r) for r in records)

    def _schedule(self, record: Record) -> None:
        assert record.expires_at is not None
        heappush(self._expiry, (_due(record.expires_at), record.key))
        if len(self._expiry) > 2 * len(self._data) + 64:  # amortised O(1) per put
            self._expiry = [
                (_due(r.expires_at), k) for k, r in self._data.items() if r.expires_at is not None
            ]
            heapify(self._expiry)

    def _drop(self, record: Record) -> None:
        del self._data[record.key]
        key_id = record.key_id
        bucket = key_id >> _SHIFT
        positions = self._ring[bucket]
        del positions[bisect_left(positions, (key_id, record.key))]
        if not positions:
            del self._ring[bucket]
        self._tally.sub(bucket, record.size(), record_hash(record), record.is_tombstone)

    def remove(self, key: bytes) -> None:
        record = self._data.get(key)
        if record is not None:
            self._drop(record)  # its expiry entry goes stale and is skipped later

    def records(self) -> Iterator[Record]:
        return iter(list(self._data.values()))

    def in_range(self, low: int, high: int) -> Iterator[Record]:
        data = self._data
        return iter([data[p[1]] for a, z, _ in _resume(low, high, None) for p in self._walk(a, z)])

    def purge(self, now: float, limit: int = PURGE_LIMIT) -> int:
        heap = self._expiry
        dropped = 0
        while heap and dropped < limit and heap[0][0] <= now:
            due, key = heappop(heap)
            record = self._data.get(key)
            if record is None or record.expires_at is None or _due(record.expires_at) != due:
                # Stale: removed, or replaced by a record with another expiry (or none), which
                # has its own entry. Purging it here would take it out of (expiry, key) order.
                continue
            self._drop(record)
            dropped += 1
        return dropped

    def stats(self) -> StoreStats:
        return self._tally.stats()

    def count_range(self, low: int, high: int) -> tuple[int, int]:
        full, edges = _plan(low, high)
        count, size, _ = self._tally.full(full)
        for a, z in edges:
            for key in self._edge(a, z):
                count += 1
                size += self._data[key].size()
        return count, size

    def digest(self, low: int, high: int) -> tuple[bytes, int]:
        full, edges = _plan(low, high)
        count, _, digest = self._tally.full(full)
        for a, z in edges:
            for key in self._edge(a, z):
                count += 1
                digest ^= record_hash(self._data[key])
        return digest.to_bytes(ids.ID_BYTES, "big"), count

    def _edge(self, a: int, z: int) -> Iterator[bytes]:
        """Keys with key id in ``[a, z]``, all in one bucket: two bisects."""
        positions = self._ring.get(a >> _SHIFT)
        if not positions:
            return iter(())
        i = bisect_left(positions, (a,))
        j = bisect_left(positions, (z + 1,), i)
        return (p[1] for p in positions[i:j])

    def _walk(self, a: int, z: int, after: Cursor | None = None) -> Iterator[Cursor]:
        """Positions with key id in ``[a, z]`` in ring order, strictly after ``after``
        (which, when given, lies in ``[a, z]``). Lazy: a page stops the walk."""
        start = a if after is None else after[0]
        b0, b1 = start >> _SHIFT, z >> _SHIFT
        ring = self._ring
        if len(ring) < b1 - b0 + 1:  # sparse store (the simulator's): visit only what exists
            buckets: Iterable[int] = sorted(b for b in ring if b0 <= b <= b1)
        else:
            buckets = range(b0, b1 + 1)
        for b in buckets:
            positions = ring.get(b)
            if not positions:
                continue
            if b != b0:
                i = 0
            elif after is None:
                i = bisect_left(positions, (a,))
            else:
                i = bisect_right(positions, after)
            for n in range(i, len(positions)):
                position = positions[n]
                if position[0] > z:
                    return
                yield position

    def _pages(self, low: int, high: int, after: Cursor | None) -> Iterator[tuple[Cursor, Record]]:
        data = self._data
        for a, z, cursor in _resume(low, high, after):
            for position in self._walk(a, z, cursor):
                yield position, data[position[1]]

    def scan_records(
        self,
        low: int,
        high: int,
        after: Cursor | None = None,
        *,
        limit: int = PAGE_LIMIT,
        budget: int = PAGE_BUDGET,
    ) -> tuple[list[Record], Cursor | None]:
        _max_items(limit, budget)  # validates limit
        rows = ((p, r.size() + ITEM_OVERHEAD, r) for p, r in self._pages(low, high, after))
        return _take(rows, limit, budget)

    def scan_versions(
        self,
        low: int,
        high: int,
        after: Cursor | None = None,
        *,
        limit: int = PAGE_LIMIT,
        budget: int = PAGE_BUDGET,
    ) -> tuple[list[Entry], Cursor | None]:
        _max_items(limit, budget)
        rows = (
            (
                p,
                len(r.key) + ITEM_OVERHEAD,
                Entry(r.key, r.version, r.expires_at, r.is_tombstone, r.size()),
            )
            for p, r in self._pages(low, high, after)
        )
        return _take(rows, limit, budget)

    def outside(
        self, low: int, high: int, limit: int, *, after: Cursor | None = None
    ) -> list[Record]:
        if (low - high) & ids.MASK == 0 or limit < 1:
            return []  # (low, low] is the whole ring: nothing is outside
        # The complement of (low, high] is (high, low].
        return [r for _, r in islice(self._pages(high, low, after), limit)]

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        pass


# --- on disk -----------------------------------------------------------------------------------

_SCHEMA_VERSION = 3  # PRAGMA user_version; 0 is the first layout (one table, see _migrate)

# Two tables, so that nothing but get() and the record scans ever reads a value blob. sqlite
# keeps a row's bytes past its first page or so on overflow pages; a query that only needs
# the small columns still walks those pages when a blob sits before them in the row, and even
# "value last" leaves one row per page or so in a table of 60 KB values. So:
#   * ``ring`` holds the metadata, clustered on (key_id, key) (WITHOUT ROWID): ring order is
#     the table's own order, a page or an edge bucket is one range of it, and 20,000 records
#     fit in about a megabyte. It is at once the table and the covering index of every
#     query that needs no value (counts, digests, version scans, outside, purge, rebuild).
#   * ``blobs`` holds the values, by rowid, each with its CRC-32; a tombstone has none (vid
#     NULL). A value read back whose CRC differs was damaged on the disk where SQLite did not
#     notice (bytes overwritten inside a page): its record is dropped, and the replicas give it
#     back (DiskStore._damaged). Values kept before version 3 have no CRC (NULL): not checked.
_DDL = (
    """CREATE TABLE IF NOT EXISTS ring (
        key_id  BLOB NOT NULL,     -- 20 bytes, big-endian: byte order is ring order
        key     BLOB NOT NULL,
        stamp   INTEGER NOT NULL,
        writer  BLOB NOT NULL,
        expires REAL,              -- NULL: never
        size    INTEGER NOT NULL,  -- len(key) + len(value): Record.size() without the value
        vid     INTEGER,           -- the value in blobs; NULL: a tombstone
        PRIMARY KEY (key_id, key)
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS blobs (vid INTEGER PRIMARY KEY, value BLOB NOT NULL, crc INTEGER)",
    # purge: earliest expiry first, ties by key, the same order as MemoryStore's heap
    "CREATE INDEX IF NOT EXISTS ring_by_expires ON ring (expires, key) WHERE expires IS NOT NULL",
)

_META = "key_id, key, stamp, writer, expires, size, vid"
# The statements that must never read a blob nor sort: tests check their query plans.
SQL_META_BY_KEY = "SELECT stamp, writer, size, vid FROM ring WHERE key_id = ? AND key = ?"
SQL_REBUILD = "SELECT key_id, key, stamp, writer, size, vid IS NULL FROM ring"
SQL_EDGE_COUNT = "SELECT count(*), total(size) FROM ring WHERE key_id BETWEEN ? AND ?"
SQL_EDGE_HASHES = "SELECT key, stamp, writer FROM ring WHERE key_id BETWEEN ? AND ?"
SQL_PAGE = f"SELECT {_META} FROM ring WHERE key_id BETWEEN ? AND ? ORDER BY key_id, key LIMIT ?"
SQL_PAGE_AFTER = (
    f"SELECT {_META} FROM ring WHERE (key_id, key) > (?, ?) AND key_id <= ? "
    "ORDER BY key_id, key LIMIT ?"
)
SQL_EXPIRED = (
    f"SELECT {_META} FROM ring WHERE expires IS NOT NULL AND expires <= ? "
    "ORDER BY expires, key LIMIT ?"
)
_SQL_SNAPSHOT = (
    "SELECT r.key, b.value, b.crc, r.stamp, r.writer, r.expires FROM ring AS r "
    "LEFT JOIN blobs AS b ON b.vid = r.vid WHERE r.key_id BETWEEN ? AND ? "
    "ORDER BY r.key_id, r.key"
)

# A row of SQL_PAGE / SQL_EXPIRED.
_Meta = tuple[bytes, bytes, int, bytes, float | None, int, int | None]


def _bucket_of(key_id: bytes) -> int:
    return (key_id[0] << 4) | (key_id[1] >> 4)  # the top 12 bits of the big-endian id


class _Checkpointer:
    """Copies the write-ahead log into the database file, in a thread of its own.

    sqlite's automatic checkpoint runs inside the commit that fills the log, on the event
    loop: at a million records it blocked one put in 400 for ~14 ms (fsyncs and scattered
    page writes), a ping waited 58 ms behind it under load. Here a PASSIVE checkpoint, which
    never blocks the writer, runs at most once a second after writes, on its own connection
    (sqlite releases the GIL while it works).

    Writes that never pause leave a PASSIVE checkpoint always a few frames behind, and the log
    restarts only after one that caught up: it only grew (small stores from 8 sockets: 103-113
    MB, an attack on real nodes; a write of a few bytes adds about 3 pages). So once the log
    passes TRUNCATE_PAST bytes (the writer looks every CHECK_EVERY writes, and wakes us), a
    TRUNCATE checkpoint follows the PASSIVE one. It holds the writer back while it runs (and
    syncs): 4 s of writes as fast as one thread makes them grew the log to 487-566 MB before,
    37 MB now, and the slowest write took 124 ms instead of 16-22."""

    EVERY = 1.0  # seconds between checkpoints, at most
    TRUNCATE_PAST = 32 << 20  # bytes of log past which it is cut back
    CHECK_EVERY = 256  # writes between looks at the log's size

    def __init__(self, path: Path) -> None:
        self._wal = path.with_name(path.name + "-wal")
        self._writes = 0
        self._dirty = threading.Event()
        self._wake = threading.Event()  # the log is past TRUNCATE_PAST, or we close
        self._closing = threading.Event()
        # Opened here, not in the thread, and used once: SQLite opens the files (the log too)
        # by their names at a connection's first statement. Opened in the thread, a store
        # moved or deleted just after it opened left the thread nothing to open (an
        # exception in it), and a log that only grew (a reviewer's trial: 20 MB after 2,000
        # writes, the database file never written). The thread alone uses it after this.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self._frame = 24 + int(self._db.execute("PRAGMA page_size").fetchone()[0])
            self._thread = threading.Thread(target=self._run, name="udpdht-checkpoint", daemon=True)
            self._thread.start()
        except BaseException:
            self._db.close()
            raise

    def wrote(self) -> None:
        self._dirty.set()
        self._writes += 1
        if self._writes % self.CHECK_EVERY == 0 and self._log_size() > self.TRUNCATE_PAST:
            self._wake.set()

    def _log_size(self) -> int:
        try:
            return self._wal.stat().st_size
        except OSError:
            return 0

    def _run(self) -> None:
        db = self._db
        try:
            while not self._closing.is_set():
                self._dirty.wait()
                self._dirty.clear()
                if self._closing.is_set():
                    break
                with contextlib.suppress(sqlite3.Error):  # busy or the like: the next one
                    # (The log's size from SQLite, in frames: its path may have moved.)
                    _, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames * self._frame > self.TRUNCATE_PAST:
                        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                self._wake.wait(self.EVERY)
                self._wake.clear()
        finally:
            db.close()

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        self._dirty.set()
        self._thread.join(timeout=30)


def _full(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed because the disk under it is full."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL


class DiskStore:
    """sqlite3 (stdlib) in WAL mode: every committed write survives the process being killed.

    The counters and bucket digests live in memory, rebuilt at open in one pass over ``ring``
    (no value read) and kept by every write. The node owns its file, so normally this
    connection is the only writer; should another one write anyway (a second DiskStore on the
    same directory), ``PRAGMA data_version`` tells, and the next write or count recounts.
    """

    FILENAME = STORE_FILE
    #: 50,000 records of an 8-byte key and a 2-byte value took 86 bytes each in the file: the
    #: row (its version included) and its index entries.
    RECORD_COST = 80

    def __init__(self, directory: str | Path) -> None:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)  # (as DataDir.open)
        self.path = path / self.FILENAME
        wal = self.path.with_name(self.path.name + "-wal")
        if self.path.is_file() and self.path.stat().st_size == 0 and not wal.exists():
            # SQLite opens an empty file as an empty store, and makes none itself (it writes
            # its header at once): a file cut to 0 bytes lost every record without a word
            # (a helper's trial).
            log.warning("%s is empty: this node starts with no records", self.path)
        try:
            self._db = self._connect()
        except sqlite3.Error as exc:  # (a full disk is no damaged file: StoreFull, as writes)
            if _full(exc):
                raise StoreFull(f"the disk under {self.path.parent} has no room") from None
            raise
        self._tally = _Tally()
        self._data_version = -1
        try:
            # Our own descriptor of the store's file (after _connect: it exists now), to
            # tell whether the file still has a name (_still_ours).
            self._watch = os.open(self.path, os.O_RDONLY)
        except BaseException:
            self._db.close()
            raise
        try:
            self._migrate()
            self._rebuild()
            self._checkpointer = _Checkpointer(self.path)
        except BaseException:
            os.close(self._watch)
            self._db.close()
            raise

    #: Seconds between looks at whether the store's file was deleted (_still_ours).
    LOOK_EVERY = 1.0
    _looked_at = float("-inf")  # (time.monotonic())
    _deleted = False  # the store's file has no name left: writes to it are refused
    _deleted_logged_at = float("-inf")

    def file_deleted(self) -> bool:
        """Whether the store's file was deleted: it has no name left on the disk (moved
        elsewhere, it has one)."""
        try:
            return os.fstat(self._watch).st_nlink == 0
        except OSError:
            return False  # (closed, or unreadable for a moment: not evidence that it is gone)

    def _still_ours(self) -> None:
        """StoreFull when the store's file was deleted (no name left on the disk), looked at
        once a LOOK_EVERY at most. SQLite goes on writing to the file it opened, deleted or
        not: a node whose data dir was removed under it acknowledged every write, and lost them
        all when it stopped (a helper's trial). Refused, they stay on the other replicas, which
        name this node in their shortfalls; what it holds is still read, and handed off by a
        leave. A file moved elsewhere keeps its writes (Node._check_data_dir says where)."""
        now = time.monotonic()
        if now - self._looked_at >= self.LOOK_EVERY:
            self._looked_at = now
            deleted = self.file_deleted()
            if self._deleted and not deleted:
                log.info("the store's file %s has a name again: writes go on", self.path)
            self._deleted = deleted
        if not self._deleted:
            return
        if now - self._deleted_logged_at >= 60.0:
            self._deleted_logged_at = now
            # (What the node does about it, it says itself: Node._leave_without_store.)
            log.error(
                "writes to the store are refused: its file %s was deleted, and what is written "
                "to it now would be lost when this node stops",
                self.path,
            )
        raise StoreFull(f"its store's file {self.path} was deleted")

    _disk_full_logged_at = float("-inf")  # (time.monotonic(): see _disk_full)
    _disk_was_full = False  # a write failed on a full disk, and none has gone through since
    damaged = 0  #: values read back damaged (their records dropped: see _damaged)

    def _disk_full(self) -> None:
        """A write failed: the disk is full. Logged once a minute at most. Before, the
        sqlite3 error reached clients as 'OperationalError: database or disk is full', a
        replica's refusal read as 'no answer', each repair push logged a traceback, and status
        said nothing (an operator's trial on a 2 MB tmpfs)."""
        now = time.monotonic()
        if now - self._disk_full_logged_at >= 60.0:
            # (Set only with the warning: a disk at the edge, large writes failing and small
            # ones passing, drew a "room again" line for each flip; a review.)
            self._disk_was_full = True
            self._disk_full_logged_at = now
            log.warning(
                "the disk under %s is full: writes to the store are refused until it has room",
                self.path.parent,
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives the process dying (not a power cut) and costs
        # no fsync; the node's writes stay in the microseconds.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")  # see _Checkpointer
        # Once checkpointed, the log starts over; past 4 MiB it is cut back, or a burst of
        # writes (a join's hand-off) leaves a log as large as itself on disk for good.
        db.execute("PRAGMA journal_size_limit=4194304")
        return db

    @contextmanager
    def _transaction(self, *, counted: bool = True) -> Iterator[None]:
        # Several statements make one write (metadata and value): all of them or none.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if counted:
                # Under the write lock, so the tally is exact for the deltas this write adds.
                self._counted()
            yield
            self._db.execute("COMMIT")
            if self._disk_was_full:  # (the warning said "until it has room": say when)
                self._disk_was_full = False
                log.info("the disk under %s has room again: writes go on", self.path.parent)
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):  # (no transaction left to undo)
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error) and _full(exc):
                self._disk_full()
                raise StoreFull(f"the disk under {self.path.parent} has no room") from None
            raise
        if counted:
            self._checkpointer.wrote()

    def _migrate(self) -> None:
        """Create the tables, or move a first-layout file into them (once, in one transaction).

        The first layout was one table ``records (key PRIMARY KEY, key_id, value, stamp,
        writer, expires)``: its values are copied to ``blobs`` (keeping their rowids as vids)
        and its metadata to ``ring``. This reads every value once, and the freed pages stay in
        the file for reuse; a crash midway leaves the old layout, migrated at the next open.
        """
        with self._transaction(counted=False):  # no tally yet
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == _SCHEMA_VERSION:
                return
            if version > _SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: store format {version} is newer than this code")
            for ddl in _DDL:
                self._db.execute(ddl)
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(blobs)")]
            if "crc" not in columns:  # (version 2: values kept since are checked)
                self._db.execute("ALTER TABLE blobs ADD COLUMN crc INTEGER")
            old = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'"
            ).fetchone()
            if old is not None:
                self._db.execute(
                    "INSERT INTO blobs (vid, value) "
                    "SELECT rowid, value FROM records WHERE value IS NOT NULL"
                )
                self._db.execute(
                    "INSERT INTO ring (key_id, key, stamp, writer, expires, size, vid) "
                    "SELECT key_id, key, stamp, writer, expires, "
                    "length(key) + coalesce(length(value), 0), "
                    "CASE WHEN value IS NULL THEN NULL ELSE rowid END FROM records"
                )
                self._db.execute("DROP TABLE records")  # and its index
            self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _rebuild(self) -> None:
        """Recount every bucket: one pass over ``ring``, values untouched.

        About 2 µs a record (a quarter reading rows, half hashing): 1M records take ~2 s.
        The loop is :meth:`_Tally.add` and :func:`_hash` inlined, which saves a tenth.
        """
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        counts = [0] * BUCKETS
        sizes = [0] * BUCKETS
        digests = [0] * BUCKETS
        tombstones = 0
        sha1, from_bytes = hashlib.sha1, int.from_bytes
        for key_id, key, stamp, writer, size, tombstone in self._db.execute(SQL_REBUILD):
            b = (key_id[0] << 4) | (key_id[1] >> 4)
            counts[b] += 1
            sizes[b] += size
            tombstones += tombstone
            data = (len(key) & _U16).to_bytes(2, "big") + key
            data += (stamp & _U64).to_bytes(8, "big") + writer
            digests[b] ^= from_bytes(sha1(data).digest(), "big")
        tally = _Tally()
        for b, count in enumerate(counts):
            if count:
                tally.buckets[b] = [count, sizes[b], digests[b]]
                tally.digest ^= digests[b]
        tally.count = sum(counts)
        tally.bytes = sum(sizes)
        tally.tombstones = tombstones
        self._tally = tally

    def _counted(self) -> _Tally:
        """The tally, rebuilt first if another connection has written since we last looked."""
        if self._db.execute("PRAGMA data_version").fetchone()[0] != self._data_version:
            self._rebuild()
        return self._tally

    # -- records ---------------------------------------------------------------------------

    def get(self, key: bytes) -> Record | None:
        row = self._db.execute(
            "SELECT b.value, b.crc, r.stamp, r.writer, r.expires FROM ring AS r "
            "LEFT JOIN blobs AS b ON b.vid = r.vid WHERE r.key_id = ? AND r.key = ?",
            (ids.to_bytes(ids.hash_key(key)), key),
        ).fetchone()
        if row is None:
            return None
        value, crc, stamp, writer, expires = row
        if crc is not None and crc32(value) != crc:
            self._damaged(key)
            return None
        return Record(key, value, Version(stamp, writer), expires)

    def _damaged(self, key: bytes, *, drop: bool = True) -> None:
        """The value of ``key`` read back is not the one written (its CRC differs): bytes
        damaged on the disk. Its record is dropped (``drop``), so that the ring gives it back:
        a read of it asks the other holders, and repair finds the record missing here. (It
        was served as it was, and repair, which compares versions, never mended it: a
        helper's trial, 4 of 5 damaged values read back wrong.)"""
        self.damaged += 1
        log.error(
            "the value of %r in %s was damaged on the disk (its checksum differs)%s",
            key[:60],
            self.path,
            ": dropped, the replicas give it back" if drop else "",
        )
        if drop:
            self.remove(key)

    def _apply(self, record: Record, key_id: bytes | None = None) -> Callable[[], None] | None:
        """Write ``record`` if newer, inside an open transaction; return the tally update to
        run once it commits (None: not newer, nothing written)."""
        db = self._db
        key = record.key
        if key_id is None:
            key_id = ids.to_bytes(record.key_id)
        old = db.execute(SQL_META_BY_KEY, (key_id, key)).fetchone()
        v = record.version
        # The rule of newer(), decided on the versions alone so the old value is never read.
        if old is not None and not v > Version(old[0], old[1]):
            return None
        vid: int | None = None if old is None else old[3]
        if record.value is None:
            if vid is not None:
                db.execute("DELETE FROM blobs WHERE vid = ?", (vid,))
                vid = None
        elif vid is not None:
            db.execute(
                "UPDATE blobs SET value = ?, crc = ? WHERE vid = ?",
                (record.value, crc32(record.value), vid),
            )
        else:
            vid = db.execute(
                "INSERT INTO blobs (value, crc) VALUES (?, ?)", (record.value, crc32(record.value))
            ).lastrowid
        size = record.size()
        if old is None:
            db.execute(
                f"INSERT INTO ring ({_META}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key_id, key, v.stamp, v.writer, record.expires_at, size, vid),
            )
        else:
            db.execute(
                "UPDATE ring SET stamp = ?, writer = ?, expires = ?, size = ?, vid = ? "
                "WHERE key_id = ? AND key = ?",
                (v.stamp, v.writer, record.expires_at, size, vid, key_id, key),
            )
        bucket = _bucket_of(key_id)
        tally = self._tally

        def update() -> None:
            if old is not None:
                tally.sub(bucket, old[2], _hash(key, old[0], old[1]), old[3] is None)
            tally.add(bucket, size, record_hash(record), record.is_tombstone)

        return update

    def put(self, record: Record) -> bool:
        # A stale record (anti-entropy and hand-offs send many) is turned away on one read,
        # without taking the write lock; a newer one is checked again under it.
        key_id = ids.to_bytes(record.key_id)
        old = self._db.execute(
            "SELECT stamp, writer FROM ring WHERE key_id = ? AND key = ?", (key_id, record.key)
        ).fetchone()
        if old is not None and not record.version > Version(*old):
            return False
        self._still_ours()
        with self._transaction():
            update = self._apply(record, key_id)
        if update is None:
            return False
        update()
        return True

    def put_many(self, records: Iterable[Record]) -> int:
        updates: list[Callable[[], None]] = []
        batch = iter(records)
        first = next(batch, None)
        if first is None:
            return 0  # (nothing to write: no refusal either)
        self._still_ours()
        with self._transaction():  # one commit for a whole push
            for record in itertools.chain((first,), batch):
                update = self._apply(record)
                if update is not None:
                    updates.append(update)
        # In order: a later record of the batch may replace an earlier one of the same key,
        # and its update subtracts what that one added.
        for update in updates:
            update()
        return len(updates)

    def _delete(self, rows: list[_Meta]) -> None:
        """Delete metadata rows and their values, inside a transaction; the caller
        uncounts them once it commits (:meth:`_uncount`)."""
        self._db.executemany(
            "DELETE FROM blobs WHERE vid = ?", [(r[6],) for r in rows if r[6] is not None]
        )
        self._db.executemany(
            "DELETE FROM ring WHERE key_id = ? AND key = ?", [(r[0], r[1]) for r in rows]
        )

    def _uncount(self, rows: list[_Meta]) -> None:
        sub = self._tally.sub
        for key_id, key, stamp, writer, _, size, vid in rows:
            sub(_bucket_of(key_id), size, _hash(key, stamp, writer), vid is None)

    def remove(self, key: bytes) -> None:
        key_id = ids.to_bytes(ids.hash_key(key))
        with self._transaction():
            rows: list[_Meta] = self._db.execute(
                f"SELECT {_META} FROM ring WHERE key_id = ? AND key = ?", (key_id, key)
            ).fetchall()
            self._delete(rows)
        self._uncount(rows)

    def purge(self, now: float, limit: int = PURGE_LIMIT) -> int:
        with self._transaction():
            rows: list[_Meta] = self._db.execute(SQL_EXPIRED, (now, limit)).fetchall()
            self._delete(rows)
        self._uncount(rows)
        return len(rows)

    def _snapshot(self, segments: list[tuple[int, int]]) -> Iterator[Record]:
        """Records of the segments in ring order, streamed from a second connection inside one
        read transaction: WAL gives it a snapshot as of now, so the caller may change the
        store while iterating, and only one row at a time is in memory (a leave hands over
        gigabytes this way)."""
        db = self._connect()
        try:
            db.execute("BEGIN")
            bounds = [(ids.to_bytes(a), ids.to_bytes(z)) for a, z in segments]
            first = db.execute(_SQL_SNAPSHOT, bounds[0])  # its first step pins the snapshot
        except BaseException:
            db.close()
            raise

        def rows() -> Iterator[Record]:
            try:
                for n, bound in enumerate(bounds):
                    cursor = first if n == 0 else db.execute(_SQL_SNAPSHOT, bound)
                    for key, value, crc, stamp, writer, expires in cursor:
                        if value is not None and crc is not None and crc32(value) != crc:
                            self._damaged(key, drop=False)  # (a reader: dropped at its get)
                            continue
                        yield Record(key, value, Version(stamp, writer), expires)
            finally:
                db.close()

        return rows()

    def records(self) -> Iterator[Record]:
        return self._snapshot([(0, ids.MASK)])

    def in_range(self, low: int, high: int) -> Iterator[Record]:
        return self._snapshot(_segments(low, high))

    # -- counters --------------------------------------------------------------------------

    def stats(self) -> StoreStats:
        return self._counted().stats()

    def count_range(self, low: int, high: int) -> tuple[int, int]:
        full, edges = _plan(low, high)
        count, size, _ = self._counted().full(full)
        for a, z in edges:
            n, s = self._db.execute(SQL_EDGE_COUNT, (ids.to_bytes(a), ids.to_bytes(z))).fetchone()
            count += n
            size += int(s)
        return count, size

    def digest(self, low: int, high: int) -> tuple[bytes, int]:
        full, edges = _plan(low, high)
        count, _, digest = self._counted().full(full)
        for a, z in edges:
            for key, stamp, writer in self._db.execute(
                SQL_EDGE_HASHES, (ids.to_bytes(a), ids.to_bytes(z))
            ):
                count += 1
                digest ^= _hash(key, stamp, writer)
        return digest.to_bytes(ids.ID_BYTES, "big"), count

    # -- pages -----------------------------------------------------------------------------

    def _page_rows(self, low: int, high: int, after: Cursor | None, n: int) -> list[_Meta]:
        """Up to ``n`` metadata rows in ring order after ``after``: one indexed query per
        segment (two when the interval wraps), each ``ORDER BY key_id, key LIMIT``."""
        out: list[_Meta] = []
        for a, z, cursor in _resume(low, high, after):
            if cursor is None:
                args: tuple[object, ...] = (ids.to_bytes(a), ids.to_bytes(z), n - len(out))
                out += self._db.execute(SQL_PAGE, args).fetchall()
            else:
                args = (ids.to_bytes(cursor[0]), cursor[1], ids.to_bytes(z), n - len(out))
                out += self._db.execute(SQL_PAGE_AFTER, args).fetchall()
            if len(out) >= n:
                break
        return out

    def _meta_page(
        self,
        low: int,
        high: int,
        after: Cursor | None,
        limit: int,
        budget: int,
        values: bool,
    ) -> tuple[list[_Meta], Cursor | None]:
        # One row more than can fit: it tells whether anything remains after the page.
        rows = self._page_rows(low, high, after, _max_items(limit, budget) + 1)
        costs = (
            (
                (int.from_bytes(r[0], "big"), r[1]),
                (r[5] if values else len(r[1])) + ITEM_OVERHEAD,
                r,
            )
            for r in rows
        )
        return _take(costs, limit, budget)

    def _with_values(self, rows: list[_Meta]) -> list[Record]:
        """Records for metadata rows: the values of exactly these rows are read."""
        blob = self._db.execute
        out = []
        damaged = []
        for _, key, stamp, writer, expires, _, vid in rows:
            value = None
            if vid is not None:
                value, crc = blob("SELECT value, crc FROM blobs WHERE vid = ?", (vid,)).fetchone()
                if crc is not None and crc32(value) != crc:
                    damaged.append(key)
                    continue
            out.append(Record(key, value, Version(stamp, writer), expires))
        for key in damaged:
            self._damaged(key)
        return out

    def scan_records(
        self,
        low: int,
        high: int,
        after: Cursor | None = None,
        *,
        limit: int = PAGE_LIMIT,
        budget: int = PAGE_BUDGET,
    ) -> tuple[list[Record], Cursor | None]:
        # The page is cut on the metadata (``size`` is key + value bytes), then only the
        # values that made it are read.
        rows, cursor = self._meta_page(low, high, after, limit, budget, True)
        return self._with_values(rows), cursor

    def scan_versions(
        self,
        low: int,
        high: int,
        after: Cursor | None = None,
        *,
        limit: int = PAGE_LIMIT,
        budget: int = PAGE_BUDGET,
    ) -> tuple[list[Entry], Cursor | None]:
        rows, cursor = self._meta_page(low, high, after, limit, budget, False)
        return [
            Entry(key, Version(stamp, writer), expires, vid is None, size)
            for _, key, stamp, writer, expires, size, vid in rows
        ], cursor

    def outside(
        self, low: int, high: int, limit: int, *, after: Cursor | None = None
    ) -> list[Record]:
        if (low - high) & ids.MASK == 0 or limit < 1:
            return []  # (low, low] is the whole ring: nothing is outside
        # The complement of (low, high] is (high, low].
        return self._with_values(self._page_rows(high, low, after, limit))

    def __len__(self) -> int:
        return self._counted().count

    def close(self) -> None:
        self._checkpointer.close()
        if self._watch >= 0:  # (closing twice is harmless)
            os.close(self._watch)
            self._watch = -1
        self._db.close()  # the last connection to close checkpoints what is left
