"""The replicated key-value store on the ring: writes, reads, hand-off and repair.

Placement: the successor of a key's id is its *primary*; the next r-1 successors hold
*replicas*. So a node holds the keys in ``(pred_r, self]``, where ``pred_r`` is its r-th
predecessor, and is primary for ``(pred_1, self]``.

* **put/delete** go through any node (the coordinator), which looks up the primary and sends it
  the write. The primary stamps a version, stores, and pushes the record to its r-1 successors
  before it answers, so an acknowledged write is on every live replica; the acknowledgement
  says how many copies were made when one did not take it (a store full: its quota). A node
  that is not the primary (routing moved on) answers ``NotResponsible`` naming the holders it
  knows; the coordinator goes to them, else looks up again, confirmed by the owner this time.
* **get** asks the primary, which checks that it is the primary by its own view and says
  whether it has held its range long enough to have every acknowledged write ("settled"). If
  the primary is dead, has nothing, or is new to its range, the replicas are asked too, and the
  newest version two of the answers agree on wins (the newest, when no two agree).
* **join**: the new node fetches from its successor every record outside ``(self, successor]``,
  after telling the successor it is its predecessor, so no write acknowledged meanwhile is lost.
* **leave**: the node pushes everything it holds to its first r successors before it goes.
* **repair**: every sync period each primary compares its range with each of its r-1 successors
  (one digest when they agree; on a mismatch the range is cut in 16 parts, each compared the
  same way, down to parts small enough to swap version lists), pushes what they lack and pulls
  what is newer (PROTOCOL.md section 10.8).
  After a crash, the dead node's successor becomes primary and restores r copies. Records a
  node is no longer responsible for are pushed to their new place, then dropped. Expired values
  and tombstones are purged.

Every record that arrives from elsewhere is checked before it is kept (SECURITY.md): stamps at
most ``max_skew`` ahead of our clock, bounded expiries, keys this node holds (with some slack);
writes count against a per-source budget, and the store against its quota.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Container, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import ids
from .errors import (
    BadRequest,
    Busy,
    DhtError,
    KeyNotFound,
    NotResponsible,
    RateLimited,
    RemoteError,
    RpcTimeout,
    StoreFull,
    Unavailable,
    ValueTooLarge,
)
from .limits import BATCH_BYTES, ITEM_OVERHEAD, MAX_ITEMS, MAX_TTL, check_key
from .lookup import MALFORMED, Lookup, plausible_owner
from .net import Address, format_addr
from .ratelimit import Buckets, source_of
from .routing import Peer, RingView
from .rpc import PROVEN
from .shortfall import Shortfall
from .storage import (
    MAX_KEY,
    MAX_VALUE,
    Cursor,
    EngineError,
    Record,
    Store,
    StoreStats,
    Version,
    split_range,
)
from .text import plural

if TYPE_CHECKING:
    from .node import Node

#: What a delete (its tombstone: key and version) counts against its source's write budget,
#: besides its key.
TOMBSTONE_CHARGE = 64


class _Refusals:
    """The nodes that refused one read or write of a key (NOT_RESPONSIBLE: not its primary by
    their view), and whether the operation's one strict lookup is spent (Replicator._retarget)."""

    __slots__ = ("nodes", "strict_spent")

    def __init__(self) -> None:
        self.nodes: set[int] = set()
        self.strict_spent = False


#: A holder's answer to a read: (its record, whether it is settled), by (its id, whether it
#: was asked as the primary).
_Heard = dict[tuple[int, bool], tuple["Record | None", bool]]


class _GuessMissed(Exception):
    """A read from our view's guess of a key's holders found no settled answer: the ring's own
    routing (a lookup) is asked instead. Never leaves the Replicator. ``heard``: the answers
    the read had, which the read after the lookup takes again for the same holders."""

    def __init__(self, heard: _Heard) -> None:
        super().__init__()
        self.heard = heard


@dataclass(frozen=True)
class Written:
    """What a write did: its version, whether a live value was there before, and ``short``
    when the primary made fewer copies than it wanted (PROTOCOL.md 10.5), None when every
    replica took the write."""

    version: Version
    existed: bool
    short: Shortfall | None = None

    def shortfall_wire(self) -> dict[str, Any]:
        """The shortfall's fields for a client's reply (``put``, ``delete``); none when every
        replica took the write."""
        return self.short.to_wire() if self.short is not None else {}


@dataclass(frozen=True)
class StoreConfig:
    replicas: int = 3  # r: copies of each key, the primary included
    sync_period: float = 5.0  # mean seconds between anti-entropy rounds
    tombstone_ttl: float = 24 * 3600.0  # how long a delete shadows older replicas
    # attempts of a put or delete by a settled coordinator, at least: more follow until it
    # has gone on WRITE_PATIENCE periods (MAX_WRITE_ATTEMPTS in all; PROTOCOL.md 10.5)
    write_attempts: int = 8
    max_skew: float = 60.0  # seconds a record's stamp may be ahead of our clock
    max_ttl: float = MAX_TTL  # the longest TTL a put may ask for
    # The store's quota: key and value bytes, and the engine's Store.RECORD_COST per record
    # (Replicator.quota_used); None: none.
    max_store_bytes: int | None = None
    write_rate: float = 4 << 20  # bytes a second one source may write through this node
    write_burst: float = 16 << 20  # ... and at once

    @property
    def settle_time(self) -> float:
        """How long a node whose join's hand-off failed may lack some of its acknowledged
        writes (repair rounds bring them)."""
        return 2 * self.sync_period


def _arg_key(args: dict[str, Any]) -> bytes:
    key = args.get("key")
    if not isinstance(key, bytes):
        raise BadRequest("argument 'key' must be bytes")
    check_key(key)
    return key


def check_value(value: bytes) -> None:
    if len(value) > MAX_VALUE:
        raise ValueTooLarge(f"value of {len(value):,} encoded bytes exceeds {MAX_VALUE:,}")


def batches(records: Iterable[Record]) -> Iterable[list[Record]]:
    """Group records into batches that each fit one datagram."""
    batch: list[Record] = []
    size = 0
    for record in records:
        rsize = record.size() + ITEM_OVERHEAD
        if batch and size + rsize > BATCH_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += rsize
    if batch:
        yield batch


def _arg_bytes(args: dict[str, Any], name: str, limit: int) -> bytes:
    raw = args.get(name)
    if not isinstance(raw, bytes) or len(raw) > limit:
        raise BadRequest(f"argument {name!r} must be at most {limit} bytes")
    return raw


def _arg_range(args: dict[str, Any]) -> tuple[int, int]:
    lo, hi = args.get("lo"), args.get("hi")
    if not isinstance(lo, bytes) or not isinstance(hi, bytes):
        raise BadRequest("arguments 'lo' and 'hi' must be ids")
    try:
        return ids.from_bytes(lo), ids.from_bytes(hi)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def newest_agreed(answers: Iterable[Record | None]) -> Record | None:
    """The answer to a read that asked several nodes: the newest version that two of them
    hold, or, when no two agree on any, the newest. A node cannot prove a version genuine (a
    record is not signed), so one replica alone, newer than the others, might be a liar that
    stamped a value a moment ago; when the others agree on an older one, theirs wins."""
    records = [r for r in answers if r is not None]
    if len(records) < 3:  # (most reads: one answer, or two; inline, as Counter costs more)
        if len(records) < 2:
            return records[0] if records else None
        first, second = records
        return first if first.version >= second.version else second
    counts = Counter(r.version for r in records)
    agreed = [v for v, n in counts.items() if n >= 2]
    wanted = max(agreed) if agreed else max(counts)
    return next(r for r in records if r.version == wanted)


def _version_items(page: Any, lo: int, hi: int) -> Iterator[tuple[bytes, Version]]:
    """The ``[key, stamp, writer]`` items of a peer's version-only scan page of ``(lo, hi]``,
    each checked (types, sizes, the range asked for: ``bytes(n)`` of a peer's integer would
    allocate n bytes); BadRequest otherwise."""
    if not isinstance(page, list) or len(page) > MAX_ITEMS:
        raise BadRequest(f"a scan page is a list of at most {MAX_ITEMS} items")
    for item in page:
        if not (isinstance(item, list) and len(item) == 3):
            raise BadRequest("a scan item is [key, stamp, writer]")
        key, stamp, writer = item
        if not (
            type(key) is bytes
            and 0 < len(key) <= MAX_KEY
            and type(stamp) is int
            and 0 <= stamp < 1 << 63
            and type(writer) is bytes
            and len(writer) == ids.ID_BYTES
        ):
            raise BadRequest("a scan item has a bad key, stamp or writer")
        if not ids.in_interval(ids.hash_key(key), lo, hi, right_open=False):
            raise BadRequest("a scan item lies outside the range asked for")
        yield key, Version(stamp, writer)


def _cursor(after: bytes | None) -> Cursor | None:
    """A scan resumes after a key: its position on the ring is its id, then the key."""
    return None if after is None else (ids.hash_key(after), after)


