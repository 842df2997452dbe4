"""Tests of udpdht.storage: versions, newer-wins puts, tombstones, ranges, TTL purge, the wire
form of a record, DiskStore persistence (across close/reopen and across a killed process), the
counters, bucket digests and paged scans, and the migration of a first-layout store file.

Every store test runs on both engines through the ``make_store``/``store`` fixtures; the
hypothesis tests compare each engine with a tiny model (the max version wins; ``(lo, hi]`` is
``ids.in_interval(..., right_open=False)``; ``purge`` drops ``expires_at <= now``, earliest
first; a digest is the XOR of ``record_hash``; a page is cut by the rule of PROTOCOL §10.4).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from udpdht import ids, storage
from udpdht.ids import RING
from udpdht.storage import (
    BUCKETS,
    MAX_KEY,
    MAX_VALUE,
    PURGE_LIMIT,
    Cursor,
    DiskStore,
    Entry,
    MemoryStore,
    Record,
    Store,
    StoreStats,
    Version,
    _Checkpointer,
    newer,
    record_hash,
)

ENGINES = ["memory", "disk"]

# Each hypothesis example builds its own fresh store from the factory fixture, so sharing the
# function-scoped fixture across examples is safe.
FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

StoreFactory = Callable[[], Store]


@pytest.fixture(params=ENGINES)
def make_store(request: Any, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of fresh, empty stores of one engine (each DiskStore in its own directory)."""
    opened: list[Store] = []

    def make() -> Store:
        store: Store
        if request.param == "memory":
            store = MemoryStore()
        else:
            store = DiskStore(tmp_path / f"disk{len(opened)}")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()  # closing twice is harmless for both engines


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    return make_store()


def rec(
    key: bytes,
    value: bytes | None,
    stamp: int,
    writer: bytes = b"w",
    expires_at: float | None = None,
) -> Record:
    return Record(key, value, Version(stamp, writer), expires_at)


def by_key(records: Iterator[Record]) -> dict[bytes, Record]:
    out: dict[bytes, Record] = {}
    for r in records:
        assert r.key not in out, "a store holds one record per key"
        out[r.key] = r
    return out