class Replicator:
    """The store side of a node: its handlers, its coordinator calls and its repair loop."""

    def __init__(self, node: Node, store: Store, config: StoreConfig) -> None:
        self.node = node
        self.store = store
        self.config = config
        # Records waiting to be pushed to a replica, by its id (see _push_soon).
        self._outbox: dict[int, list[tuple[Record, asyncio.Future[bool]]]] = {}
        self._budgets = Buckets(config.write_rate, config.write_burst)
        self._strays_after: Cursor | None = None  # where the next round's strays start
        #: NOT_RESPONSIBLE answers to our reads and writes: a view (or a lookup) that missed
        #: the key's primary (maintenance.Maintenance.walk_view fills the view after a few).
        self.misdirected = 0
        #: The last join's hand-off: from whom, records, pages, seconds, done, error.
        self.handoff: dict[str, Any] | None = None
        self._repair: dict[str, Any] = {
            "rounds": 0, "last_round_ms": 0.0, "max_round_ms": 0.0, "parts_compared": 0,
            "pushed": 0, "pulled": 0, "moved": 0, "sync_failures": 0, "comparisons_skipped": 0,
            "refused_full": 0,
        }  # fmt: skip
        #: Writes refused RateLimited because their sender's write budget was spent (_charge).
        self.writes_rate_limited = 0
        #: Writes asked ``unless_same`` that found the same value here: nothing written.
        self.writes_unchanged = 0
        #: Records refused or dropped because the store was full (_refuse_for_quota).
        self.refused_full = 0
        # When the last was, when we last said so in the log, and how many came since.
        self._full_at = float("-inf")
        self._full_logged_at = float("-inf")
        self._full_unlogged = 0
        self._full_largest = 0  # bytes of the largest refused, if over the quota (logged)
        # Replicas that refused our records for their quota, by id: when they last did.
        self._peer_full_at: dict[int, float] = {}
        # Writes of this primary being copied to the replicas, by key (see _write_here).
        self._copying: dict[bytes, asyncio.Future[list[bool]]] = {}
        # The replies of the latest writes, by key and the coordinator's write id (see
        # _write_here): an attempt made again finds what the first one did.
        self._writes: OrderedDict[tuple[bytes, bytes], dict[str, Any]] = OrderedDict()
        # When our join's hand-off last failed (see settled): repair brings the rest of our
        # range, and until it has had time to, our "nothing here" does not count.
        self._handoff_failed_at = float("-inf")
        # Our neighbourhood at our last comparison with the successor made while it and our
        # predecessor named us, the neighbourhood we see and since when (see settled), and
        # the tasks of an early comparison and of an early move of strays.
        self._synced: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self._seen: tuple[tuple[tuple[int, ...], tuple[int, ...]] | None, float] = (None, 0.0)
        # _view's last answer and the leafset's two lists it was made from
        self._view_of: tuple[
            list[Peer], list[Peer], tuple[tuple[int, ...], tuple[int, ...]] | None
        ] = ([], [], None)
        # Versions we stamped as primaries while our neighbours agreed on our range, and that
        # agreement (Maintenance.agreement): see fresh.
        self._fresh: dict[bytes, Version] = {}
        self._fresh_under: tuple[int, int, float] | None = None
        self._early: asyncio.Task[None] | None = None
        self._mover: asyncio.Task[None] | None = None
        # Rounds whose comparisons found every copy in sync in an unchanged neighbourhood,
        # one after another; the neighbourhood and our range's digest after the last; rounds
        # since the last that compared (see _compare_due).
        self._quiet_rounds = 0
        self._quiet_state: tuple[object, bytes] | None = None
        self._skipped = 0
        self._in_sync = 0  # comparisons whose first digests were the same (_sync_range)

    #: The methods :meth:`register` serves (the node answers them BUSY until the store opens).
    METHODS = (
        "put", "get", "delete", "store_write", "store_read", "store_push", "store_digest",
        "store_digests", "store_scan",
    )  # fmt: skip

    def register(self) -> None:
        ep = self.node.endpoint
        # (Told whether the source is proven: a leafset neighbour's writes are not charged to
        # a budget, and from a spoofed neighbour address nothing would bound them.)
        ep.register("put", self._rpc_put, told=True)
        # A get coordinates several calls: while one runs, a client's retry must not start
        # another, so its reply is cached like a write's (not marked idempotent).
        ep.register("get", self._rpc_get)
        ep.register("delete", self._rpc_delete, told=True)
        ep.register("store_write", self._rpc_write, told=True)
        ep.register("store_read", self._rpc_read, idempotent=True)
        # (Proven: a push from a leafset neighbour's address is believed further than a
        # stranger's, and a spoofed one, stamped 55 s ahead, undid an acknowledged put on the
        # key's replicas: 315 of 350 gets answered the forgery, an attack on real nodes.)
        ep.register("store_push", self._rpc_push, idempotent=True, proven=True)
        ep.register("store_digest", self._rpc_digest, idempotent=True)
        ep.register("store_digests", self._rpc_digests, idempotent=True)
        ep.register("store_scan", self._rpc_scan, idempotent=True)

    # --- where keys belong ---------------------------------------------------------------------

    @property
    def _me(self) -> bytes:
        return ids.to_bytes(self.node.id)

    def is_primary(self, key_id: int) -> bool:
        pred = self.node.leafset.predecessor
        if pred is None:
            # Alone, or joined a moment ago: primary for everything only when truly alone (a
            # node that lost its ring is not alone: it rejoins, and meanwhile serves nothing).
            return self.node.leafset.successor is None and not self.node.isolated
        return ids.in_interval(key_id, pred.id, self.node.id, right_open=False)

    def track_view(self, now: float | None = None) -> None:
        """Note when our neighbourhood last changed (the node calls this every round). A
        changed neighbourhood may leave us records that are no longer ours: they move on soon
        (_move_strays). A range that grew because nodes before us failed was ours as a
        replica already; settled() asks for a quiet neighbourhood and a comparison with the
        successor before our "nothing here" counts again."""
        if now is None:
            now = self.node.clock()
        view = self._view()
        if view != self._seen[0]:
            if self._seen[0] is not None:
                self._strays_soon()
            self._seen = (view, now)

    def keep_settling(self) -> None:
        """The end of a maintenance round: note our neighbourhood, and when we hold records,
        ask settled(), which starts the comparison with our successor that settling needs
        once the rest holds: reads then find us settled without having had to ask first. A
        node that holds nothing leaves that to the first read (a ring built with no data
        makes no comparisons: 1,000 nodes by joins sent 3-5 % more datagrams with them)."""
        if self.store.stats().count:
            if self.settled():
                self._fresh.clear()  # settled: every record of our range counts (fresh)
        else:
            self.track_view()

    def settled(self) -> bool:
        """Whether our "nothing here" means that a key of our range has no value.

        While the ring settles (nodes joining faster than the rounds), a node's view of its
        range may be wrong, and a write acknowledged by a node that did not know us yet may
        be elsewhere, on that node and its successors. So: we have held our present range
        long enough to have every write acknowledged before (our join's hand-off is done, or
        StoreConfig.settle_time has passed since it failed); our predecessor and our
        successor agree on it (both named us lately: maintenance.agreed), so no neighbour
        takes writes for it; our
        neighbourhood (r predecessors and r successors) has not changed for QUIET periods, so
        the nodes around us know each other and have moved what they took for us; and since
        then we have compared our range with our successor's copy (a repair round, or an
        early one this starts)."""
        now = self.node.clock()  # (once: every read a primary answers)
        self.track_view(now)
        if self.handoff is not None and not self.handoff["done"] and not self.handoff["error"]:
            return False  # our range is on its way to us
        if now - self._handoff_failed_at < self.config.settle_time:
            return False  # it failed lately: repair brings the rest
        if self.node.leafset.predecessor is None:
            return not self.node.member  # a ring of one holds all there is
        if not self.node.maintenance.agreed(now):
            return False
        if now - self._seen[1] < self.QUIET * self.node.config.stabilize_period:
            return False
        if self._synced != self._seen[0]:
            self._sync_soon()
            return False
        return True

    def answers_for(self, record: Record | None) -> bool:
        """Whether our answer for a key of our range counts as a settled holder's: our record
        is one we stamped lately as the primary (fresh), or we are settled. Fresh first: while
        a ring is young most reads end there, without settled's checks, which found us not
        settled before fresh was asked (3 % of a read's CPU at N=100 right after the build).
        Once we are settled, the rounds clear what fresh looks up, and its dict lookup fails
        at once but for keys written since the last round. The answer is the same either
        way; what settled also starts (track_view, an early sync) every round starts too."""
        return (record is not None and self.fresh(record)) or self.settled()

    def fresh(self, record: Record) -> bool:
        """Whether ``record`` is the newest version of its key although we are not settled.

        Settling takes a few quiet rounds after every change near us, and a ring that has just
        formed takes its first writes before then: its gets asked two holders instead of one
        (every get right after 100 servers joined: 7 datagrams a get, bench/ops.py). But a
        write we stamped as the key's primary after our predecessor and our successor both
        named us (Maintenance.agreement) is newer than any acknowledged before we took our
        range, and no other node takes writes for our range while that agreement holds: what
        we stamped is the newest there is, as long as it is still our copy and the agreement
        has not been broken since. (Versions are compared as the ring does: a copy that reached us
        later with a newer stamp replaces ours, and then ours no longer counts.)"""
        if self._fresh.get(record.key) != record.version:
            return False
        if self.node.maintenance.agreement() != self._fresh_under:
            self._fresh.clear()  # broken since: our range may have moved (settled decides)
            return False
        return True

    def _stamped(self, record: Record) -> None:
        """We stamped ``record`` as its key's primary (see fresh)."""
        under = self.node.maintenance.agreement()
        if under is None:
            return
        if under != self._fresh_under:
            self._fresh.clear()
            self._fresh_under = under
        if len(self._fresh) < self.MAX_FRESH or record.key in self._fresh:
            self._fresh[record.key] = record.version

    MAX_FRESH = 4096  # versions noted for fresh (more: reads ask a second holder meanwhile)

    # Stabilize periods a neighbourhood must stay unchanged to be settled. (3 until the ring
    # was whole as joins return, PROTOCOL.md 9.6: of 100 servers joined one after another,
    # 2 were settled 3 s after the last join, 85 at 4 s, and reads meanwhile asked 3 holders
    # each; with 1.5: 26 at 2 s, 77 at 2.5 s, 99 at 3 s. bench/settle.py, star and chain
    # joins of 200: every set and get right in 4 of 4 and 2 of 2 runs.)
    QUIET = 1.5
    READ_PATIENCE = 3  # stabilization periods a get retries while the holders settle

    def quiet_for(self) -> float:
        """Seconds since our neighbourhood last changed."""
        return self.node.clock() - self._seen[1]

    def changed_at(self) -> float:
        """The loop time at which our neighbourhood last changed (-inf: marked synced, as in
        the simulator's ideal ring)."""
        return self._seen[1]

    def _view(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """Our neighbourhood: the ids of our first r predecessors and r successors."""
        ls = self.node.leafset
        preds, succs, view = self._view_of
        # The leafset replaces its lists, never changes them in place: the same two lists,
        # the same view. (Asked on every read a primary answers: see settled.)
        if preds is ls.predecessors and succs is ls.successors:
            return view
        preds, succs = ls.predecessors, ls.successors
        if not preds or not succs:
            view = None
        else:
            r = self.config.replicas
            view = tuple(p.id for p in preds[:r]), tuple(p.id for p in succs[:r])
        self._view_of = (preds, succs, view)
        return view

    def mark_synced(self) -> None:
        """Our range is in sync with our successor's copy, and our neighbourhood has not
        changed for long (the simulator's ideal ring)."""
        self._synced = self._view()
        self._seen = (self._synced, float("-inf"))

    def _sync_soon(self) -> None:
        """Compare our range with the successor's now, not at the next round."""
        if self._early is None or self._early.done():
            self._early = self.node.background(self._sync_with_successor())

    def _strays_soon(self) -> None:
        """Move the records that are no longer ours now, not at the next round."""
        if self._mover is None or self._mover.done():
            self._mover = self.node.background(self._move_strays_quietly())

    async def _move_strays_quietly(self) -> None:
        try:
            await self._move_strays()
        except (DhtError, *MALFORMED) as exc:
            self.node.log.debug("moving strays failed: %s", exc)

    async def _sync_with_successor(self) -> None:
        view, ls = self._view(), self.node.leafset
        pred, succ = ls.predecessor, ls.successor
        if view is None or pred is None or succ is None or not self.node.maintenance.agreed():
            return
        try:
            complete = await self._sync_range(succ, pred.id, self.node.id, limit=self.MAX_PARTS)
        except (DhtError, *MALFORMED) as exc:
            self._repair["sync_failures"] += 1
            self.node.log.debug("sync with %s failed: %s", succ, exc)
            return
        if complete and self._view() == view:
            self._synced = view

    def responsible_low(self) -> int | None:
        """``pred_r``: we hold the keys in ``(pred_r, self]``; None when we hold everything."""
        preds = self.node.leafset.predecessors
        r = self.config.replicas
        return preds[r - 1].id if len(preds) >= r else None

    def holds(self, key_id: int) -> bool:
        """Whether the key is ours to hold (as primary or replica) by our own view; a node that
        lost its ring holds nothing."""
        if self.node.isolated:
            return False
        low = self.responsible_low()
        return low is None or ids.in_interval(key_id, low, self.node.id, right_open=False)

    def _not_responsible(self, key_id: int, what: str) -> NotResponsible:
        """The answer to a read or write of a key that is not ours: it names the nodes that
        hold it by our view, owner first, so the caller can go there at once."""
        try:
            done, nodes = self.node.local_find(key_id)
        except DhtError:
            done, nodes = False, []
        # Only when we know the owner: next hops are no holders (the caller looks up instead).
        # (Naming our best guess instead sent writes, while a ring formed, to nodes that took
        # them as primaries by a view as stale as ours: reads then missed them.)
        wire = [p.to_wire() for p in nodes[: self.config.replicas]] if done else []
        return NotResponsible(f"not {what} of this key by this node's view", data={"nodes": wire})

    def accepts(self, key_id: int, *, slack: bool = True) -> bool:
        """Whether a record pushed to us may be kept: its key lies in ``(pred_{r+1}, self]``,
        the range we hold as a replica and one node more (a node that leaves hands its range
        to its r-th successor, which does not hold it yet; views also differ for a moment
        during churn), or we know too few predecessors to tell. Without ``slack`` (a push from
        outside our leafset): ``(pred_r, self]`` only."""
        if self.node.isolated:
            # It holds no key (PROTOCOL.md 9.10): a stranger's 2,000 records pushed to a node
            # restarted alone were kept, then moved round the ring once it rejoined, 6,644-8,710
            # datagrams in 20 s (the attack's third helper). Its range comes back by repair.
            return False
        preds = self.node.leafset.predecessors
        r = self.config.replicas if slack else self.config.replicas - 1
        if len(preds) <= r:
            return True
        return ids.in_interval(key_id, preds[r].id, self.node.id, right_open=False)

    def next_nodes(self, count: int) -> list[Peer]:
        """The ``count`` nodes after us: the successors, topped up from the predecessors.

        In a ring just formed, a node may know its predecessor before its first stabilize round
        fills its successor list; in a ring smaller than the leafset the two halves hold the
        same nodes. Either way a write or a hand-off must not go to nobody.
        """
        ls = self.node.leafset
        chosen: dict[int, Peer] = {}
        for peer in [*ls.successors, *reversed(ls.predecessors)]:
            if len(chosen) == count:
                break
            chosen.setdefault(peer.id, peer)
        return list(chosen.values())

    def counts(self) -> dict[str, Any]:
        """What the store holds (status ``store``), in O(1) whatever its size: records we are
        primary for and the others, their bytes. Tombstones count too (counting only live
        values would mean reading every record); expired records are purged first (a
        bounded share, as a round does): a key whose time ran out, counted by the nodes
        whose next round had not come while the others had dropped it, read in a ring
        walk as a copy still to make."""
        self.store.purge(self.node.wall_clock(), limit=self.COUNT_PURGE)
        stats = self.store.stats()
        pred = self.node.leafset.predecessor
        if pred is None:
            primary = stats.count if self.is_primary(self.node.id) else 0
        else:
            primary, _ = self.store.count_range(pred.id, self.node.id)
        return {
            "primary": primary,
            "replica": stats.count - primary,
            "replica_of": self._replica_ranges(),
            "bytes": stats.bytes,
            "quota_used": self.quota_used(stats),  # what the quota counts of it
            "quota": self.config.max_store_bytes,  # (None: no quota)
            "tombstones": stats.tombstones,
            "replicas": self.config.replicas,  # copies of each key the ring keeps (r)
            "refused": self.refused_full,
            "full": self.full(),
        }

    COUNT_PURGE = 1000  # expired records purged at most when the counts are asked for
    PURGE_PER_ROUND = 1000  # ... and by a sync round (~0.2 s at most with 60 KB values)
    LEAF_BATCH = 500  # records pushed, or keys read, per call when a part's lists differ

    def _replica_ranges(self) -> list[list[Any]]:
        """``[address, records]`` for each of our r - 1 predecessors that we hold records of
        its range for, nearest first: the copies we keep for it. A ring walk counts, from
        these, the keys of a node that stopped answering (its successors still hold them, as
        copies, until one takes its range over). Bounded work whatever the store's size
        (count_range)."""
        preds = self.node.leafset.predecessors
        out: list[list[Any]] = []
        seen = {self.node.id}
        for i, primary in enumerate(preds[: self.config.replicas - 1]):
            if primary.id in seen:
                break  # (a ring smaller than the leafset: the list comes round)
            seen.add(primary.id)
            # (Past the list's end, or round to us: the range starts after us.)
            before = preds[i + 1].id if i + 1 < len(preds) else self.node.id
            records, _ = self.store.count_range(before, primary.id)
            if records:
                out.append([format_addr(primary.addr), records])
        return out

    FULL_FOR = 60.0  # seconds a store counts as full after it last refused a record
    FULL_LOG_EVERY = 60.0  # seconds between two log lines about a full store, at least

    def full(self) -> bool:
        """Whether the store refused a record for its quota, or its disk had no room for one,
        lately (status ``store.full``: _refuse_for_quota, _disk_refused), or holds more than
        its quota (a node started again with a smaller one said "not full" until its first
        refusal: an operator's trial)."""
        if asyncio.get_running_loop().time() - self._full_at < self.FULL_FOR:
            return True
        quota = self.config.max_store_bytes
        return quota is not None and self.quota_used() > quota

    def _disk_refused(self, count: int) -> None:
        """The disk under the store had no room for ``count`` records: counted as the quota's
        refusals are (status ``store.refused``; the store logs it). A full disk read as
        "0 records refused" in status (a new user's trial)."""
        self.refused_full += count
        self._full_at = asyncio.get_running_loop().time()

    def _refuse_for_quota(self, count: int, size: int = 0) -> None:
        """Count records refused (or dropped) because the store is full, and say so in the log,
        at most once a minute. A replica that refuses leaves keys short of a copy that repair
        cannot make until it has room: its operator must hear of it, but not once a record.
        ``size``: the bytes the first of them needed (one larger than the whole quota is
        named: "39 of 20480 bytes used" alone read as a store with room)."""
        now = asyncio.get_running_loop().time()
        self.refused_full += count
        self._full_unlogged += count
        self._full_at = now
        quota = self.config.max_store_bytes
        if quota is not None and size > quota:
            self._full_largest = max(self._full_largest, size)
        if now - self._full_logged_at < self.FULL_LOG_EVERY:
            return
        since = "" if self._full_logged_at == float("-inf") else " since the last report"
        largest = (
            f" (the largest needs {self._full_largest:,} bytes: more than the whole quota)"
            if self._full_largest
            else ""
        )
        self.node.log.warning(
            "store full (%d of %s bytes used, --max-store-bytes): %s%s%s; the keys "
            "this node holds lack their copy here until it has room",
            self.quota_used(),
            quota,
            # (Offers, not keys: repair and retries offer a refused record again, and a user
            # read "19 records refused" for one key missing.)
            f"{plural(self._full_unlogged, 'record')} refused (a record offered again counts "
            "again)",
            since,
            largest,
        )
        self._full_logged_at = now
        self._full_unlogged = self._full_largest = 0

    # --- checks at the door --------------------------------------------------------------------

    def _records(
        self,
        items: Any,
        *,
        limit: int = MAX_ITEMS,
        keys: Container[bytes] | None = None,
        within: tuple[int, int] | None = None,
    ) -> list[Record]:
        """Records a peer sent, each checked: well formed, and a version and expiry we can keep
        (a stamp from the far future would win over every later write to its key; an expiry
        of +inf would never be purged); in an answer, only of the ``keys`` we asked for, or
        with key ids ``within`` the range ``(lo, hi]`` we asked for (a peer must not slip in
        records of other keys: a read would return them, a pull keep them). Raises
        BadRequest; none is kept if one is bad."""
        if not isinstance(items, list) or len(items) > limit:
            raise BadRequest(f"'records' must be a list of at most {limit}")
        now = self.node.wall_clock()
        cfg = self.config
        latest_stamp = int((now + cfg.max_skew) * 1000)
        out = []
        for item in items:
            try:
                record = Record.from_wire(item)
            except ValueError as exc:
                raise BadRequest(f"bad record: {exc}") from None
            if len(record.version.writer) != ids.ID_BYTES:
                raise BadRequest(f"a record's writer is a {ids.ID_BYTES}-byte node id")
            if record.version.stamp > latest_stamp:
                ahead = record.version.stamp / 1000 - now
                raise BadRequest(f"a record stamped {ahead:.0f} s ahead of this node's clock")
            expires = record.expires_at
            longest = cfg.tombstone_ttl if record.is_tombstone else cfg.max_ttl
            if record.is_tombstone and expires is None:
                raise BadRequest("a tombstone must expire")
            if expires is not None and not (
                math.isfinite(expires) and expires <= now + longest + cfg.max_skew
            ):
                raise BadRequest("a record's expiry is too far ahead")
            if keys is not None and record.key not in keys:
                raise BadRequest("an answer holds a record of a key not asked for")
            if within is not None and not ids.in_interval(record.key_id, *within, right_open=False):
                raise BadRequest("an answer holds a record outside the range asked for")
            out.append(record)
        return out

    def _peer_full(self, peer: Peer) -> None:
        """Note that ``peer`` refused our records for its quota just now."""
        if len(self._peer_full_at) > 64:  # (a few replicas at a time: forget the old ones)
            self._peer_full_at.clear()
        self._peer_full_at[peer.id] = asyncio.get_running_loop().time()

    def charge(self, src: Address, size: int) -> None:
        """Count a write that came another way (kademlia's ``store``, kad/service.py) against
        its sender's budget like a put; RateLimited when it is spent."""
        self._charge(src, size, proven=False)

    def _charge(self, src: Address, size: int, *, proven: bool) -> None:
        """Count a write against its sender's budget (leafset neighbours replicate to us and
        are not counted, when the request carried a token for their address: ``proven``);
        RateLimited when it is spent."""
        if proven and self.node.in_leafset(src):
            return
        now = self.node.clock()
        if not self._budgets.take(source_of(src), now, float(size)):
            self.writes_rate_limited += 1
            rate = self.config.write_rate / (1 << 20)
            raise RateLimited(f"write budget spent ({rate:g} MiB/s per source); slow down")

    def _make_room(self, record: Record, held: Record | None) -> None:
        """StoreFull when replacing ``held`` by ``record`` would take the store over its
        quota."""
        quota = self.config.max_store_bytes
        if quota is None:
            return
        growth = self._growth(record, held)
        used = self.quota_used()
        if growth > 0 and used + growth > quota:
            self._refuse_for_quota(1, growth)
            raise StoreFull(
                f"store full at {format_addr(self.node.addr)}: this write needs {growth:,} "
                f"bytes more, and {max(quota - used, 0):,} of its {quota:,} are free "
                "(--max-store-bytes)"
            )

    def quota_used(self, stats: StoreStats | None = None) -> int:
        """The bytes of the store the quota counts: every record's key and value, and what
        the engine takes for each record besides (Store.RECORD_COST). Counted by key and
        value bytes alone, 3-byte keys with empty values took 150 times the quota in memory
        (a helper's audit). ``stats``: the store's, if the caller has them already."""
        if stats is None:
            stats = self.store.stats()
        return stats.bytes + stats.count * self.store.RECORD_COST

    def _growth(self, record: Record, held: Record | None) -> int:
        """What replacing ``held`` (None: nothing) by ``record`` adds to quota_used."""
        if held is None:
            return record.size() + self.store.RECORD_COST
        return record.size() - held.size()

    def _newer(self, records: Iterable[Record]) -> list[tuple[Record, Record | None]]:
        """The checked records newer than what we hold, each with what it replaces. A record
        we hold stamped beyond the skew bound (kept before these checks existed, or our clock
        went back) can never be superseded fairly: any checked record replaces it."""
        latest = self._latest_stamp()
        out = []
        for record in records:
            held = self.store.get(record.key)
            if held is not None and held.version.stamp > latest:
                self.store.remove(record.key)
                held = None
            if held is None or record.version > held.version:
                out.append((record, held))
        return out

    def _apply_all(self, records: Iterable[Record], *, whole: bool = False) -> int:
        """Keep the records newer than ours, in one transaction. With a quota, keep what fits
        and log the rest (``whole``: all or none, StoreFull when they do not all fit)."""
        fresh = self._newer(records)
        quota = self.config.max_store_bytes
        if quota is not None:
            room = quota - self.quota_used()
            fits: list[tuple[Record, Record | None]] = []
            for record, held in fresh:
                size = self._growth(record, held)
                room -= size
                if room < 0:
                    self._refuse_for_quota(len(fresh) if whole else len(fresh) - len(fits), size)
                    if whole:
                        raise StoreFull(f"store full: no room for these records ({quota} bytes)")
                    break
                fits.append((record, held))
            fresh = fits
        try:
            return self.store.put_many(record for record, _ in fresh)
        except StoreFull:
            self._disk_refused(len(fresh))
            raise

    def _latest_stamp(self) -> int:
        return int((self.node.wall_clock() + self.config.max_skew) * 1000)

    # --- the coordinator: what a client asks any node to do ------------------------------------

    async def put(
        self, key: bytes, value: bytes | None, ttl: float | None, *, unless_same: bool = False
    ) -> Written:
        """Write (``value`` None: delete) through the key's primary.

        Returns the new version, whether a live value existed before, and whether fewer copies
        than wanted were made (Written). ``unless_same``: a primary that already holds this
        very value (same bytes, no expiry) answers with its version and writes nothing, so
        that the same value stored many times at once (a `kademlia` client stores it on up to
        20 nodes, kad/service.py) is one write.
        """
        check_key(key)
        if value is not None:
            check_value(value)
        self._check_ttl(ttl)
        key_id = ids.hash_key(key)
        # One id for every attempt of this write: a primary that gets it again (our call
        # timed out while it copied the record to a replica that is gone) answers what the
        # first attempt found, not "existed: false" for the tombstone that attempt wrote.
        args: dict[str, Any] = {"key": key, "value": value, "ttl": ttl, "wid": os.urandom(8)}
        if unless_same:
            args["unless_same"] = True
        # The first targets are our view's guess (as for reads; a lookup when it has none),
        # not confirmed: a node that is not the primary names the one it believes is
        # (NotResponsible), and the write goes there next. Two regimes. Once our part of the
        # ring is settled, a write no one redirected is looked up again at once, twice, then
        # after RETRY_PAUSE, doubled: a stale guess costs a round trip, not a period. While
        # the ring forms (after joins), every attempt after the second waits SETTLING_PAUSE,
        # doubled up to a period: retried at once, writes landed on nodes that took them as
        # primaries by views about to change, and reads right after 200 joins then missed
        # keys (bench/settle.py reads 300 of 300 back).
        settled = self.settled()
        period = self.node.config.stabilize_period
        attempts = self.config.write_attempts if settled else self.SETTLING_ATTEMPTS
        replicas = self.config.replicas
        targets = (await self._targets(key_id, confirm=False))[:replicas]
        # However many attempts, a write keeps at it for WRITE_PATIENCE periods (at least
        # MIN_WRITE_PATIENCE seconds): a dead primary is replaced only once its successor's
        # failure detector gives up on it, and meanwhile every node refuses the key.
        clock = self.node.clock
        patient_until = clock() + max(self.WRITE_PATIENCE * period, self.MIN_WRITE_PATIENCE)
        refused_by = _Refusals()
        last: Exception | None = None  # how the attempt before ended
        lookups = 0  # lookups made again: after attempts that no node redirected
        paused = 0  # pauses so far (while the ring forms)
        for attempt in range(self.MAX_WRITE_ATTEMPTS):
            if attempt >= attempts and clock() >= patient_until:
                break
            # No pause before a node not asked yet that a refusal led to (named by it, or
            # found by a lookup): the write goes on as fast as the ring answers.
            untried = isinstance(last, NotResponsible) and targets[0].id not in refused_by.nodes
            if not settled and attempt > 1 and not untried:
                await asyncio.sleep(min(self.SETTLING_PAUSE * 2**paused, period))
                paused += 1
            outcome = await self._write_to(targets, key_id, args, refused_by)
            if isinstance(outcome, Written):
                return outcome
            failure, redirect = outcome
            last = failure or last
            if attempt >= attempts - 1 and clock() >= patient_until:
                break
            if redirect:  # where the node that refused says: a plausible owner it named
                targets = redirect
                continue
            lookups += 1  # else a lookup again, confirmed by the owner itself
            if (settled and lookups > 2) or attempt >= attempts - 1:
                await asyncio.sleep(min(self.RETRY_PAUSE * 2 ** max(lookups - 3, 0), period))
            targets = (await self._retarget(key_id, refused_by))[:replicas]
        self.node.log.debug("write of %r given up: %s", key[:60], last)
        if isinstance(last, Busy):
            raise Unavailable(
                "could not write the key: the nodes near it do not agree yet which of them "
                "holds it (the ring is repairing after a change); try again in a few seconds"
            )
        raise Unavailable(
            "could not write the key: the nodes that hold it did not answer; try again in a "
            "few seconds"
        )

    async def _write_to(
        self, targets: list[Peer], key_id: int, args: dict[str, Any], refused_by: _Refusals
    ) -> Written | tuple[Exception | None, list[Peer]]:
        """One attempt of a write (``args``: its store_write arguments): ``targets`` asked in
        turn until one writes it (its Written) or refuses it (the refusal, and the holders it
        named if plausible); after every one failed, the last failure and no one."""
        last: Exception | None = None
        for i, target in enumerate(targets):
            try:
                if target.id == self.node.id:
                    reply = await self._write_here(
                        args["key"],
                        args["value"],
                        args["ttl"],
                        unless_same="unless_same" in args,
                        wid=args["wid"],
                    )
                else:
                    # Few tries when another target follows (a dead primary costs 0.3 s, not 1.7).
                    few = self.node.config.lookup_tries if i < len(targets) - 1 else 0
                    reply = await self.node.call_peer(target, "store_write", args, tries=few)
                return self._written(reply)
            except Busy as exc:  # NotResponsible included
                if isinstance(exc, NotResponsible):
                    refused_by.nodes.add(target.id)
                return exc, self._named(exc, key_id)
            except RemoteError as exc:  # the primary's own answer (a full store): ours,
                # without its method's name (a user read "put: store_write: store full")
                text = exc.message.removeprefix("store_write: ")
                raise type(exc)(text, exc.code, exc.data) from None
            except (RpcTimeout, *MALFORMED) as exc:
                last = exc
                self.node.peer_failed(target, exc)
        return last, []

    @staticmethod
    def _written(reply: dict[str, Any]) -> Written:
        """A primary's ``store_write`` reply as a Written (its shortfall checked: it goes on to
        a client, and to a terminal)."""
        stamp, writer = reply["version"]
        short = Shortfall.from_reply(reply)
        return Written(Version(int(stamp), bytes(writer)), bool(reply["existed"]), short)

    RETRY_PAUSE = 0.05  # seconds before a settled write's third lookup, doubled for each after
    WRITE_PATIENCE = 10  # stabilize periods a write keeps trying (a dead primary's successor
    # takes over once its failure detector gives up: 1.1-9.7 s in tests/test_store_sim.py)
    MIN_WRITE_PATIENCE = 10.0  # seconds, however short the period
    MAX_WRITE_ATTEMPTS = 40  # attempts at most, however patient
    SETTLING_ATTEMPTS = 8  # attempts of a write while the coordinator is not settled
    SETTLING_PAUSE = 0.1  # seconds before its third attempt, doubled for each after (<= period)

    def guess_holders(self, key_id: int, *, beyond: bool = True) -> list[Peer] | None:
        """The key's primary and the nodes after it by our view of the ring (routing.RingView),
        or None when our own leafset names them (a lookup answers from it, with no call) or
        the view is of no use (a lookup). ``beyond``: L/2 nodes past the r holders too (a
        write's next targets when the first fail); a read of a guess asks the r holders only.
        """
        node = self.node
        if node.isolated or len(node.view) < 2:
            return None
        if node.local_owner(key_id) is not None:
            # (Not a key near the leafset's far end, whose holders run past it: the lookup
            # would ask a node for them, one more round trip than the view's guess.)
            return None
        since = self.node.clock() - RingView.TRUSTED_FOR
        r = self.config.replicas
        guess = node.view.holders(key_id, r + node.leafset.half if beyond else r, since)
        return guess if len(guess) >= r else None

    async def _targets(self, key_id: int, *, confirm: bool, guess: bool = True) -> list[Peer]:
        """The key's owner and the nodes after it (its successor list): the first r hold the
        key. Unconfirmed: by our view of the ring when it can tell (no call; ``guess``), else
        a lookup."""
        if not confirm and guess and (holders := self.guess_holders(key_id)) is not None:
            return holders
        found = await self._lookup(key_id, confirm=confirm)
        return [found.owner, *found.successors]

    async def _lookup(self, key_id: int, *, confirm: bool, avoid: Container[int] = ()) -> Lookup:
        """A lookup of the key that asks our view's guess first, as fix_fingers does
        (Maintenance.first_guess): a node near the key names its owner from its own leafset,
        one hop. No guess when our leafset covers the key (the lookup answers from it, with no
        call), nor one in ``avoid`` (nodes that refused this operation)."""
        node = self.node
        via = None if node.leafset.covers(key_id) else node.maintenance.first_guess(key_id)
        if via is not None and via.id in avoid:
            via = None
        return await node.lookup_id(key_id, confirm=confirm, via=via)

    async def _retarget(self, key_id: int, refusals: _Refusals) -> list[Peer]:
        """The targets after a refusal that named no plausible holder (or after every target
        failed): a confirmed lookup's owner and the nodes after it. If that names a node that
        refused this operation, and it has made no strict lookup yet, one is made instead
        (routing.next_hop): while a ring forms, successor lists that still miss nodes that
        joined a moment ago claim to know the owner and, asked again, name the same wrong node
        until the next rounds mend them, while the successor pointers are right sooner. One
        at most: strict lookups walk node by node, and while hundreds of nodes join at once
        their cost adds up (PROTOCOL.md 10.5)."""
        found = await self._lookup(key_id, confirm=True, avoid=refusals.nodes)
        if found.owner.id in refusals.nodes and not refusals.strict_spent:
            refusals.strict_spent = True
            # (If that fails too, as in a ring of two whose nodes have not met yet, the first
            # answer stands: the caller retries as before.)
            with contextlib.suppress(DhtError):
                found = await self.node.lookup_id(key_id, confirm=True, strict=True)
        return [found.owner, *found.successors]

    def _named(self, exc: RemoteError, key_id: int) -> list[Peer]:
        """The nodes a NotResponsible names as the key's holders (owner first), when the claim
        is plausible: checked like a lookup's answer (lookup.plausible_owner) against every
        node we know. Empty otherwise: the caller looks up again. Every NotResponsible is
        counted in ``misdirected`` here, where reads and writes alike take their refusals."""
        if not isinstance(exc, NotResponsible):
            return []
        self.misdirected += 1
        if not isinstance(exc.data, dict):
            return []
        try:
            nodes = self.node.parse_peers(exc.data.get("nodes"))
        except ValueError:
            return []
        if not nodes:
            return []
        known = [self.node.peer, *self.node.leafset.peers(), *self.node.fingers.distinct()]
        if plausible_owner(key_id, nodes[0], nodes[0], known) is not None:
            return []
        nodes = nodes[: self.config.replicas]
        self.node.heard_of(nodes, self.node.clock())  # the next guess is right
        return nodes

    def _named_holders(self, results: list[Any], key_id: int, asked: set[int]) -> list[Peer]:
        """The holders the first of these refusals (``results``: answers to reads) names
        plausibly, if it names a node not in ``asked`` (ids); else empty."""
        for result in results:
            if isinstance(result, NotResponsible):
                named = self._named(result, key_id)
                if any(p.id not in asked for p in named):
                    return named
        return []

    def _check_ttl(self, ttl: float | None) -> None:
        if ttl is None:
            return
        if type(ttl) not in (int, float) or not 0 < ttl <= self.config.max_ttl:  # not NaN
            raise BadRequest(f"ttl must be a number of seconds in (0, {self.config.max_ttl:g}]")

    async def get(self, key: bytes) -> Record:
        """The newest live record of ``key``; KeyNotFound only when a node that holds the key's
        range, and has held it long enough to have every acknowledged write (settled), says it
        has no value; Unavailable when no such node could be asked.

        The primary is asked first (a node that is not names the one it believes is, and that
        one is asked instead). If it fails, has nothing, or is not settled, the other holders
        are asked too, and the newest version two of the answers agree on wins.
        """
        check_key(key)
        clock = self.node.clock
        # Holders that answer but are not settled yet settle within a few rounds (see
        # settled): wait that long before Unavailable.
        # (READ_PATIENCE periods at most: a client waits about 5 s for the answer.)
        deadline = clock() + self.READ_PATIENCE * self.node.config.stabilize_period
        for _ in range(100):  # bounded; the deadline ends it first
            try:
                return await self._get_once(key)
            except Unavailable:
                # An isolated node will not settle by waiting a few rounds: say so at once.
                if self.node.isolated or clock() + self.SETTLE_POLL > deadline:
                    raise
            await asyncio.sleep(self.SETTLE_POLL)
        raise Unavailable("the key's holders did not settle")

    SETTLE_POLL = 0.1  # seconds between reads while a key's holders settle

    async def _get_once(self, key: bytes) -> Record:
        key_id = ids.hash_key(key)
        node = self.node
        # Our leafset names the key's holders (a fifth of the gets in a ring of 100), else our
        # view's guess: the primary is read first, inline (most gets end there: one round trip,
        # or none when it is us). Otherwise the ring's own routing decides.
        local = None if node.isolated else node.local_owner(key_id)
        guessed = None if local is not None else self.guess_holders(key_id, beyond=False)
        first = [local.owner, *local.successors] if local is not None else guessed
        if first is None:
            targets = await self._targets(key_id, confirm=False, guess=False)
            return await self._read_targets(key, key_id, targets, guessed=False)
        made: tuple[Record | None, bool] | Exception
        try:
            made = await self._read(first[0], key, primary=len(first) > 1)
        except Exception as exc:  # (_read_targets deals with it, as with its own read's)
            made = exc
        else:
            # Most gets: the primary is settled and has a live value (inline, as _read_targets
            # would end: a few coroutine frames less a get).
            record, settled = made
            if (
                settled
                and record is not None
                and record.value is not None
                and record.live(node.wall_clock())
            ):
                return record
        if guessed is None:  # (the leafset's holders: no better guess to fall back on)
            return await self._read_targets(key, key_id, first, guessed=False, made=made)
        try:
            # When the guess finds no value (or no settled holder), the ring's own routing
            # decides: while the ring settles a write may sit where a lookup leads, not where
            # our view points.
            return await self._read_targets(key, key_id, guessed, guessed=True, made=made)
        except _GuessMissed as missed:
            # (Their answers stand for the same holders: a get of a key with no value
            # read each holder twice, 12-23 datagrams in all; a helper's audit.)
            targets = await self._targets(key_id, confirm=False, guess=False)
            return await self._read_targets(key, key_id, targets, guessed=False, known=missed.heard)

    async def _read_targets(
        self,
        key: bytes,
        key_id: int,
        targets: list[Peer],
        *,
        guessed: bool,
        made: tuple[Record | None, bool] | Exception | None = None,
        known: _Heard | None = None,
    ) -> Record:
        """One read of ``key`` from its holders among ``targets`` (see get); ``made``: the
        outcome of the read of ``targets[0]`` as the primary, made already (an answer, or the
        exception it raised); ``known``: answers this get had already (_GuessMissed)."""
        heard: _Heard = {}
        refused_by = _Refusals()
        answers, targets, asked = await self._ask_primary(
            key, key_id, targets, made, known, heard, refused_by, guessed=guessed
        )
        if not answers or answers[0][0] is None or not answers[0][1]:
            # A dead primary, one with nothing, or one new to its range that may still lack
            # writes acknowledged before it took over: the other holders are asked too.
            targets = await self._ask_holders(
                key, key_id, targets, asked, answers, known, heard, refused_by
            )
        best = newest_agreed(record for record, _ in answers)
        if best is not None and best.value is not None and best.live(self.node.wall_clock()):
            return best  # a live value (most reads: the primary's, asked alone)
        if guessed:
            raise _GuessMissed(heard)  # no value where our view points: look where a lookup leads
        return await self._conclude(key, key_id, targets, answers, best)

    async def _ask_primary(
        self,
        key: bytes,
        key_id: int,
        targets: list[Peer],
        made: tuple[Record | None, bool] | Exception | None,
        known: _Heard | None,
        heard: _Heard,
        refused_by: _Refusals,
        *,
        guessed: bool,
    ) -> tuple[list[tuple[Record | None, bool]], list[Peer], bool]:
        """Read ``key`` from ``targets[0]`` as its primary, going where a refusal sends us (the
        holders it names, or a confirmed lookup's), three nodes at most: its answer (none if
        it failed), the targets as they stand now, and whether a node was asked as the primary
        and answered or failed (not: three refused). _GuessMissed when ``guessed`` and it
        failed: our view was stale, and the ring's own routing knows better."""
        for _ in range(3):
            try:
                if made is None:
                    # Few tries when the others can answer instead: a dead primary costs little.
                    answer = await self._read_once(targets[0], key, len(targets) > 1, known, heard)
                elif isinstance(made, Exception):
                    failed, made = made, None
                    raise failed
                else:
                    answer, made = made, None
                    heard[targets[0].id, len(targets) > 1] = answer
                return [answer], targets, True
            except NotResponsible as exc:
                refused_by.nodes.add(targets[0].id)
                targets = self._named(exc, key_id) or await self._retarget(key_id, refused_by)
            except (DhtError, *MALFORMED) as exc:  # no answer, an error, or nonsense
                self.node.log.debug("primary %s did not serve a read: %s", targets[0], exc)
                if guessed:
                    raise _GuessMissed(heard) from exc
                return [], targets, True
        return [], targets, False

    async def _ask_holders(
        self,
        key: bytes,
        key_id: int,
        targets: list[Peer],
        asked: bool,
        answers: list[tuple[Record | None, bool]],
        known: _Heard | None,
        heard: _Heard,
        refused_by: _Refusals,
    ) -> list[Peer]:
        """Add the answers of the key's other holders to ``answers`` (all r of ``targets`` when
        no primary was ``asked``: the last one named as the primary, after three redirects, is
        asked as a holder). The targets from here: the holders a refusal named, when no one
        had a record."""
        r = self.config.replicas
        others = targets[1:r] if asked else targets[:r]
        first = answers[0][0] if answers else None
        if first is not None and 0 < len(others) <= 2:
            # It has a version: if the next holder has the same, the one left cannot change
            # what newest_agreed picks (a version two agree on), and is asked only if they
            # differ. (One read less for each get while a ring settles.)
            agreed = False
            with contextlib.suppress(DhtError, *MALFORMED):  # (a failure: ask the last)
                answers.append(await self._read_once(others[0], key, False, known, heard, few=True))
                second = answers[-1][0]
                agreed = second is not None and second.version == first.version
            others = [] if agreed else others[1:]
        # Few tries each when several are asked at once (a dead one costs 0.3 s, not 1.7).
        few = len(others) > 1
        results = await asyncio.gather(
            *(self._read_once(p, key, False, known, heard, few=few) for p in others),
            return_exceptions=True,
        )
        answers += [a for a in results if not isinstance(a, BaseException)]
        if all(record is None for record, _ in answers) and (
            named := self._named_holders(results, key_id, refused_by.nodes | {p.id for p in others})
        ):
            # No one had a record, and one of the nodes refused: while a ring forms, a lookup
            # can lead past nodes that joined a moment ago. One that knows the key's holders
            # named them; they are asked now, not the whole read again after a pause. They are
            # the targets from here: a settled "nothing" of theirs is checked on the nodes a
            # lookup finds after them (_conclude); an unsettled one makes the read again later.
            results = await asyncio.gather(
                *(self._read(p, key, primary=False, few=True) for p in named),
                return_exceptions=True,
            )
            answers += [a for a in results if not isinstance(a, BaseException)]
            return named
        return targets

    async def _conclude(
        self,
        key: bytes,
        key_id: int,
        targets: list[Peer],
        answers: list[tuple[Record | None, bool]],
        best: Record | None,
    ) -> Record:
        """The end of a read whose holders gave no live value (``best``: the newest they agree
        on, a tombstone or an expired one, or None): the nodes after the holders are read for
        strays, then KeyNotFound, or Unavailable while a holder is not settled."""
        r = self.config.replicas
        # "No value" needs a settled holder, and none that answered unsettled: a holder whose
        # neighbourhood is still changing is a sign that writes may lie elsewhere.
        all_settled = bool(answers) and all(settled for _, settled in answers)
        if best is None and not all_settled and targets[r:]:
            # Where first: on the nodes after the holders (one that took the write as the
            # primary by a view that did not know the true one yet), asked at once as for a
            # settled "nothing" (read repair gives it to the holders); only if they have none
            # either is the read made again once the holders have settled (get).
            best = await self._read_strays(key, targets[:r], targets[r:])
        if best is None and not all_settled:
            raise Unavailable(
                "cannot tell yet whether the key has a value: not all the nodes that hold it "
                "answered, or the ring near it is still repairing after a change; try again "
                "in a few seconds"
            )
        if best is None:
            after = targets[r:]
            if not after:  # r nodes named by a redirect: the ring's own successor list says
                asked_ids = {p.id for p in targets[:r]}  # who follows them
                found = await self._targets(key_id, confirm=False, guess=False)
                after = [p for p in found if p.id not in asked_ids]
            best = await self._read_strays(key, targets[:r], after)
        if best is None or best.is_tombstone or not best.live(self.node.wall_clock()):
            raise KeyNotFound(f"no value for key {key[:60]!r}")
        return best

    async def _read_strays(
        self, key: bytes, holders: list[Peer], after: list[Peer]
    ) -> Record | None:
        """The newest copy of ``key`` held by the nodes after its holders (``after``: the
        rest of the primary's successor list), given to the holders.

        While the ring settles, a node that did not know a key's true primary yet may have
        taken a write as the primary, and copied it to its successors: nodes after the true
        primary, out of its sight until their repair rounds move such strays. A settled
        primary's "nothing here" is believed only when they have nothing either."""
        ask = [p for p in after if p.id != self.node.id]
        reads = [self.node.call_peer(p, "store_read", {"keys": [key]}, tries=0) for p in ask]
        found: list[Record] = []
        if self.node.id in {p.id for p in after} and (mine := self.store.get(key)) is not None:
            found.append(mine)
        for reply in await asyncio.gather(*reads, return_exceptions=True):
            if isinstance(reply, BaseException):
                continue  # a node that does not answer is no evidence either way
            try:
                found += self._records(reply.get("records"), limit=1, keys=(key,))
            except (DhtError, *MALFORMED):
                continue
        best = newest_agreed(found)  # as for the holders: one node alone is outvoted
        if best is not None and holders:  # read repair: do not wait for the rounds
            self.node.background(self._give(best, holders))
        return best

    async def _give(self, record: Record, holders: list[Peer]) -> None:
        with contextlib.suppress(DhtError, *MALFORMED):
            if any(p.id == self.node.id for p in holders):
                self._apply_all([record])
            await self._push([record], [p for p in holders if p.id != self.node.id])

    async def _read_once(
        self,
        peer: Peer,
        key: bytes,
        primary: bool,
        known: _Heard | None,
        heard: _Heard,
        *,
        few: bool = False,
    ) -> tuple[Record | None, bool]:
        """_read, unless ``known`` holds ``peer``'s answer (asked the same way) already; the
        answer is noted in ``heard``."""
        mark = (peer.id, primary)
        answer = known.get(mark) if known else None
        if answer is None:
            answer = await self._read(peer, key, primary=primary, few=few)
        heard[mark] = answer
        return answer

    async def _read(
        self, peer: Peer, key: bytes, *, primary: bool, few: bool = False
    ) -> tuple[Record | None, bool]:
        """A holder's record for ``key`` and whether it is settled in its range (see get).

        ``primary``: ask it as the key's primary, with few tries (``few``: as few, for a holder
        asked beside others). NotResponsible when the node does not hold the key (as primary,
        if asked as one) by its own view.
        """
        if peer.id == self.node.id:
            key_id = ids.hash_key(key)
            if not (self.is_primary(key_id) if primary else self.holds(key_id)):
                raise self._not_responsible(key_id, "the primary" if primary else "a holder")
            record = self.store.get(key)
            return record, (self.answers_for(record) if primary else self.settled())
        args = {"keys": [key], ("primary" if primary else "holder"): True}
        tries = self.node.config.lookup_tries if primary or few else 0
        try:
            # Padded when we hold no token (rpc.call): a refusal naming the holders is 4 times
            # a small read, and would come only after a retry and a resend.
            reply = await self.node.call_peer(peer, "store_read", args, tries=tries, pad=True)
        except RpcTimeout as exc:
            self.node.peer_failed(peer, exc)
            raise
        records = self._records(reply.get("records"), limit=1, keys=(key,))
        return (records[0] if records else None), reply.get("settled") is True

    # --- the primary ---------------------------------------------------------------------------

    MAX_WRITE_IDS = 4096  # write replies kept for attempts made again (see _write_here)

    async def _copied(self, key: bytes) -> None:
        """Wait for the copies of the write of ``key`` under way to the replicas, if any
        (shielded: a waiter cancelled is not the write, whose copies go on)."""
        copying = self._copying.get(key)
        if copying is not None:
            await asyncio.shield(copying)

    async def _write_here(
        self,
        key: bytes,
        value: bytes | None,
        ttl: float | None,
        *,
        unless_same: bool = False,
        wid: bytes | None = None,
    ) -> dict[str, Any]:
        key_id = ids.hash_key(key)
        if not self.is_primary(key_id):
            raise self._not_responsible(key_id, "the primary")
        first = self._writes.get((key, wid)) if wid is not None else None
        if first is not None:
            # The same write again (``wid``: the coordinator's id for it): its call timed out
            # while we copied the record (a replica that is gone costs a push's retries, and
            # node-to-node calls do not wait on WORKING). Written once: answer what the first
            # attempt found (after its copies, as it does), not "existed: false" for the
            # tombstone of a delete. (A new-user trial: deletes right after a kill -9 said
            # "not found" for 2 keys of 12 that were there.)
            await self._copied(key)
            return dict(first)
        now = self.node.wall_clock()
        current = self.store.get(key)
        if current is not None and current.version.stamp > self._latest_stamp():
            self.node.log.warning("replacing a record of %r stamped in the future", key[:60])
            self.store.remove(key)
            current = None
        if (
            unless_same
            and value is not None
            and ttl is None
            and current is not None
            and current.value == value
            and current.expires_at is None
        ):
            # The same value again: no new version, no replication. An acknowledgement still
            # means "on every live replica": wait for the write that put it here, if it is
            # still being copied.
            await self._copied(key)
            self.writes_unchanged += 1
            v = current.version
            return {"version": [v.stamp, v.writer], "existed": True, "unchanged": True}
        version = Version.next_after(
            current.version if current else None, int(now * 1000), self._me
        )
        if value is None:
            expires: float | None = now + self.config.tombstone_ttl
        else:
            expires = now + ttl if ttl is not None else None
        record = Record(key, value, version, expires)
        self._make_room(record, current)
        try:
            self.store.put(record)
        except StoreFull as exc:  # (the disk under the store: see _disk_refused)
            self._disk_refused(1)
            raise StoreFull(f"store full at {format_addr(self.node.addr)}: {exc}") from None
        self._stamped(record)
        existed = current is not None and not current.is_tombstone and current.live(now)
        reply: dict[str, Any] = {"version": [version.stamp, version.writer], "existed": existed}
        if wid is not None:  # (the same dict: an attempt made again gets the shortfall too)
            self._writes[(key, wid)] = reply
            if len(self._writes) > self.MAX_WRITE_IDS:
                self._writes.popitem(last=False)
        # Replicate before acknowledging: an acknowledged write is on every live replica that
        # has room for it (the acknowledgement names the others).
        replicas = [p for p in self.next_nodes(self.config.replicas - 1) if p.id != self.node.id]
        sent_at = self.node.clock()
        copies = asyncio.gather(*(self._push_soon(record, peer) for peer in replicas))
        self._copying[key] = copies
        try:
            took = await copies
        finally:
            if self._copying.get(key) is copies:
                del self._copying[key]
        if not all(took):
            # Fewer copies than wanted: the acknowledgement says so. A replica that did not
            # answer gets its copy from repair once it is back or replaced; one whose store is
            # full refuses repair's copies too, until it has room: it is named.
            lacking = [p for p, ok in zip(replicas, took, strict=True) if not ok]
            full = [p for p in lacking if self._peer_full_at.get(p.id, float("-inf")) >= sent_at]
            short = Shortfall(
                1 + sum(took),
                1 + len(replicas),
                tuple(format_addr(p.addr) for p in full),
                tuple(format_addr(p.addr) for p in lacking if p not in full),
            )
            reply.update(short.to_wire())
        return reply

    def _push_soon(self, record: Record, peer: Peer) -> asyncio.Future[bool]:
        """Push ``record`` to ``peer`` with the other writes of this moment: one ``store_push``
        per replica carries every record written while the last one to it was in flight
        (as Nagle's algorithm, without its delay). Whether the peer took it."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        queue = self._outbox.get(peer.id)
        if queue is None:  # no push to this peer in flight: start one
            self._outbox[peer.id] = [(record, done)]
            self.node.background(self._pump(peer))
        else:
            queue.append((record, done))
        return done

    async def _pump(self, peer: Peer) -> None:
        """Push what waits for ``peer``, batch after batch, until nothing does."""
        try:
            while queue := self._outbox.get(peer.id):
                self._outbox[peer.id] = []  # what comes meanwhile goes in the next batch
                # Few tries: a replica that died costs the write 0.3 s, not 1.7 (a push that
                # fails does not fail the write; anti-entropy repairs the replica).
                took = await self._push(
                    [record for record, _ in queue], [peer], tries=self.node.config.lookup_tries
                )
                for _, done in queue:
                    if not done.done():
                        done.set_result(bool(took))
        finally:
            for _, done in self._outbox.pop(peer.id, []):  # cancelled (the node stops)
                if not done.done():
                    done.set_result(False)

    async def _push(
        self, records: list[Record], peers: Iterable[Peer], *, tries: int = 0, spans: bool = False
    ) -> list[Peer]:
        """Send records to peers (each keeps what is newer); return the peers that took them
        all (none refused as outside its range). ``tries``: sends per call (the default's).
        ``spans``: the records span ranges that not every peer holds (a leave's hand-off to
        its successors); a peer that kept those of its range and refused the rest took them."""
        peers = [p for p in peers if p.id != self.node.id]

        async def one(peer: Peer) -> Peer | None:
            try:
                for batch in batches(records):
                    reply = await self.node.call_peer(
                        peer, "store_push", {"records": [r.to_wire() for r in batch]}, tries=tries
                    )
                    if reply.get("refused") and not spans:
                        return None
            except (RpcTimeout, *MALFORMED) as exc:
                self.node.peer_failed(peer, exc)
                return None
            except StoreFull as exc:
                # Its quota is spent (it says so in its own log): a write names it, and repair
                # holds back its copies for a while (_sync_leaf).
                self._peer_full(peer)
                self.node.log.debug("push to %s refused: %s", peer, exc)
                return None
            except DhtError as exc:
                self.node.log.debug("push to %s failed: %s", peer, exc)
                return None
            return peer

        done = await asyncio.gather(*(one(p) for p in peers))
        return [p for p in done if p is not None]

    # --- handlers ------------------------------------------------------------------------------

    async def _rpc_put(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        key = _arg_key(args)
        value = args.get("value")
        if not isinstance(value, bytes):
            raise BadRequest("'value' must be the msgpack encoding of the value, as bytes")
        ttl = args.get("ttl")
        self._check_ttl(ttl)
        check_value(value)
        self._charge(src, len(key) + len(value), proven=args.get(PROVEN) is True)
        written = await self.put(key, value, ttl)
        v = written.version
        # Fewer copies than wanted: the client hears how many, and which nodes are full.
        return {
            "version": [v.stamp, v.writer],
            **written.shortfall_wire(),
        }

    async def _rpc_get(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        record = await self.get(_arg_key(args))
        v = record.version
        return {"value": record.value, "version": [v.stamp, v.writer], "expires": record.expires_at}

    async def _rpc_delete(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        key = _arg_key(args)
        self._charge(src, len(key) + TOMBSTONE_CHARGE, proven=args.get(PROVEN) is True)
        # A tombstone is written even for an absent key: it shadows any stray older replica.
        written = await self.put(key, None, None)
        return {"existed": written.existed, **written.shortfall_wire()}

    async def _rpc_write(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        key = _arg_key(args)
        value = args.get("value")
        if value is not None:
            value = _arg_bytes(args, "value", MAX_VALUE)
        ttl = args.get("ttl")
        self._check_ttl(ttl)
        wid = args.get("wid")
        if wid is not None and (type(wid) is not bytes or not 0 < len(wid) <= 16):
            raise BadRequest("'wid' must be 1..16 bytes")
        if not self.is_primary(ids.hash_key(key)):  # before it costs the sender anything
            raise self._not_responsible(ids.hash_key(key), "the primary")
        size = len(key) + (len(value) if value is not None else TOMBSTONE_CHARGE)
        self._charge(src, size, proven=args.get(PROVEN) is True)
        unless_same = args.get("unless_same") is True
        return await self._write_here(key, value, ttl, unless_same=unless_same, wid=wid)

    def _rpc_read(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        keys = args.get("keys")
        if not isinstance(keys, list) or len(keys) > MAX_ITEMS:
            raise BadRequest(f"'keys' must be a list of at most {MAX_ITEMS} keys")
        # A coordinator's read asks as the key's primary, or as one of its holders: the node
        # answers only for what is its own by its view, and says whether it is settled.
        as_primary = args.get("primary") is True
        as_holder = args.get("holder") is True
        out: list[list[object]] = []
        size = 0
        read = 0
        record: Record | None = None
        for key in keys:
            if not isinstance(key, bytes) or not 0 < len(key) <= MAX_KEY:
                raise BadRequest(f"keys are 1..{MAX_KEY} bytes")
            if as_primary or as_holder:
                key_id = ids.hash_key(key)
                if as_primary and not self.is_primary(key_id):
                    raise self._not_responsible(key_id, "the primary")
                if as_holder and not self.holds(key_id):
                    raise self._not_responsible(key_id, "a holder")
            record = self.store.get(key)
            if record is not None:
                size += record.size() + ITEM_OVERHEAD
                if out and size > BATCH_BYTES:
                    break  # a full datagram: ``read`` tells the caller where to go on
                out.append(record.to_wire())
            read += 1
        reply: dict[str, Any] = {"records": out, "read": read}
        if as_primary and len(keys) == 1:
            reply["settled"] = self.answers_for(record)  # (a coordinator's read: one key)
        elif as_primary or as_holder:
            reply["settled"] = self.settled()
        return reply

    STRANGER_SKEW = 2.0  # seconds ahead a record pushed by a node outside our leafset may be

    def _rpc_push(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        records = self._records(args.get("records"))
        # The range one node past ours only from a neighbour (a hand-off from one that
        # leaves): a stranger's push there was kept, as a stray that we then moved one record
        # at a time, a lookup, three pushes and a removal each. A helper's audit: 2 datagrams
        # of a stranger's made 12,584 in the ring and 77.6 MB of disk writes.
        neighbour = self.node.in_leafset(src)
        kept = [r for r in records if self.accepts(r.key_id, slack=neighbour)]
        if kept and not neighbour:
            # Not a neighbour (a primary copying its writes, repair, a hand-off): a coordinator's
            # read repair, or a stranger. A stranger's record stamped up to max_skew ahead beat
            # every write acknowledged in the next minute: repair carried it to the primary,
            # and gets returned it while writers were told "stored" (an attack on real nodes).
            # From such a sender, only records stamped about now.
            latest = int((self.node.wall_clock() + self.STRANGER_SKEW) * 1000)
            kept = [r for r in kept if r.version.stamp <= latest]
        self._charge(src, sum(r.size() for r in kept), proven=True)  # (store_push: proven)
        # Room for all of them, or none: the sender learns exactly what was kept.
        applied = self._apply_all(kept, whole=True)
        return {"applied": applied, "refused": len(records) - len(kept)}

    def _rpc_digest(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        digest, count = self.store.digest(*_arg_range(args))
        return {"digest": digest, "count": count}

    def _rpc_digests(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        """The digests of ``(lo, hi]`` cut into ``parts`` (storage.split_range)."""
        parts = args.get("parts")
        if type(parts) is not int or not 1 <= parts <= 64:
            raise BadRequest("'parts' must be an integer 1..64")
        pieces = split_range(*_arg_range(args), parts)
        return {"digests": [list(self.store.digest(a, b)) for a, b in pieces]}

    def _rpc_scan(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        """Records in ``(lo, hi]`` in ring order after key ``after``, with values or versions
        only, a page at a time (paged in the store, never the whole range): ``next`` is the
        key to continue after, nil at the end."""
        lo, hi = _arg_range(args)
        after = args.get("after")
        if after is not None and (not isinstance(after, bytes) or not 0 < len(after) <= MAX_KEY):
            raise BadRequest("'after' must be a key or nil")
        now = self.node.wall_clock()
        cursor = _cursor(after)
        items: list[Any] = []
        if args.get("values"):
            records, end = self.store.scan_records(lo, hi, cursor, budget=BATCH_BYTES)
            items = [r.to_wire() for r in records if r.live(now)]
            last = records[-1].key if records else None
        else:
            entries, end = self.store.scan_versions(lo, hi, cursor, budget=BATCH_BYTES)
            items = [
                [e.key, e.version.stamp, e.version.writer]
                for e in entries
                if e.expires_at is None or e.expires_at > now
            ]
            last = entries[-1].key if entries else None
        return {"items": items, "next": last if end is not None else None}

    # --- hand-off and repair -------------------------------------------------------------------

    PAGE_TRIES = 4  # asks for one page before a scan gives up (each is a call with its retries)

    async def _scan(
        self, peer: Peer, lo: int, hi: int, *, values: bool
    ) -> AsyncIterator[list[Any]]:
        """The pages of a peer's scan of ``(lo, hi]``, one at a time (never all in memory,
        and the next asked only once this one is used: flow control). A page that does not
        come is asked again from where the scan stopped, a few times, with a pause between."""
        after: bytes | None = None
        for _ in range(1_000_000):  # bounded: each page moves ``after`` forward
            args = {
                "lo": ids.to_bytes(lo),
                "hi": ids.to_bytes(hi),
                "after": after,
                "values": values,
            }
            for attempt in range(self.PAGE_TRIES):
                try:
                    reply = await self.node.call_peer(peer, "store_scan", args)
                    break
                except RpcTimeout:
                    if attempt == self.PAGE_TRIES - 1:
                        raise
                    await asyncio.sleep(self.node.config.stabilize_period * (attempt + 1))
            yield reply["items"]
            after = reply["next"]
            if after is None:
                break

    async def after_join(self, successor: Peer) -> int:
        """Take from the successor every record outside ``(self, successor]``: our share.
        A node that holds nothing of it copies it, page by page as it comes (``mode``
        "copy"); one that holds some (restarted with its data dir) compares digests as repair
        does and takes only what differs ("compare"). Progress and outcome are in ``handoff``
        (and ``status``); a failure is logged and raised (one of lookup.PEER_FAILURES)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        state: dict[str, Any] = {
            "from": format_addr(successor.addr), "records": 0, "pages": 0, "seconds": 0.0,
            "mode": None, "done": False, "error": None,
        }  # fmt: skip
        self.handoff = state
        lo, hi = successor.id, self.node.id
        try:
            _, ours = self.store.digest(lo, hi)
            if ours:
                # A node that comes back with its data (a restart) has most of its share:
                # compare digests, as repair does, and take only what differs.
                state["mode"] = "compare"
                before = self._repair["pulled"]
                await self._sync_range(successor, lo, hi, limit=None)
                state["records"] = self._repair["pulled"] - before
            else:
                state["mode"] = "copy"
                async for page in self._scan(successor, lo, hi, values=True):
                    state["records"] += self._apply_all(self._records(page, within=(lo, hi)))
                    state["pages"] += 1
                    state["seconds"] = round(loop.time() - start, 3)
            state["seconds"] = round(loop.time() - start, 3)
        except (DhtError, *MALFORMED, EngineError) as exc:
            # (EngineError: the disk failed under our store. Not caught, a disk full while a
            # restarted node took its range left it 'taking its range over' for good, every
            # read of an absent key of it Unavailable; an operator's trial.)
            state["error"] = f"{type(exc).__name__}: {exc}"
            self._handoff_failed_at = loop.time()  # see settled
            self.node.log.warning(
                "hand-off from %s stopped after %s: %s (repair brings the rest)",
                successor,
                plural(int(state["records"]), "record"),
                exc,
            )
            raise
        state["done"] = True  # we hold all of our range (see settled)
        self.node.log.info(
            "took %s from %s in %.1f s",
            plural(int(state["records"]), "record"),
            successor,
            state["seconds"],
        )
        return int(state["records"])

    async def before_leave(self, *, quiet: bool = False) -> bool:
        """Hand everything we hold to our first r successors, a page at a time: whether they
        took it all (True when there is nothing to hand). ``quiet``: no warning when they did
        not (the caller says what it does then)."""
        targets = self.next_nodes(self.config.replicas)
        if not len(self.store):
            return True
        if not targets:
            return False
        me = self.node.id
        cursor: Cursor | None = None
        handed = 0
        for _ in range(1_000_000):  # bounded: each page moves the cursor on
            try:
                records, cursor = self.store.scan_records(me, me, cursor, budget=BATCH_BYTES)
            except EngineError as exc:
                # A damaged store file: the leave goes on without the rest (it ended the
                # process in a traceback before, and no successor heard of the leave).
                self.node.log.error(
                    "the store could not be read for the hand-off after %s: %s; the replicas "
                    "repair what they can",
                    plural(handed, "record"),
                    exc,
                )
                return False
            if records:
                # A successor that fails a page is not asked again: the others take the rest.
                # (Each keeps the records of its range and refuses the others: the second and
                # third do not hold the first's whole range. Counted as a failure, that sent
                # them one page: "handed 3,056 records to 1 successor", an operator's trial.)
                targets = await self._push(records, targets, spans=True)
                handed += len(records)
            if cursor is None or not targets:
                break
        if targets:
            self.node.log.info(
                "handed %s to %s", plural(handed, "record"), plural(len(targets), "successor")
            )
            return True
        if not quiet:
            self.node.log.warning(
                "no successor took the hand-off: %s stay here only (on disk if this "
                "node has a data dir), and the replicas repair what they can",
                plural(len(self.store), "record"),
            )
        return False

    # Anti-entropy compares ranges top-down: one digest for the whole range, and where two
    # differ, SPLIT parts of it, recursively, down to parts of at most LEAF records whose
    # version lists are exchanged. A range in sync costs one digest each side (the store keeps
    # them per bucket: no record is read), a difference about log_SPLIT(n) round trips.
    SPLIT = 16
    LEAF = 256
    MAX_PARTS = 256  # parts compared per peer and round, at most: the rest waits for the next
    FULL_PAUSE = 6  # sync periods repair holds back its pushes to a peer that refused some (full)

    # Comparisons that find every copy in sync, round after round, in a neighbourhood that
    # does not change, are spaced out: after QUIET_SYNCS such rounds, one round in 2, then
    # in MAX_SYNC_EVERY compares. A change of the neighbourhood or of our range's digest
    # (a write, an expiry) makes the next round compare (_compare_due).
    QUIET_SYNCS = 2
    MAX_SYNC_EVERY = 4

    def _compare_due(self) -> bool:
        """Whether a round that may skip its comparisons compares: unless the last rounds
        found nothing to do and nothing changed since, it does."""
        extra = self._quiet_rounds - self.QUIET_SYNCS
        every = 1 if extra < 0 else min(2 << extra, self.MAX_SYNC_EVERY)
        if self._skipped + 1 >= every or self._quiet_state is None:
            return True
        pred = self.node.leafset.predecessor
        if pred is None or self._view() != self._quiet_state[0]:
            return True
        return self.store.digest(pred.id, self.node.id)[0] != self._quiet_state[1]

    async def sync_round(self, *, may_skip: bool = False) -> None:
        """One anti-entropy round: purge, sync our primary range, move what is not ours.
        ``may_skip`` (the node's own rounds): leave the sync out while the last rounds found
        every copy in sync and nothing changed (_compare_due)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        now = self.node.wall_clock()
        self.store.purge(now, limit=self.PURGE_PER_ROUND)
        ls = self.node.leafset
        pred = ls.predecessor
        view, agreed = self._view(), self.node.maintenance.agreed()
        if may_skip and not self._compare_due():
            self._skipped += 1
            self._repair["comparisons_skipped"] += 1
        elif pred is not None:
            in_sync = self._in_sync
            replicas = ls.successors[: self.config.replicas - 1]
            # What we pull from a later replica goes to the earlier ones in the same round:
            # they are compared again (one digest each when nothing else differs).
            order = [*replicas, *replicas[:-1]]
            pulled_after = -1  # the last index whose comparison pulled records
            for i, peer in enumerate(order):
                if i >= len(replicas) and i - len(replicas) >= pulled_after:
                    break
                before = self._repair["pulled"]
                try:
                    complete = await self._sync_range(
                        peer, pred.id, self.node.id, limit=self.MAX_PARTS
                    )
                except (DhtError, *MALFORMED) as exc:
                    self._repair["sync_failures"] += 1
                    self.node.log.debug("sync with %s failed: %s", peer, exc)
                    continue
                if self._repair["pulled"] > before and i < len(replicas):
                    pulled_after = i
                if i == 0 and complete and agreed and self._view() == view:
                    self._synced = view  # see settled
            # Quiet: each replica's copy had our digest at once, the first time round.
            quiet = (
                self._in_sync - in_sync == len(replicas) > 0
                and self._view() == view
                and (self._quiet_state is None or self._quiet_state[0] == view)
            )
            self._note_round(quiet, view, pred.id)
        await self._move_strays()
        took = (loop.time() - start) * 1000
        stats = self._repair
        stats["rounds"] += 1
        stats["last_round_ms"] = round(took, 3)
        stats["max_round_ms"] = round(max(stats["max_round_ms"], took), 3)

    def _note_round(self, quiet: bool, view: object, pred_id: int) -> None:
        """After a round's comparisons: count it quiet or start over (see _compare_due)."""
        self._quiet_rounds = self._quiet_rounds + 1 if quiet else 0
        self._skipped = 0
        self._quiet_state = (view, self.store.digest(pred_id, self.node.id)[0])

    def repair_stats(self) -> dict[str, Any]:
        """What anti-entropy did (status ``repair``): rounds, the last and longest round's
        milliseconds (including the calls' waits), digests compared, records pushed and
        pulled, records moved to where they belong, comparisons that failed."""
        return dict(self._repair)

    async def _sync_range(self, peer: Peer, lo: int, hi: int, *, limit: int | None) -> bool:
        """Make ``peer``'s copy of ``(lo, hi]`` and ours agree, exchanging only what differs:
        at most ``limit`` parts compared (None: the whole range, for a hand-off). Whether
        all of it was compared."""
        todo = [(lo, hi)]
        mine, count = self.store.digest(lo, hi)
        reply = await self.node.call_peer(
            peer, "store_digest", {"lo": ids.to_bytes(lo), "hi": ids.to_bytes(hi)}
        )
        self._repair["parts_compared"] += 1
        if reply["digest"] == mine:
            self._in_sync += 1
            return True
        if max(count, int(reply["count"])) <= self.LEAF:
            await self._sync_leaf(peer, lo, hi)
            return True
        compared = 0
        for _ in range(1_000_000):  # bounded: each part is smaller than the one it came from
            if not todo or (limit is not None and compared >= limit):
                break
            a, b = todo.pop()
            parts = split_range(a, b, self.SPLIT)
            reply = await self.node.call_peer(
                peer,
                "store_digests",
                {"lo": ids.to_bytes(a), "hi": ids.to_bytes(b), "parts": self.SPLIT},
            )
            theirs = reply["digests"]
            if not isinstance(theirs, list) or len(theirs) != len(parts):
                raise ValueError("store_digests answered another number of parts")
            compared += len(parts)
            self._repair["parts_compared"] += len(parts)
            for (pa, pb), (their_digest, their_count) in zip(parts, theirs, strict=True):
                my_digest, my_count = self.store.digest(pa, pb)
                if my_digest == their_digest:
                    continue
                if max(my_count, int(their_count)) <= self.LEAF or len(parts) == 1:
                    await self._sync_leaf(peer, pa, pb)
                else:
                    todo.append((pa, pb))
        return not todo

    async def _sync_leaf(self, peer: Peer, lo: int, hi: int) -> None:
        """Exchange the version lists of a small part ``(lo, hi]`` and push what the peer
        lacks or holds older, pull what it holds newer. Only live records take part."""
        theirs: dict[bytes, Version] = {}
        async for page in self._scan(peer, lo, hi, values=False):
            theirs.update(_version_items(page, lo, hi))
        now = self.node.wall_clock()
        ours: dict[bytes, Version] = {}
        cursor: Cursor | None = None
        for _ in range(1_000_000):  # bounded: each page moves the cursor on
            entries, cursor = self.store.scan_versions(lo, hi, cursor, budget=BATCH_BYTES)
            for e in entries:
                if e.expires_at is None or e.expires_at > now:
                    ours[e.key] = e.version
            if cursor is None:
                break
        push_keys = [k for k, v in ours.items() if k not in theirs or v > theirs[k]]
        pull = [k for k, v in theirs.items() if k not in ours or v > ours[k]]
        # A peer whose store is full refuses what it lacks, round after round: sending the same
        # records every round costs their bytes each time for nothing. After a refusal they
        # wait FULL_PAUSE rounds (counted in refused_full meanwhile), then one batch tries again.
        loop = asyncio.get_running_loop()
        full_at = self._peer_full_at.get(peer.id, float("-inf"))
        full = loop.time() - full_at < self.FULL_PAUSE * self.config.sync_period
        sent = 0
        step = self.LEAF_BATCH
        for start in range(0, len(push_keys), step):
            if full:
                break
            held = (self.store.get(k) for k in push_keys[start : start + step])
            push = [r for r in held if r is not None]
            if push:
                took = await self._push(push, [peer])
                self._repair["pushed"] += len(push)
                full = not took and self._peer_full_at.get(peer.id, full_at) > full_at
                sent += 0 if full else len(push)
        if full:
            self._repair["refused_full"] += len(push_keys) - sent
        start = 0
        while start < len(pull):
            keys = pull[start : start + step]
            reply = await self.node.call_peer(peer, "store_read", {"keys": keys})
            records = self._records(reply.get("records"), keys=set(keys))
            self._repair["pulled"] += self._apply_all(records)
            start += max(1, int(reply.get("read", step)))  # a reply stops at a full datagram

    async def _move_strays(self) -> None:
        """Records outside ``(pred_r, self]`` go to where they belong, then leave us."""
        low = self.responsible_low()
        if low is None:
            return
        strays = self.store.outside(low, self.node.id, 200, after=self._strays_after)
        # Next round goes on after these (from the start once through): strays that cannot
        # move now do not hold up the others.
        self._strays_after = (strays[-1].key_id, strays[-1].key) if len(strays) == 200 else None
        for record in strays:  # a bounded share per round
            try:
                found = await self.node.lookup_id(record.key_id, confirm=False)
            except DhtError:
                continue
            targets = [found.owner, *found.successors][: self.config.replicas]
            if any(p.id == self.node.id for p in targets):
                continue  # our view of the ring disagrees with the lookup: keep it for now
            took = await self._push([record], targets)
            if len(took) == len(targets):
                self.store.remove(record.key)
                self._repair["moved"] += 1