keys = st.binary(min_size=1, max_size=12)
values = st.one_of(st.none(), st.binary(max_size=16))
versions = st.builds(Version, st.integers(0, 5), st.sampled_from([b"", b"a", b"b", b"\xff"]))
any_id = st.one_of(st.integers(0, RING - 1), st.sampled_from([0, 1, RING // 2, RING - 2, RING - 1]))
expiries = st.one_of(
    st.none(),
    st.sampled_from([0.0, 1.0, 1.5, 2.0, 10.0]),
    st.floats(-1e6, 1e6, allow_nan=False),
)


# -- Version ------------------------------------------------------------------------------------


def test_next_after_without_current_is_wall_clock() -> None:
    assert Version.next_after(None, 1_234, b"me") == Version(1_234, b"me")


def test_next_after_when_wall_clock_is_ahead() -> None:
    assert Version.next_after(Version(100, b"z"), 5_000, b"a") == Version(5_000, b"a")


def test_next_after_with_clock_behind() -> None:
    """Clock skew: our wall clock is behind the stored version; the new one still wins."""
    current = Version(10_000, b"\xff" * 20)
    v = Version.next_after(current, 5_000, b"\x00" * 20)
    assert v == Version(10_001, b"\x00" * 20)
    assert v > current  # even with a smaller writer: the stamp decides first


def test_next_after_with_equal_clock() -> None:
    current = Version(7, b"\xff")
    assert Version.next_after(current, 7, b"\x00") == Version(8, b"\x00")


@given(
    current=st.one_of(st.none(), st.builds(Version, st.integers(-(2**40), 2**40), st.binary())),
    wall_ms=st.integers(-(2**40), 2**40),
    writer=st.binary(),
)
def test_next_after_properties(current: Version | None, wall_ms: int, writer: bytes) -> None:
    v = Version.next_after(current, wall_ms, writer)
    assert v.writer == writer
    assert v.stamp >= wall_ms
    if current is None:
        assert v.stamp == wall_ms
    else:
        assert v > current
        assert v.stamp > current.stamp
        assert v.stamp == max(wall_ms, current.stamp + 1)  # no further than needed


def test_version_ordering() -> None:
    assert Version(1, b"\xff") < Version(2, b"\x00")  # stamp first
    assert Version(1, b"a") < Version(1, b"b")  # writer breaks ties
    assert Version(1, b"a") < Version(1, b"a\x00")
    assert Version(3, b"x") == Version(3, b"x")
    assert not Version(3, b"x") < Version(3, b"x")


@given(a=versions, b=versions)
def test_version_order_is_stamp_then_writer(a: Version, b: Version) -> None:
    assert (a < b) == ((a.stamp, a.writer) < (b.stamp, b.writer))
    assert (a == b) == (a.stamp == b.stamp and a.writer == b.writer)


def test_newer() -> None:
    r = rec(b"k", b"v", 5)
    assert newer(r, None)
    assert newer(rec(b"k", b"v", 6), r)
    assert newer(rec(b"k", b"v", 5, b"x"), r)
    assert not newer(rec(b"k", b"other", 5), r)  # an equal version is not newer
    assert not newer(rec(b"k", b"v", 4, b"zzz"), r)


# -- put / get / remove / records ---------------------------------------------------------------


def test_get_absent_is_none(store: Store) -> None:
    assert store.get(b"nope") is None
    assert len(store) == 0
    assert list(store.records()) == []


def test_put_then_get(store: Store) -> None:
    r = rec(b"k", b"\x01value", 3, b"writer", 99.5)
    assert store.put(r) is True
    assert store.get(b"k") == r
    assert len(store) == 1


def test_empty_value_is_not_a_tombstone(store: Store) -> None:
    r = rec(b"k", b"", 1)
    assert store.put(r)
    got = store.get(b"k")
    assert got == r
    assert got is not None and got.value == b"" and not got.is_tombstone


def test_put_keeps_only_newer(store: Store) -> None:
    assert store.put(rec(b"k", b"v2", 2))
    assert store.put(rec(b"k", b"v1", 1)) is False  # older
    assert store.put(rec(b"k", b"same", 2)) is False  # equal version
    assert store.get(b"k") == rec(b"k", b"v2", 2)
    assert store.put(rec(b"k", b"tie", 2, b"x")) is True  # same stamp, larger writer
    assert store.put(rec(b"k", b"v3", 3, b"")) is True
    assert store.get(b"k") == rec(b"k", b"v3", 3, b"")
    assert len(store) == 1


def test_put_equal_version_keeps_first_value_and_expiry(store: Store) -> None:
    first = rec(b"k", b"first", 9, b"w", 10.0)
    assert store.put(first)
    assert not store.put(rec(b"k", b"second", 9, b"w", None))
    assert store.get(b"k") == first


@FAST
@given(
    data=st.lists(st.tuples(versions, values, expiries), min_size=1, max_size=12),
    perm_seed=st.randoms(use_true_random=False),
)
def test_put_survivor_is_max_version_in_any_order(
    make_store: StoreFactory,
    data: list[tuple[Version, bytes | None, float | None]],
    perm_seed: Any,
) -> None:
    """A stale replica never wins: whatever order the records arrive in, the max stays."""
    records = [Record(b"key", v, ver, exp) for ver, v, exp in data]
    perm_seed.shuffle(records)
    with closing(make_store()) as store:
        best: Record | None = None
        for r in records:
            applied = store.put(r)
            assert applied == (best is None or r.version > best.version)
            if applied:
                best = r
            assert store.get(b"key") == best
        assert best is not None
        assert best.version == max(r.version for r in records)
        # of several records with the max version, the first to arrive stays
        assert best == next(r for r in records if r.version == best.version)
        assert len(store) == 1
        assert list(store.records()) == [best]


@FAST
@given(ops=st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c"]), versions, values), max_size=30))
def test_engines_agree_on_put_sequences(
    tmp_path: Path, ops: list[tuple[bytes, Version, bytes | None]]
) -> None:
    memory = MemoryStore()
    with closing(DiskStore(tmp_path / f"agree{len(list(tmp_path.iterdir()))}")) as disk:
        for key, version, value in ops:
            r = Record(key, value, version, None)
            assert memory.put(r) == disk.put(r)
        assert by_key(memory.records()) == by_key(disk.records())
        assert len(memory) == len(disk)


def test_remove(store: Store) -> None:
    store.put(rec(b"a", b"1", 1))
    store.put(rec(b"b", None, 1, expires_at=5.0))
    store.remove(b"a")
    assert store.get(b"a") is None
    assert len(store) == 1
    store.remove(b"a")  # absent: no error
    store.remove(b"b")  # tombstones go too
    assert store.get(b"b") is None
    assert len(store) == 0
    # after remove, any version is accepted again (hand-off: the key is someone else's)
    assert store.put(rec(b"a", b"old", 0))


def test_records_lists_everything(store: Store) -> None:
    rs = [
        rec(bytes([i]) * (i + 1), bytes([i]) if i % 3 else None, i, b"w", float(i) or None)
        for i in range(20)
    ]
    for r in rs:
        assert store.put(r)
    assert by_key(store.records()) == {r.key: r for r in rs}
    assert len(store) == len(rs)


def test_records_is_a_snapshot(store: Store) -> None:
    """records() may be consumed while the store changes (repair loops do exactly that)."""
    for i in range(5):
        store.put(rec(bytes([65 + i]), b"v", 1))
    seen = []
    for r in store.records():
        store.remove(r.key)
        store.put(rec(r.key + b"!", b"new", 1))
        seen.append(r.key)
    assert sorted(seen) == [b"A", b"B", b"C", b"D", b"E"]


# -- tombstones ---------------------------------------------------------------------------------


def test_tombstone_shadows_older_value(store: Store) -> None:
    assert store.put(rec(b"k", b"v", 1))
    tomb = rec(b"k", None, 2, expires_at=100.0)
    assert store.put(tomb)
    got = store.get(b"k")
    assert got == tomb and got is not None and got.is_tombstone
    # an older replica of the value cannot bring it back
    assert not store.put(rec(b"k", b"v", 1))
    assert not store.put(rec(b"k", b"v", 2))
    assert store.get(b"k") == tomb


def test_tombstone_replaced_by_newer_value(store: Store) -> None:
    assert store.put(rec(b"k", None, 5, expires_at=100.0))
    assert store.put(rec(b"k", b"back", 6))
    got = store.get(b"k")
    assert got is not None and got.value == b"back" and not got.is_tombstone


def test_older_tombstone_does_not_delete(store: Store) -> None:
    assert store.put(rec(b"k", b"v", 5))
    assert not store.put(rec(b"k", None, 4, expires_at=100.0))
    got = store.get(b"k")
    assert got is not None and got.value == b"v"


def test_tombstone_first_then_older_value(store: Store) -> None:
    """A replica that learns of the delete before the write still ends up deleted."""
    assert store.put(rec(b"k", None, 2, expires_at=100.0))
    assert not store.put(rec(b"k", b"v", 1))
    got = store.get(b"k")
    assert got is not None and got.is_tombstone


# -- in_range -----------------------------------------------------------------------------------


def expected_in_range(rs: list[Record], lo: int, hi: int) -> set[bytes]:
    return {r.key for r in rs if ids.in_interval(r.key_id, lo, hi, right_open=False)}


def fill(store: Store, ks: list[bytes]) -> list[Record]:
    rs = [rec(k, k, 1) for k in ks]
    for r in rs:
        store.put(r)
    return rs


@FAST
@given(ks=st.sets(keys, max_size=30), data=st.data())
def test_in_range_matches_in_interval(
    make_store: StoreFactory, ks: set[bytes], data: st.DataObject
) -> None:
    key_ids = [ids.hash_key(k) for k in ks]
    # bounds: arbitrary ids, or exactly a key's id (is lo excluded, hi included?), or ± 1
    bound = any_id
    if key_ids:
        near = st.sampled_from(key_ids).flatmap(
            lambda i: st.sampled_from([i, (i - 1) % RING, (i + 1) % RING])
        )
        bound = st.one_of(any_id, near)
    lo = data.draw(bound, label="lo")
    hi = data.draw(st.one_of(bound, st.just(lo)), label="hi")
    with closing(make_store()) as store:
        rs = fill(store, sorted(ks))
        got = [r.key for r in store.in_range(lo, hi)]
        assert len(got) == len(set(got))
        assert set(got) == expected_in_range(rs, lo, hi)
        for r in store.in_range(lo, hi):
            assert r == store.get(r.key)


KS = [f"key-{i}".encode() for i in range(40)]


@pytest.mark.parametrize("pick", [(3, 17), (17, 3), (5, 5), (0, 39), (39, 0)])
def test_in_range_edges(store: Store, pick: tuple[int, int]) -> None:
    """Bounds at key ids: lo is excluded, hi included; wrapping and lo == hi (whole ring)."""
    rs = fill(store, KS)
    by_id = sorted(rs, key=lambda r: r.key_id)
    lo, hi = by_id[pick[0]].key_id, by_id[pick[1]].key_id
    got = {r.key for r in store.in_range(lo, hi)}
    assert got == expected_in_range(rs, lo, hi)
    i, j = pick
    if i < j:
        assert got == {r.key for r in by_id[i + 1 : j + 1]}
    elif i > j:  # wraps past zero
        assert got == {r.key for r in by_id[i + 1 :] + by_id[: j + 1]}
    else:
        assert got == set(KS)


@pytest.mark.parametrize(
    ("lo", "hi"),
    [(0, 0), (RING - 1, RING - 1), (0, RING - 1), (RING - 1, 0), (RING // 2, RING // 2 - 1)],
)
def test_in_range_extreme_bounds(store: Store, lo: int, hi: int) -> None:
    rs = fill(store, KS)
    assert {r.key for r in store.in_range(lo, hi)} == expected_in_range(rs, lo, hi)


def test_in_range_whole_ring_and_its_complement_split(store: Store) -> None:
    rs = fill(store, KS)
    mid = ids.hash_key(b"somewhere")
    assert {r.key for r in store.in_range(mid, mid)} == set(KS)
    left = {r.key for r in store.in_range(mid, mid ^ (1 << 159))}
    right = {r.key for r in store.in_range(mid ^ (1 << 159), mid)}
    assert left | right == {r.key for r in rs} and not left & right


@FAST
@given(ks=st.sets(keys, max_size=25), lo=any_id, hi=any_id)
def test_in_range_engines_agree(tmp_path: Path, ks: set[bytes], lo: int, hi: int) -> None:
    memory = MemoryStore()
    with closing(DiskStore(tmp_path / f"agree{len(list(tmp_path.iterdir()))}")) as disk:
        fill(memory, sorted(ks))
        fill(disk, sorted(ks))
        for a, b in [(lo, hi), (hi, lo), (lo, lo)]:
            assert by_key(memory.in_range(a, b)) == by_key(disk.in_range(a, b))


# -- purge --------------------------------------------------------------------------------------


def test_purge_boundary(store: Store) -> None:
    store.put(rec(b"past", b"v", 1, expires_at=9.0))
    store.put(rec(b"now", b"v", 1, expires_at=10.0))
    store.put(rec(b"future", b"v", 1, expires_at=10.5))
    store.put(rec(b"never", b"v", 1, expires_at=None))
    store.put(rec(b"tomb-now", None, 1, expires_at=10.0))
    store.put(rec(b"tomb-later", None, 1, expires_at=11.0))
    assert store.purge(10.0) == 3
    assert {r.key for r in store.records()} == {b"future", b"never", b"tomb-later"}
    assert len(store) == 3
    assert store.purge(10.0) == 0
    assert store.purge(1e18) == 2
    assert {r.key for r in store.records()} == {b"never"}
    assert len(store) == 1


@FAST
@given(
    items=st.dictionaries(keys, st.tuples(values, expiries), max_size=20),
    now=st.one_of(st.sampled_from([0.0, 1.0, 1.5, 2.0, 10.0]), st.floats(-1e6, 1e6)),
)
def test_purge_removes_exactly_expired(
    make_store: StoreFactory, items: dict[bytes, tuple[bytes | None, float | None]], now: float
) -> None:
    with closing(make_store()) as store:
        for k, (v, exp) in items.items():
            store.put(rec(k, v, 1, expires_at=exp))
        expired = {k for k, (_, exp) in items.items() if exp is not None and exp <= now}
        assert store.purge(now) == len(expired)
        assert {r.key for r in store.records()} == set(items) - expired
        assert len(store) == len(items) - len(expired)
        for k, (v, exp) in items.items():
            got = store.get(k)
            if k in expired:
                assert got is None
            else:
                assert got == rec(k, v, 1, expires_at=exp)
                assert got is not None and got.live(now)


def test_live() -> None:
    assert rec(b"k", b"v", 1).live(1e300)
    assert rec(b"k", b"v", 1, expires_at=5.0).live(4.999)
    assert not rec(b"k", b"v", 1, expires_at=5.0).live(5.0)


# -- counters, bucket digests, pages: the model ---------------------------------------------------

SHIFT = ids.BITS - storage.BUCKET_BITS
T = TypeVar("T")


def bucket_keys() -> list[bytes]:
    """Keys crowded into a few buckets: the first and last (the ring wraps between them), two
    neighbours and the fullest of a sample, so that intervals cut buckets with several records
    and edge pieces, whole buckets and the wrap all occur. Plus a few keys anywhere."""
    by_bucket: dict[int, list[bytes]] = {}
    for i in range(30_000):
        key = b"p%d" % i
        by_bucket.setdefault(ids.hash_key(key) >> SHIFT, []).append(key)
    fullest = max(by_bucket, key=lambda b: len(by_bucket[b]))
    chosen = [0, 1, BUCKETS - 1, fullest, (fullest + 1) % BUCKETS]
    out = [k for b in chosen for k in by_bucket.get(b, [])[:4]]
    return out + [b"anywhere-%d" % i for i in range(6)]


POOL = bucket_keys()
POOL_IDS = [ids.hash_key(k) for k in POOL]
_edges = [b << SHIFT for b in {i >> SHIFT for i in POOL_IDS}]
bounds = st.one_of(
    any_id,
    st.sampled_from(POOL_IDS).flatmap(lambda i: st.sampled_from([i, (i - 1) % RING, i + 1])),
    st.sampled_from(_edges).flatmap(lambda e: st.sampled_from([e, e - 1, e + 1])),
).map(lambda i: i % RING)
pool_keys = st.sampled_from(POOL)
pool_records = st.builds(
    Record,
    key=pool_keys,
    value=values,
    version=versions,
    expires_at=st.one_of(expiries, st.sampled_from([math.inf, -math.inf])),
)
nows = st.one_of(st.sampled_from([0.0, 1.0, 1.5, 2.0, 10.0, math.inf]), st.floats(-1e6, 1e6))


def ring_order(low: int) -> Callable[[Record], tuple[int, bytes]]:
    """Sort key of ring order from just after ``low``: clockwise distance, then key."""
    return lambda r: ((r.key_id - low - 1) % RING, r.key)


def model_range(model: dict[bytes, Record], lo: int, hi: int) -> list[Record]:
    inside = [r for r in model.values() if ids.in_interval(r.key_id, lo, hi, right_open=False)]
    return sorted(inside, key=ring_order(lo))


def model_digest(rs: list[Record]) -> tuple[bytes, int]:
    x = 0
    for r in rs:
        x ^= record_hash(r)
    return x.to_bytes(20, "big"), len(rs)


def model_stats(model: dict[bytes, Record]) -> StoreStats:
    rs = model.values()
    return StoreStats(len(rs), sum(r.size() for r in rs), sum(r.is_tombstone for r in rs))


def entry(r: Record) -> Entry:
    return Entry(r.key, r.version, r.expires_at, r.is_tombstone, r.size())


def model_pages(
    rows: list[tuple[Cursor, int, T]], limit: int, budget: int
) -> list[tuple[list[T], Cursor | None]]:
    """Every page of a scan, by the rule: stop after ``limit`` items or before the item that
    takes the running cost over ``budget``, one item at least; the cursor is the position of
    the last item, None on the last page."""
    pages: list[tuple[list[T], Cursor | None]] = []
    i = 0
    while True:
        page: list[T] = []
        total = 0
        last: Cursor | None = None
        while i < len(rows):
            position, cost, item = rows[i]
            if page and (len(page) >= limit or total + cost > budget):
                break
            total += cost
            page.append(item)
            last = position
            i += 1
        pages.append((page, last if i < len(rows) else None))
        if i == len(rows):
            return pages


Scan = Callable[..., tuple[list[T], Cursor | None]]


def all_pages(
    scan: Scan[T], lo: int, hi: int, limit: int, budget: int
) -> list[tuple[list[T], Cursor | None]]:
    pages: list[tuple[list[T], Cursor | None]] = []
    after: Cursor | None = None
    for _ in range(10_000):
        page, after = scan(lo, hi, after, limit=limit, budget=budget)
        pages.append((page, after))
        if after is None:
            return pages
    raise AssertionError("a scan did not end")


def check_store_range(
    store: Store,
    model: dict[bytes, Record],
    lo: int,
    hi: int,
    limit: int,
    budget: int,
    after: Cursor,
) -> None:
    """Every range query of ``store`` on ``(lo, hi]`` against the brute-force model."""
    inside = model_range(model, lo, hi)
    assert store.count_range(lo, hi) == (len(inside), sum(r.size() for r in inside))
    assert store.digest(lo, hi) == model_digest(inside)
    positions = [(r.key_id, r.key) for r in inside]
    rows = [(p, r.size() + 64, r) for p, r in zip(positions, inside, strict=True)]
    assert all_pages(store.scan_records, lo, hi, limit, budget) == model_pages(rows, limit, budget)
    vrows = [(p, len(r.key) + 64, entry(r)) for p, r in zip(positions, inside, strict=True)]
    assert all_pages(store.scan_versions, lo, hi, limit, budget) == model_pages(
        vrows, limit, budget
    )
    # resuming after any position, a key's or not, inside the range or not
    rank = ring_order(lo)
    start = ((after[0] - lo - 1) % RING, after[1])
    rest = [entry(r) for r in inside if rank(r) > start]
    assert store.scan_versions(lo, hi, after, limit=10_000, budget=10**9) == (rest, None)
    # what is outside: (hi, lo], in ring order from hi
    out = [] if lo == hi else sorted(
        (r for r in model.values() if r not in inside), key=ring_order(hi)
    )  # fmt: skip
    assert store.outside(lo, hi, limit) == out[:limit]
    out_rest = [r for r in out if ring_order(hi)(r) > ((after[0] - hi - 1) % RING, after[1])]
    assert store.outside(lo, hi, limit, after=after) == out_rest[:limit]


class StoreMachine(RuleBasedStateMachine):
    """Random puts, batches, removes, purges and reopenings on both engines and a model."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="udpdht-store-test-"))
        self.model: dict[bytes, Record] = {}
        self.memory = MemoryStore()
        self.disk = DiskStore(self.directory)

    def teardown(self) -> None:
        self.disk.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def engines(self) -> tuple[Store, Store]:
        return self.memory, self.disk

    def apply(self, r: Record) -> bool:
        if not newer(r, self.model.get(r.key)):
            return False
        self.model[r.key] = r
        return True

    @rule(r=pool_records)
    def put(self, r: Record) -> None:
        applied = self.apply(r)
        for store in self.engines():
            assert store.put(r) == applied

    @rule(rs=st.lists(pool_records, max_size=6))
    def put_many(self, rs: list[Record]) -> None:
        applied = sum(self.apply(r) for r in rs)
        for store in self.engines():
            assert store.put_many(rs) == applied

    @rule(key=pool_keys)
    def remove(self, key: bytes) -> None:
        self.model.pop(key, None)
        for store in self.engines():
            store.remove(key)

    @rule(now=nows, limit=st.one_of(st.integers(1, 4), st.just(PURGE_LIMIT)))
    def purge(self, now: float, limit: int) -> None:
        due = [r for r in self.model.values() if r.expires_at is not None and r.expires_at <= now]
        due = sorted(due, key=lambda r: (r.expires_at, r.key))[:limit]  # earliest first
        for r in due:
            del self.model[r.key]
        for store in self.engines():
            assert store.purge(now, limit) == len(due)

    @rule()
    def reopen(self) -> None:
        """The bucket state rebuilt from the file is the state kept while writing."""
        self.disk.close()
        self.disk = DiskStore(self.directory)

    @rule(
        lo=bounds,
        hi=st.one_of(bounds, st.none()),
        limit=st.integers(1, 4),
        budget=st.integers(0, 300),
        after=st.tuples(bounds, st.one_of(pool_keys, st.just(b""))),
    )
    def ranges(
        self, lo: int, hi: int | None, limit: int, budget: int, after: tuple[int, bytes]
    ) -> None:
        hi = lo if hi is None else hi  # None: the whole ring
        for store in self.engines():
            check_store_range(store, self.model, lo, hi, limit, budget, after)

    @invariant()
    def same_contents(self) -> None:
        for store in self.engines():
            assert store.stats() == model_stats(self.model)
            assert len(store) == len(self.model)
            assert by_key(store.records()) == self.model
            ring = self.model_ring()
            assert store.digest(0, 0) == model_digest(ring)

    def model_ring(self) -> list[Record]:
        return list(self.model.values())


StoreMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_store_machine = StoreMachine.TestCase


# -- counters, bucket digests, pages: direct tests ---------------------------------------------


def test_record_hash_is_sha1_of_the_protocol_bytes() -> None:
    r = rec(b"a", b"value not hashed", 1_700_000_000_000, b"\x86" * 20, 99.0)
    raw = b"\x00\x01a" + (1_700_000_000_000).to_bytes(8, "big") + b"\x86" * 20
    assert record_hash(r) == int.from_bytes(hashlib.sha1(raw).digest(), "big")
    # neither the value nor the expiry counts: equal digests mean equal (key, version) sets
    assert record_hash(r) == record_hash(rec(b"a", None, 1_700_000_000_000, b"\x86" * 20))


def test_empty_store_counters(store: Store) -> None:
    assert store.stats() == StoreStats(0, 0, 0)
    assert store.count_range(0, 0) == (0, 0)
    assert store.digest(5, 5) == (bytes(20), 0)
    assert store.scan_records(0, 0) == ([], None)
    assert store.scan_versions(1, 0) == ([], None)
    assert store.outside(1, 2, 10) == []
    assert store.purge(1e300) == 0


def test_stats_count_tombstones_and_expired(store: Store) -> None:
    store.put(rec(b"value", b"12345", 1))
    store.put(rec(b"tomb", None, 1, expires_at=5.0))
    store.put(rec(b"old", b"x", 1, expires_at=1.0))  # expired, not purged: still held
    assert store.stats() == StoreStats(3, 5 + 5 + 4 + 3 + 1, 1)
    store.put(rec(b"value", None, 2, expires_at=9.0))  # a value becomes a tombstone
    assert store.stats() == StoreStats(3, 5 + 4 + 3 + 1, 2)
    assert store.purge(5.0) == 2
    assert store.stats() == StoreStats(1, 5, 1)
    store.remove(b"value")
    assert store.stats() == StoreStats(0, 0, 0) and len(store) == 0


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_purge_limit_earliest_first(store: Store, limit: int) -> None:
    store.put(rec(b"b", b"v", 1, expires_at=2.0))
    store.put(rec(b"a", b"v", 1, expires_at=2.0))
    store.put(rec(b"c", b"v", 1, expires_at=1.0))
    store.put(rec(b"c", b"v", 2, expires_at=3.0))  # replaced: now due last
    assert store.purge(10.0, limit) == limit
    assert {r.key for r in store.records()} == {b"a", b"b", b"c"} - set([b"a", b"b", b"c"][:limit])


def test_scan_page_budget_and_cursor(store: Store) -> None:
    rs = [rec(b"k%02d" % i, b"v" * 100, 1) for i in range(30)]
    store.put_many(rs)
    ordered = sorted(rs, key=lambda r: (r.key_id, r.key))
    lo = ordered[0].key_id  # so the ring order from lo starts at ordered[1]
    page, cursor = store.scan_records(lo, lo, limit=100, budget=3 * (103 + 64))
    assert page == ordered[1:4]
    assert cursor == (ordered[3].key_id, ordered[3].key)
    page, cursor = store.scan_records(lo, lo, cursor, limit=2, budget=10**6)
    assert page == ordered[4:6]
    entries, cursor = store.scan_versions(lo, lo, cursor, limit=1000, budget=0)
    assert entries == [entry(ordered[6])]  # over any budget, a page still holds one item
    entries, cursor = store.scan_versions(lo, lo, cursor, limit=1000)
    assert entries == [entry(r) for r in ordered[7:] + ordered[:1]]  # wraps, ends at lo itself
    assert cursor is None
    with pytest.raises(ValueError):
        store.scan_versions(lo, lo, limit=0)


@FAST
@given(lo=bounds, hi=bounds)
def test_plan_partitions_the_interval(lo: int, hi: int) -> None:
    """Whole buckets and edge pieces cover (lo, hi] exactly, with at most two edge buckets."""
    full, edges = storage._plan(lo, hi)
    size = sum((b1 - b0 + 1) << SHIFT for b0, b1 in full) + sum(z - a + 1 for a, z in edges)
    assert size == ((hi - lo) % RING or RING)
    assert len({a >> SHIFT for a, _ in edges}) <= 2
    pieces = sorted([(b0 << SHIFT, ((b1 + 1) << SHIFT) - 1) for b0, b1 in full] + edges)
    for (_, z), (a, _) in itertools.pairwise(pieces):
        assert z < a  # disjoint
    for a, z in edges:
        assert a >> SHIFT == z >> SHIFT
        assert ids.in_interval(a, lo, hi, right_open=False)
        assert ids.in_interval(z, lo, hi, right_open=False)


def test_many_records_per_bucket(make_store: StoreFactory) -> None:
    """Thousands of records (several per bucket): digests of random ranges stay exact."""
    rng = __import__("random").Random(3)
    with closing(make_store()) as store:
        rs = [rec(b"many-%d" % i, b"v" * (i % 7), i % 5, b"w", None) for i in range(4000)]
        store.put_many(rs)
        for r in rs[::3]:
            store.remove(r.key)
        model = {r.key: r for r in rs if r.key not in {x.key for x in rs[::3]}}
        for _ in range(10):
            lo, hi = rng.randrange(RING), rng.randrange(RING)
            inside = model_range(model, lo, hi)
            assert store.digest(lo, hi) == model_digest(inside)
            assert store.count_range(lo, hi) == (len(inside), sum(r.size() for r in inside))


def test_empty_memory_stores_are_small() -> None:
    """The simulator makes thousands of stores: no eager 4,096-slot arrays."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stores = [MemoryStore() for _ in range(3000)]
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(stores) == 3000
    assert used < 3000 * 1000, f"{used / 3000:.0f} bytes per empty store"


# -- DiskStore: no blob read where none is needed, old files, other writers ------------------------


@pytest.mark.parametrize(
    "sql",
    [
        storage.SQL_META_BY_KEY,
        storage.SQL_REBUILD,
        storage.SQL_EDGE_COUNT,
        storage.SQL_EDGE_HASHES,
        storage.SQL_PAGE,
        storage.SQL_PAGE_AFTER,
        storage.SQL_EXPIRED,
    ],
)
def test_metadata_queries_use_the_ring_and_never_sort(tmp_path: Path, sql: str) -> None:
    """These run on every digest, page, purge and open: they must read ``ring`` (the clustered
    metadata, no value in it) through its key or the expiry index, and never sort."""
    with closing(DiskStore(tmp_path)) as store:
        params = [b"\x00" * 20] * sql.count("?")
        plan = " | ".join(row[3] for row in store._db.execute("EXPLAIN QUERY PLAN " + sql, params))
    assert "blobs" not in plan and "TEMP B-TREE" not in plan, plan
    if sql != storage.SQL_REBUILD:  # the rebuild reads all of ring, on purpose
        assert plan.startswith("SEARCH ring USING"), plan


OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key      BLOB PRIMARY KEY,
    key_id   BLOB NOT NULL,   -- 20 bytes, big-endian: byte order is ring order
    value    BLOB,            -- NULL: a tombstone
    stamp    INTEGER NOT NULL,
    writer   BLOB NOT NULL,
    expires  REAL             -- NULL: never
);
CREATE INDEX IF NOT EXISTS records_by_id ON records (key_id);
"""


def test_first_layout_file_is_migrated(tmp_path: Path) -> None:
    """A store file written before the ring/blobs layout opens with its records, counters
    and digests, and stays migrated."""
    rs = some_records()
    db = sqlite3.connect(tmp_path / DiskStore.FILENAME)
    db.executescript(OLD_SCHEMA)
    for r in rs:  # as the first DiskStore.put wrote them
        db.execute(
            "INSERT OR REPLACE INTO records (key, key_id, value, stamp, writer, expires) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (r.key, ids.to_bytes(r.key_id), r.value, r.version.stamp, r.version.writer,
             r.expires_at),
        )  # fmt: skip
    db.commit()
    db.close()
    memory = MemoryStore()
    memory.put_many(rs)
    for _ in range(2):  # the second open finds the new layout
        with closing(DiskStore(tmp_path)) as store:
            assert by_key(store.records()) == by_key(memory.records())
            assert store.stats() == memory.stats()
            mid = ids.hash_key(b"middle")
            for lo, hi in [(0, 0), (mid, 0), (0, mid), (mid, mid)]:
                assert store.digest(lo, hi) == memory.digest(lo, hi)
                assert store.scan_records(lo, hi) == memory.scan_records(lo, hi)
            tables = {n for (n,) in store._db.execute("SELECT name FROM sqlite_master")}
            assert "records" not in tables
            newest = rec(b"plain", b"newer", 18, b"")
            assert store.put(newest) == memory.put(newest)  # True, then False


def test_another_writer_is_noticed(tmp_path: Path) -> None:
    """Counters are kept in memory; a write by another connection makes them recount."""
    with closing(DiskStore(tmp_path)) as first, closing(DiskStore(tmp_path)) as second:
        first.put(rec(b"a", b"1", 1))
        second.put(rec(b"b", b"22", 1, expires_at=3.0))
        second.remove(b"a")
        assert first.stats() == StoreStats(1, 3, 0)
        assert len(first) == 1
        assert first.digest(0, 0) == (record_hash(rec(b"b", b"22", 1)).to_bytes(20, "big"), 1)
        assert first.purge(5.0) == 1
        assert second.stats() == StoreStats(0, 0, 0)


def test_put_many_is_one_transaction(tmp_path: Path) -> None:
    """A batch that fails midway (a stamp sqlite cannot hold) leaves nothing behind."""
    with closing(DiskStore(tmp_path)) as store:
        store.put(rec(b"a", b"1", 1))
        before = (store.stats(), store.digest(0, 0))
        with pytest.raises(OverflowError):
            store.put_many([rec(b"a", b"2", 2), rec(b"b", b"x", 1), rec(b"c", b"y", 2**64)])
        assert (store.stats(), store.digest(0, 0)) == before
        assert by_key(store.records()) == {b"a": rec(b"a", b"1", 1)}


def test_records_streams_a_snapshot(tmp_path: Path) -> None:
    """DiskStore.records() reads row by row in a read transaction of its own: what is written
    after the call is not seen, even when it lands ahead of the cursor."""
    with closing(DiskStore(tmp_path)) as store:
        store.put_many(rec(b"r%d" % i, b"v", 1) for i in range(50))
        it = store.records()
        store.put_many(rec(b"late%d" % i, b"v", 1) for i in range(50))
        for i in range(50):
            store.remove(b"r%d" % i)
        assert {r.key for r in it} == {b"r%d" % i for i in range(50)}
        assert len(store) == 50


# -- DiskStore persistence ----------------------------------------------------------------------


def some_records() -> list[Record]:
    return [
        rec(b"plain", b"\x92\x01\x02", 17, b"\x01" * 20, None),
        rec(b"ttl", b"\xa3abc", 1_700_000_000_000, b"\x02" * 20, 1_700_000_123.25),
        rec(b"tomb", None, 5, b"\x03" * 20, 42.5),
        rec(b"empty", b"", 0, b"", None),
        rec(b"\x00\xff" * 512, b"x" * MAX_VALUE, 2**62, b"w", 1e12),
    ]


def test_disk_store_file_and_directory_created(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b" / "c"
    assert not d.exists()
    store = DiskStore(d)
    try:
        assert d.is_dir()
        assert store.path == d / "store.sqlite3"
        assert (d / "store.sqlite3").is_file()
    finally:
        store.close()


def test_disk_store_accepts_str_directory(tmp_path: Path) -> None:
    with closing(DiskStore(str(tmp_path / "s"))) as store:
        store.put(rec(b"k", b"v", 1))
    assert (tmp_path / "s" / "store.sqlite3").is_file()


def test_disk_store_survives_close_and_reopen(tmp_path: Path) -> None:
    rs = some_records()
    with closing(DiskStore(tmp_path)) as store:
        for r in rs:
            assert store.put(r)
    with closing(DiskStore(tmp_path)) as again:
        assert len(again) == len(rs)
        assert by_key(again.records()) == {r.key: r for r in rs}
        for r in rs:
            got = again.get(r.key)
            assert got == r
            assert got is not None
            assert got.value == r.value and got.version == r.version
            assert got.expires_at == r.expires_at
        # versions still guard the reopened store
        assert not again.put(rec(b"plain", b"stale", 16, b"\xff" * 20))
        assert again.put(rec(b"plain", b"fresh", 18, b""))
        # and key ids were persisted: ranges still work
        lo = ids.hash_key(b"plain")
        assert {r.key for r in again.in_range(lo, lo)} == {r.key for r in rs}


def test_disk_store_reopen_after_remove_and_purge(tmp_path: Path) -> None:
    rs = some_records()
    with closing(DiskStore(tmp_path)) as store:
        for r in rs:
            store.put(r)
        store.remove(b"plain")
        assert store.purge(100.0) == 1  # the tombstone expiring at 42.5
    with closing(DiskStore(tmp_path)) as again:
        assert set(by_key(again.records())) == {b"ttl", b"empty", b"\x00\xff" * 512}


def test_disk_store_unclosed_writes_visible_to_second_store(tmp_path: Path) -> None:
    """Each put is committed at once: another connection sees it without a close."""
    first = DiskStore(tmp_path)
    try:
        rs = some_records()
        for r in rs:
            first.put(r)
        first.remove(b"empty")
        with closing(DiskStore(tmp_path)) as second:
            assert by_key(second.records()) == {r.key: r for r in rs if r.key != b"empty"}
            # and the other way round
            second.put(rec(b"from-second", b"v", 1))
            assert first.get(b"from-second") == rec(b"from-second", b"v", 1)
    finally:
        first.close()


def test_disk_store_survives_process_kill(tmp_path: Path) -> None:
    """A child writes and dies with os._exit (no close, no atexit): the writes are there."""
    script = textwrap.dedent(
        """
        import os, sys
        from udpdht.storage import DiskStore, Record, Version
        store = DiskStore(sys.argv[1])
        for i in range(50):
            store.put(Record(b"k%d" % i, b"v%d" % i, Version(i, b"child"), i * 1.5 or None))
        store.put(Record(b"k0", None, Version(100, b"child"), 7.0))
        os._exit(0)
        """
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, env=env, timeout=30)
    with closing(DiskStore(tmp_path)) as store:
        assert len(store) == 50
        assert store.get(b"k0") == Record(b"k0", None, Version(100, b"child"), 7.0)
        for i in range(1, 50):
            assert store.get(b"k%d" % i) == Record(
                b"k%d" % i, b"v%d" % i, Version(i, b"child"), i * 1.5
            )


# -- wire form ----------------------------------------------------------------------------------

wire_records = st.builds(
    Record,
    key=st.binary(min_size=1, max_size=MAX_KEY),
    value=st.one_of(st.none(), st.binary(max_size=300)),
    version=st.builds(Version, st.integers(0, 2**63 - 1), st.binary(max_size=24)),
    expires_at=st.one_of(st.none(), st.floats(allow_nan=False)),
)


@given(r=wire_records)
def test_wire_round_trip(r: Record) -> None:
    assert Record.from_wire(r.to_wire()) == r
    # and through msgpack, as on the network
    packed = msgpack.packb(r.to_wire(), use_bin_type=True)
    assert Record.from_wire(msgpack.unpackb(packed, raw=False)) == r


def test_from_wire_int_expiry_becomes_float() -> None:
    r = Record.from_wire([b"k", b"v", 1, b"w", 5])
    assert r.expires_at == 5.0 and type(r.expires_at) is float


GOOD: list[object] = [b"k", b"v", 1, b"w", 5.0]


def with_item(i: int, x: object) -> list[object]:
    item = list(GOOD)
    item[i] = x
    return item


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(None, id="not-a-list"),
        pytest.param(tuple(GOOD), id="tuple"),
        pytest.param({"key": b"k"}, id="dict"),
        pytest.param([], id="empty"),
        pytest.param(GOOD[:4], id="four-items"),
        pytest.param([*GOOD, None], id="six-items"),
        pytest.param(with_item(0, b""), id="key-empty"),
        pytest.param(with_item(0, b"k" * (MAX_KEY + 1)), id="key-too-long"),
        pytest.param(with_item(0, "k"), id="key-str"),
        pytest.param(with_item(0, None), id="key-none"),
        pytest.param(with_item(1, b"v" * (MAX_VALUE + 1)), id="value-too-long"),
        pytest.param(with_item(1, "v"), id="value-str"),
        pytest.param(with_item(1, 3), id="value-int"),
        pytest.param(with_item(2, "1"), id="stamp-str"),
        pytest.param(with_item(2, 1.0), id="stamp-float"),
        pytest.param(with_item(2, True), id="stamp-bool"),
        pytest.param(with_item(2, None), id="stamp-none"),
        pytest.param(with_item(3, "w"), id="writer-str"),
        pytest.param(with_item(3, None), id="writer-none"),
        pytest.param(with_item(3, 7), id="writer-int"),
        pytest.param(with_item(4, "5"), id="expiry-str"),
        pytest.param(with_item(4, b"5"), id="expiry-bytes"),
        pytest.param(with_item(4, [5]), id="expiry-list"),
    ],
)
def test_from_wire_rejects_malformed(item: object) -> None:
    with pytest.raises(ValueError):
        Record.from_wire(item)


@pytest.mark.parametrize("size", [0, 1, MAX_VALUE - 1, MAX_VALUE])
def test_from_wire_value_size_accepted(size: int) -> None:
    r = Record.from_wire([b"k", b"x" * size, 1, b"w", None])
    assert r.value is not None and len(r.value) == size


def test_from_wire_value_one_byte_too_long() -> None:
    with pytest.raises(ValueError):
        Record.from_wire([b"k", b"x" * (MAX_VALUE + 1), 1, b"w", None])


@pytest.mark.parametrize("size", [1, MAX_KEY])
def test_from_wire_key_size_accepted(size: int) -> None:
    assert Record.from_wire([b"k" * size, None, 1, b"w", None]).key == b"k" * size


def test_from_wire_tombstone() -> None:
    r = Record.from_wire([b"k", None, 3, b"w", None])
    assert r.is_tombstone and r.size() == 1


def test_size_and_key_id() -> None:
    assert rec(b"abc", b"12345", 1).size() == 8
    assert rec(b"abc", None, 1).size() == 3
    assert rec(b"abc", None, 1).key_id == ids.hash_key(b"abc")


def test_max_value_stored_on_both_engines(store: Store) -> None:
    r = Record.from_wire([b"big", b"\xc4" * MAX_VALUE, 1, b"w", None])
    assert store.put(r)
    assert store.get(b"big") == r


# -- regressions: bugs these tests found ---------------------------------------------------------


@pytest.mark.parametrize("stamp", [2**63, 2**64 - 1, -1, -(2**63) - 1])
def test_stamp_outside_sqlite_integer_is_rejected_at_the_wire(stamp: int) -> None:
    """A uint64 stamp made DiskStore.put raise OverflowError where MemoryStore accepted it."""
    with pytest.raises(ValueError):
        Record.from_wire([b"k", b"v", stamp, b"w", None])


@pytest.mark.parametrize("expires", [math.nan, True])
def test_nan_or_bool_expiry_is_rejected_at_the_wire(expires: object) -> None:
    """SQLite stored a NaN expiry as NULL (never expires) while MemoryStore purged it at once."""
    with pytest.raises(ValueError):
        Record.from_wire([b"k", b"v", 1, b"w", expires])


@settings(max_examples=20, deadline=None)
@example(now=0.0)
@given(now=st.floats(-1e6, 1e6))
def test_infinite_expiry(tmp_path_factory: pytest.TempPathFactory, now: float) -> None:
    """inf is a legal wire expiry (never); -inf is always expired. Both engines agree."""
    memory = MemoryStore()
    with closing(DiskStore(tmp_path_factory.mktemp("inf"))) as disk:
        for store in (memory, disk):
            store.put(rec(b"forever", b"v", 1, expires_at=math.inf))
            store.put(rec(b"never-was", b"v", 1, expires_at=-math.inf))
            assert store.purge(now) == 1
            assert store.get(b"forever") == rec(b"forever", b"v", 1, expires_at=math.inf)


def test_the_log_stays_bounded_under_writes_that_never_pause(tmp_path: Path) -> None:
    # An attack on real nodes: kademlia stores of a few bytes from 8 sockets, each write
    # appending pages to the write-ahead log, grew it to 103-113 MB: a PASSIVE checkpoint
    # never catches up with writes that never pause, and the log only restarts after one
    # that did. Past TRUNCATE_PAST bytes the checkpointer cuts it back.
    limit = _Checkpointer.TRUNCATE_PAST
    writes = 22_000  # (enough to pass the limit several times over)
    with closing(DiskStore(tmp_path)) as disk:
        wal = disk.path.with_name(disk.path.name + "-wal")
        largest = 0
        deadline = time.monotonic() + 60  # (about 4 s on an idle host)
        for i in range(writes):
            disk.put(rec(i.to_bytes(8, "big"), b"v", i + 1))
            if i % 50 == 0:
                time.sleep(0.0005)  # (a node's loop does other work between writes)
            if i % 500 == 0:
                largest = max(largest, wal.stat().st_size if wal.exists() else 0)
                assert time.monotonic() < deadline, f"only {i:,} writes in 60 s"
    assert largest < 2 * limit, f"the log reached {largest:,} bytes"


def test_a_full_disk_refuses_writes_as_store_full_and_they_go_on_once_it_has_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator's trial on a 2 MB tmpfs: writes failed as "OperationalError: database or
    # disk is full" in clients, a replica's refusal read as "no answer", each repair push
    # logged a traceback, and status said nothing. (SQLite's max_page_count stands for the
    # disk here: past it, writes fail with SQLITE_FULL, as on a full disk.)
    from udpdht.errors import StoreFull

    with closing(DiskStore(tmp_path)) as disk:
        pages = disk._db.execute("PRAGMA page_count").fetchone()[0]
        disk._db.execute(f"PRAGMA max_page_count = {pages + 8}")
        written = 0
        with pytest.raises(StoreFull, match=r"the disk under .* has no room"):
            for i in range(1000):  # (bounded: 8 pages hold a few records of 2 KB)
                disk.put(rec(b"k%d" % i, b"v" * 2000, 1))
                written += 1
        assert 0 < written < 1000
        assert [r.levelname for r in caplog.records if "is full" in r.getMessage()] == ["WARNING"]
        assert len(disk) == written  # nothing half-written, the count right
        assert all(disk.get(b"k%d" % i) is not None for i in range(written))
        with pytest.raises(StoreFull):
            disk.put_many([rec(b"x%d" % i, b"v" * 2000, 1) for i in range(20)])
        assert len(disk) == written  # all of a batch or none
        disk._db.execute("PRAGMA max_page_count = 1000000")  # room again
        caplog.set_level(logging.INFO)
        assert disk.put(rec(b"after", b"v" * 2000, 1))
        assert len(disk) == written + 1
        # (The warning said "until it has room": the log says when, once; an operator's trial.)
        assert caplog.text.count("has room again: writes go on") == 1
        assert disk.put(rec(b"after2", b"v", 1))
        assert caplog.text.count("has room again") == 1
        # At the edge again within the minute (a large write fails, a small one passes): no
        # warning, so no "room again" either (a review: one line for each flip).
        pages = disk._db.execute("PRAGMA page_count").fetchone()[0]
        disk._db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StoreFull):
            disk.put(rec(b"big", b"v" * 20000, 1))
        disk._db.execute("PRAGMA max_page_count = 1000000")
        assert disk.put(rec(b"small", b"v", 1))
        assert caplog.text.count("has room again") == 1
        assert caplog.text.count("is full") == 1


def test_a_store_whose_file_was_deleted_refuses_writes_and_one_moved_keeps_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A helper's trial: a node whose data dir was removed under it acknowledged every write
    # (SQLite writes on to the file it opened) and lost them all when it stopped.
    from udpdht.errors import StoreFull

    moved = tmp_path / "moved"
    with closing(DiskStore(moved)) as disk:
        disk.LOOK_EVERY = 0.0  # (once a second in a node)
        assert disk.put(rec(b"before", b"v", 1))
        moved.rename(tmp_path / "elsewhere")  # moved, not deleted: its writes are kept
        assert disk.put(rec(b"after the move", b"v", 1))
    with closing(DiskStore(tmp_path / "elsewhere")) as disk:
        assert sorted(r.key for r in disk.records()) == [b"after the move", b"before"]
    data = tmp_path / "data"
    with closing(DiskStore(data)) as disk:
        disk.LOOK_EVERY = 0.0
        assert disk.put(rec(b"kept", b"v", 1))
        shutil.rmtree(data)
        with pytest.raises(StoreFull, match=r"its store's file .* was deleted"):
            disk.put(rec(b"lost", b"v", 1))
        with pytest.raises(StoreFull):
            disk.put_many([rec(b"lost too", b"v", 1)])
        assert disk.put_many([]) == 0  # (nothing to write: no refusal)
        assert disk.get(b"kept") == rec(b"kept", b"v", 1)  # still read (a leave hands it off)
        assert disk.get(b"lost") is None
        said = [r for r in caplog.records if "writes to the store are refused" in r.getMessage()]
        assert [r.levelname for r in said] == ["ERROR"]  # (once a minute at most)


def test_a_store_moved_right_after_it_opened_still_checkpoints_its_log(tmp_path: Path) -> None:
    # A reviewer's trial: the checkpointer's connection opened its files by name at its first
    # statement, in its thread; a store moved before then was never checkpointed again: its
    # log reached 20 MB after 2,000 writes, the database file never written.
    with closing(DiskStore(tmp_path / "here")) as disk:
        (tmp_path / "here").rename(tmp_path / "there")
        moved = tmp_path / "there" / disk.path.name
        start = moved.stat().st_size
        for i in range(2000):
            disk.put(rec(b"k%d" % i, b"v" * 200, 1))
        deadline = time.monotonic() + 15  # (a checkpoint a second, in its thread)
        while moved.stat().st_size < start + 200_000:
            assert time.monotonic() < deadline, "the moved store was never checkpointed"
            time.sleep(0.05)


def test_a_value_damaged_on_the_disk_is_dropped_not_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A helper's trial: bytes overwritten inside a page of a stopped node's store (SQLite's
    # quick_check said ok) were served as the value, through every node once it was the
    # primary, and repair (versions only) never mended them. Each value has its CRC-32 now;
    # one read back different is dropped, and the ring gives it back.
    with closing(DiskStore(tmp_path)) as disk:
        for i in range(5):
            disk.put(rec(b"k%d" % i, b"value %d" % i, 1))
        db = sqlite3.connect(disk.path)  # another connection: the "disk" under the store
        vids = dict(db.execute("SELECT key, vid FROM ring").fetchall())
        for key in (b"k1", b"k3"):
            db.execute("UPDATE blobs SET value = ? WHERE vid = ?", (b"valve 9", vids[key]))
        db.commit()
        db.close()
        assert sorted(r.key for r in disk.records()) == [b"k0", b"k2", b"k4"]  # (skipped)
        assert disk.get(b"k1") is None  # (dropped, as if never held)
        got, _ = disk.scan_records(0, 0)  # (k3 dropped)
        assert sorted(r.key for r in got) == [b"k0", b"k2", b"k4"]
        assert len(disk) == 3 and disk.damaged == 2 + 1 + 1
        assert disk.get(b"k0") == rec(b"k0", b"value 0", 1)
        said = [r for r in caplog.records if "damaged on the disk" in r.getMessage()]
        assert said and all(r.levelname == "ERROR" for r in said)
        assert disk.put(rec(b"k1", b"value 1", 1))  # given back: kept, and checked again
        assert disk.get(b"k1") == rec(b"k1", b"value 1", 1)


def test_a_store_of_format_2_gets_checksums_for_what_it_writes_next(tmp_path: Path) -> None:
    with closing(DiskStore(tmp_path)) as disk:
        disk.put(rec(b"old", b"kept before", 1))
        disk._db.execute("ALTER TABLE blobs DROP COLUMN crc")  # (as a format 2 file)
        disk._db.execute("PRAGMA user_version = 2")
    with closing(DiskStore(tmp_path)) as disk:
        assert disk.get(b"old") == rec(b"old", b"kept before", 1)  # (no CRC: not checked)
        assert disk.put(rec(b"new", b"checked", 1))
        assert disk._db.execute("PRAGMA user_version").fetchone()[0] == 3
        crcs = dict(disk._db.execute("SELECT value, crc FROM blobs").fetchall())
        assert crcs == {b"kept before": None, b"checked": zlib.crc32(b"checked")}


async def test_a_node_whose_disk_is_full_says_so_in_its_answer_and_its_status(
    tmp_path: Path,
) -> None:
    # A new user's trial: a put refused for a full disk named the store's path, not the node,
    # and status said "full: 0 records refused". (max_page_count stands for the disk.)
    from udpdht import Node
    from udpdht.errors import StoreFull

    async with Node("127.0.0.1", 0, data_dir=tmp_path) as node:
        disk = node.replicator.store
        assert isinstance(disk, DiskStore)
        pages = disk._db.execute("PRAGMA page_count").fetchone()[0]
        disk._db.execute(f"PRAGMA max_page_count = {pages + 8}")
        with pytest.raises(StoreFull, match=rf"store full at {node.addr[0]}:\d+: the disk under"):
            for i in range(1000):  # (bounded: 8 pages hold a few values of 2 KB)
                await node.put(f"k{i}", "v" * 2000)
        assert node.replicator.full() and node.replicator.refused_full == 1


async def test_status_names_what_was_lost_as_it_changes(tmp_path: Path) -> None:
    # A helper's review: after the store's file went, then the whole dir, status still named
    # the file alone (and the stop line would have), as the alarm looked only at lost or not.
    from udpdht import Node
    from udpdht.render import status_lines

    data = tmp_path / "data"
    async with Node("127.0.0.1", 0, data_dir=data) as node:

        def lost() -> tuple[object, object, list[str]]:
            node._check_data_dir()  # (what each store round does)
            st = node.status()
            said = [line for line in status_lines(st) if line.startswith("data dir")]
            return st["lost_path"], st["store_file_lost"], said

        assert lost() == (None, False, [])
        (data / "store.sqlite3").unlink()
        path, alone, said = lost()
        assert (path, alone) == (str(data / "store.sqlite3"), True)
        assert said and f"its store's file {data / 'store.sqlite3'} was removed" in said[0]
        data.rename(tmp_path / "away")
        path, alone, said = lost()
        assert (path, alone) == (str(data), False) and node.data_dir_lost
        assert said and f"LOST: {data} was removed or moved" in said[0]
        (tmp_path / "away").rename(data)  # the dir back, its store's file still gone
        assert lost()[:2] == (str(data / "store.sqlite3"), True)


async def test_a_node_started_again_with_a_smaller_quota_is_full_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator's trial: a node restarted with --max-store-bytes below what its store held
    # said "full: false" and nothing in its log until a write was refused, and its text
    # status showed no quota at all.
    from udpdht import Node
    from udpdht.render import status_lines
    from udpdht.replication import StoreConfig

    async with Node("127.0.0.1", 0, data_dir=tmp_path) as node:
        for i in range(5):
            await node.put(f"k{i}", "v" * 500)
    small = StoreConfig(max_store_bytes=1024)
    async with Node("127.0.0.1", 0, data_dir=tmp_path, store_config=small) as node:
        assert "more than its quota of 1,024 (--max-store-bytes)" in caplog.text
        st = node.status()
        assert st["store"]["full"] is True and st["store"]["quota"] == 1024
        store_line = next(line for line in status_lines(st) if line.startswith("store"))
        assert f"quota {st['store']['quota_used']:,} of 1,024 bytes used" in store_line
        assert "full: it holds more than its quota" in store_line  # (not "0 records refused")
    async with Node("127.0.0.1", 0, data_dir=tmp_path) as node:  # no quota: none said
        assert node.status()["store"]["quota"] is None and not node.status()["store"]["full"]
        assert not any("quota" in line for line in status_lines(node.status()))
