"""The replicated key-value store on the ring: writes, reads, hand-off and repair.

Placement: the successor of a key's id is its *primary*; the next r-1 successors hold
*replicas*. So a node holds the keys in ``(pred_r, self]``, where ``pred_r`` is its r-th
predecessor, and is primary for ``(pred_1, self]``.

* **put/delete** go through any node (the coordinator), which looks up the primary and sends it
  the write. The primary stamps a version, stores, and pushes the record to its r-1 successors
  before it answers, so an acknowledged write is on every live replica. A node that is not the
  primary (routing moved on) answers ``Busy`` and the coordinator looks up again, confirmed
  by the owner this time.
* **get** asks the primary, which checks that it is the primary by its own view and says
  whether it has held its range long enough to have every acknowledged write ("settled"). If
  the primary is dead, has nothing, or is new to its range, the replicas are asked too, and the
  newest version two of the answers agree on wins (the newest, when no two agree).
* **join**: the new node fetches from its successor every record outside ``(self, successor]``,
  after telling the successor it is its predecessor, so no write acknowledged meanwhile is lost.
* **leave**: the node pushes everything it holds to its first r successors before it goes.
* **repair**: every sync period each primary compares its range with each of its r-1 successors
  (one digest; on a mismatch, the version lists), pushes what they lack and pulls what is newer.
  After a crash, the dead node's successor becomes primary and restores r copies. Records a
  node is no longer responsible for are pushed to their new place, then dropped. Expired values
  and tombstones are purged.

Every record that arrives from elsewhere is checked before it is kept (SECURITY.md): stamps at
most ``max_skew`` ahead of our clock, bounded expiries, keys this node holds (with some slack);
writes count against a per-source budget, and the store against its quota.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import ids
from .errors import (
    BadRequest,
    Busy,
    DhtError,
    KeyNotFound,
    RateLimited,
    RpcTimeout,
    StoreFull,
    Unavailable,
    ValueTooLarge,
)
from .lookup import MALFORMED
from .net import Address
from .ratelimit import Buckets, source_of
from .routing import Peer
from .storage import MAX_KEY, MAX_VALUE, Cursor, Record, Store, Version

if TYPE_CHECKING:
    from .node import Node

#: Payload budget of one batch of records: a datagram with room to spare for the envelope.
BATCH_BYTES = 60_000
ITEM_OVERHEAD = 64  # what each record of a batch counts besides its key and value


@dataclass(frozen=True)
class StoreConfig:
    replicas: int = 3  # r: copies of each key, the primary included
    sync_period: float = 5.0  # mean seconds between anti-entropy rounds
    tombstone_ttl: float = 24 * 3600.0  # how long a delete shadows older replicas
    write_attempts: int = 4  # lookups a put or delete may make before giving up
    max_skew: float = 60.0  # seconds a record's stamp may be ahead of our clock
    max_ttl: float = 366 * 24 * 3600.0  # the longest TTL a put may ask for
    max_store_bytes: int | None = None  # the store's quota (key + value bytes); None: none
    write_rate: float = 4 << 20  # bytes a second one source may write through this node
    write_burst: float = 16 << 20  # ... and at once

    @property
    def settle_time(self) -> float:
        """How long a primary new to its range may lack some of its acknowledged writes (the
        join's fetch, then a repair round or two)."""
        return 2 * self.sync_period


def check_key(key: bytes) -> None:
    if not key:
        raise BadRequest("a key cannot be empty")
    if len(key) > MAX_KEY:
        raise ValueTooLarge(f"key of {len(key)} bytes exceeds {MAX_KEY}")


def _arg_key(args: dict[str, Any]) -> bytes:
    key = args.get("key")
    if not isinstance(key, bytes):
        raise BadRequest("argument 'key' must be bytes")
    check_key(key)
    return key


def check_value(value: bytes) -> None:
    if len(value) > MAX_VALUE:
        raise ValueTooLarge(f"value of {len(value)} encoded bytes exceeds {MAX_VALUE}")


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
    if not records:
        return None
    counts = Counter(r.version for r in records)
    agreed = [v for v, n in counts.items() if n >= 2]
    wanted = max(agreed) if agreed else max(counts)
    return next(r for r in records if r.version == wanted)


def _cursor(after: bytes | None) -> Cursor | None:
    """A scan resumes after a key: its position on the ring is its id, then the key."""
    return None if after is None else (ids.hash_key(after), after)


class Replicator:
    """The store side of a node: its handlers, its coordinator calls and its repair loop."""

    def __init__(self, node: Node, store: Store, config: StoreConfig) -> None:
        self.node = node
        self.store = store
        self.config = config
        self._budgets = Buckets(config.write_rate, config.write_burst)
        self._strays_after: Cursor | None = None  # where the next round's strays start
        # Our predecessor, and since when: the start of our present range as primary.
        self._range: tuple[int | None, float] = (None, asyncio.get_running_loop().time())

    def register(self) -> None:
        ep = self.node.endpoint
        ep.register("put", self._rpc_put)
        # A get coordinates several calls: while one runs, a client's retry must not start
        # another, so its reply is cached like a write's (not marked idempotent).
        ep.register("get", self._rpc_get)
        ep.register("delete", self._rpc_delete)
        ep.register("store_write", self._rpc_write)
        ep.register("store_read", self._rpc_read, idempotent=True)
        ep.register("store_push", self._rpc_push, idempotent=True)
        ep.register("store_digest", self._rpc_digest, idempotent=True)
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

    def track_range(self) -> None:
        """Note when our range as primary last changed (the node calls this every round)."""
        pred = self.node.leafset.predecessor
        pred_id = pred.id if pred is not None else None
        if self._range[0] != pred_id:
            self._range = (pred_id, asyncio.get_running_loop().time())

    def settled(self) -> bool:
        """Whether we have been primary for our present range long enough to hold every
        acknowledged write in it (StoreConfig.settle_time)."""
        self.track_range()
        return asyncio.get_running_loop().time() - self._range[1] >= self.config.settle_time

    def responsible_low(self) -> int | None:
        """``pred_r``: we hold the keys in ``(pred_r, self]``; None when we hold everything."""
        preds = self.node.leafset.predecessors
        r = self.config.replicas
        return preds[r - 1].id if len(preds) >= r else None

    def holds(self, key_id: int) -> bool:
        low = self.responsible_low()
        return low is None or ids.in_interval(key_id, low, self.node.id, right_open=False)

    def accepts(self, key_id: int) -> bool:
        """Whether a record pushed to us may be kept: its key lies in ``(pred_{r+1}, self]``,
        the range we hold as a replica and one node more (a node that leaves hands its range
        to its r-th successor, which does not hold it yet; views also differ for a moment
        during churn), or we know too few predecessors to tell."""
        preds = self.node.leafset.predecessors
        r = self.config.replicas
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

    def counts(self) -> dict[str, int]:
        """What the store holds (status ``store``), in O(1) whatever its size: records we are
        primary for and the others, their bytes. Tombstones and expired records not yet
        purged count too (counting only live values would mean reading every record)."""
        stats = self.store.stats()
        pred = self.node.leafset.predecessor
        if pred is None:
            primary = stats.count if self.is_primary(self.node.id) else 0
        else:
            primary, _ = self.store.count_range(pred.id, self.node.id)
        return {
            "primary": primary,
            "replica": stats.count - primary,
            "bytes": stats.bytes,
            "tombstones": stats.tombstones,
        }

    # --- checks at the door --------------------------------------------------------------------

    def _records(self, items: Any, *, limit: int = 1000) -> list[Record]:
        """Records a peer sent, each checked: well formed, and a version and expiry we can keep
        (a stamp from the far future would win over every later write to its key; an expiry
        of +inf would never be purged). Raises BadRequest; none is kept if one is bad."""
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
            out.append(record)
        return out

    def _from_neighbour(self, src: Address) -> bool:
        return any(p.addr == src for p in self.node.leafset.peers())

    def _charge(self, src: Address, size: int) -> None:
        """Count a write against its sender's budget (leafset neighbours replicate to us and
        are not counted); RateLimited when it is spent."""
        if self._from_neighbour(src):
            return
        now = asyncio.get_running_loop().time()
        if not self._budgets.take(source_of(src), now, float(size)):
            rate = self.config.write_rate / (1 << 20)
            raise RateLimited(f"write budget spent ({rate:g} MiB/s per source); slow down")

    def _make_room(self, record: Record, held: Record | None) -> None:
        """StoreFull when replacing ``held`` by ``record`` would take the store over its
        quota."""
        quota = self.config.max_store_bytes
        if quota is None:
            return
        growth = record.size() - (held.size() if held is not None else 0)
        used = self.store.stats().bytes
        if growth > 0 and used + growth > quota:
            raise StoreFull(f"store full: {used} of {quota} bytes used (--max-store-bytes)")

    def _apply(self, record: Record) -> bool:
        """Keep a checked record if it is newer than ours and the quota has room (StoreFull
        otherwise). A record we hold that is stamped beyond the skew bound (kept before these
        checks existed, or our clock went back) can never be superseded fairly: any checked
        record replaces it."""
        held = self.store.get(record.key)
        if held is not None and held.version.stamp > self._latest_stamp():
            self.store.remove(record.key)
            held = None
        if held is not None and record.version <= held.version:
            return False
        self._make_room(record, held)
        return self.store.put(record)

    def _apply_all(self, records: Iterable[Record]) -> int:
        """:meth:`_apply` each record; when the store is full, keep what fits and say so."""
        kept = 0
        for record in records:
            try:
                kept += self._apply(record)
            except StoreFull as exc:
                self.node.log.warning("records dropped: %s", exc)
                break
        return kept

    def _latest_stamp(self) -> int:
        return int((self.node.wall_clock() + self.config.max_skew) * 1000)

    # --- the coordinator: what a client asks any node to do ------------------------------------

    async def put(self, key: bytes, value: bytes | None, ttl: float | None) -> tuple[Version, bool]:
        """Write (``value`` None: delete) through the key's primary.

        Returns the new version and whether a live value existed before.
        """
        check_key(key)
        if value is not None:
            check_value(value)
        self._check_ttl(ttl)
        key_id = ids.hash_key(key)
        args = {"key": key, "value": value, "ttl": ttl}
        last: Exception | None = None
        for attempt in range(self.config.write_attempts):
            if attempt > 1:  # routing still moves: give stabilization a moment
                await asyncio.sleep(self.node.config.stabilize_period * (attempt - 1))
            # The first lookup is not confirmed: the primary checks its own responsibility.
            # After a Busy, the owner confirms the answer itself.
            found = await self.node.lookup_id(key_id, confirm=attempt > 0)
            for target in [found.owner, *found.successors][: self.config.replicas]:
                try:
                    if target.id == self.node.id:
                        reply = await self._write_here(key, value, ttl)
                    else:
                        reply = await self.node.call_peer(target, "store_write", args)
                    stamp, writer = reply["version"]
                    return Version(int(stamp), bytes(writer)), bool(reply["existed"])
                except Busy as exc:
                    last = exc
                    break  # not the primary: look up again
                except (RpcTimeout, *MALFORMED) as exc:
                    last = exc
                    self.node.peer_failed(target, exc)
        raise Unavailable(f"could not write the key: {last}")

    def _check_ttl(self, ttl: float | None) -> None:
        if ttl is None:
            return
        if type(ttl) not in (int, float) or not 0 < ttl <= self.config.max_ttl:  # not NaN
            raise BadRequest(f"ttl must be a number of seconds in (0, {self.config.max_ttl:g}]")

    async def get(self, key: bytes) -> Record:
        """The newest live record of ``key``; KeyNotFound when absent, deleted or expired."""
        check_key(key)
        key_id = ids.hash_key(key)
        found = await self.node.lookup_id(key_id, confirm=False)
        targets = [found.owner, *found.successors][: self.config.replicas]
        best: Record | None = None
        answered = settled = False
        try:
            # Few tries when replicas can answer instead: a dead primary costs little.
            best, settled = await self._read_primary(targets[0], key, quick=len(targets) > 1)
            answered = True
        except Busy:
            # Not the primary by its own view: routing moved on. Ask again, confirmed.
            found = await self.node.lookup_id(key_id, confirm=True)
            targets = [found.owner, *found.successors][: self.config.replicas]
            try:
                best, settled = await self._read_primary(targets[0], key, quick=len(targets) > 1)
                answered = True
            except (DhtError, *MALFORMED) as exc:
                self.node.log.debug("primary %s did not serve a read: %s", targets[0], exc)
        except (DhtError, *MALFORMED) as exc:  # no answer, an error, or nonsense: the replicas
            self.node.log.debug("primary %s did not serve a read: %s", targets[0], exc)
        if best is None or not settled:
            # A dead primary, one with nothing, or one new to its range that may still lack
            # writes acknowledged before it took over: the replicas are asked too.
            results = await asyncio.gather(
                *(self._read_from(p, key) for p in targets[1:]), return_exceptions=True
            )
            held = [best]
            for result in results:
                if not isinstance(result, BaseException):
                    answered = True
                    held.append(result)
            best = newest_agreed(held)
        if not answered:
            raise Unavailable(f"no replica of the key answered ({len(targets)} asked)")
        now = self.node.wall_clock()
        if best is None or best.is_tombstone or not best.live(now):
            raise KeyNotFound(f"no value for key {key[:60]!r}")
        return best

    async def _read_primary(
        self, peer: Peer, key: bytes, *, quick: bool
    ) -> tuple[Record | None, bool]:
        """The primary's record for ``key`` and whether it is settled in its range; Busy when
        the node is not the primary by its own view."""
        if peer.id == self.node.id:
            if not self.is_primary(ids.hash_key(key)):
                raise Busy("not the primary for this key")
            return self.store.get(key), self.settled()
        reply = await self._call_read(peer, {"keys": [key], "primary": True}, quick=quick)
        records = self._records(reply.get("records"), limit=1)
        return (records[0] if records else None), reply.get("settled") is True

    async def _read_from(self, peer: Peer, key: bytes) -> Record | None:
        if peer.id == self.node.id:
            return self.store.get(key)
        reply = await self._call_read(peer, {"keys": [key]}, quick=False)
        records = self._records(reply.get("records"), limit=1)
        return records[0] if records else None

    async def _call_read(self, peer: Peer, args: dict[str, Any], *, quick: bool) -> Any:
        tries = self.node.config.lookup_tries if quick else 0
        try:
            return await self.node.call_peer(peer, "store_read", args, tries=tries)
        except RpcTimeout:
            self.node.peer_failed(peer)
            raise

    # --- the primary ---------------------------------------------------------------------------

    async def _write_here(
        self, key: bytes, value: bytes | None, ttl: float | None
    ) -> dict[str, Any]:
        key_id = ids.hash_key(key)
        if not self.is_primary(key_id):
            raise Busy("not the primary for this key (yet); look it up again")
        now = self.node.wall_clock()
        current = self.store.get(key)
        if current is not None and current.version.stamp > self._latest_stamp():
            self.node.log.warning("replacing a record of %r stamped in the future", key[:60])
            self.store.remove(key)
            current = None
        version = Version.next_after(
            current.version if current else None, int(now * 1000), self._me
        )
        if value is None:
            expires: float | None = now + self.config.tombstone_ttl
        else:
            expires = now + ttl if ttl is not None else None
        record = Record(key, value, version, expires)
        self._make_room(record, current)
        self.store.put(record)
        existed = current is not None and not current.is_tombstone and current.live(now)
        # Replicate before acknowledging: an acknowledged write is on every live replica.
        await self._push([record], self.next_nodes(self.config.replicas - 1))
        return {"version": [version.stamp, version.writer], "existed": existed}

    async def _push(self, records: list[Record], peers: Iterable[Peer]) -> list[Peer]:
        """Send records to peers (each keeps what is newer); return the peers that took them
        all (none refused as outside its range)."""
        peers = [p for p in peers if p.id != self.node.id]

        async def one(peer: Peer) -> Peer | None:
            try:
                for batch in batches(records):
                    reply = await self.node.call_peer(
                        peer, "store_push", {"records": [r.to_wire() for r in batch]}
                    )
                    if reply.get("refused"):
                        return None
            except (RpcTimeout, *MALFORMED) as exc:
                self.node.peer_failed(peer, exc)
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
        self._charge(src, len(key) + len(value))
        version, _ = await self.put(key, value, ttl)
        return {"version": [version.stamp, version.writer]}

    async def _rpc_get(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        record = await self.get(_arg_key(args))
        v = record.version
        return {"value": record.value, "version": [v.stamp, v.writer], "expires": record.expires_at}

    async def _rpc_delete(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        key = _arg_key(args)
        self._charge(src, len(key) + ITEM_OVERHEAD)
        # A tombstone is written even for an absent key: it shadows any stray older replica.
        _, existed = await self.put(key, None, None)
        return {"existed": existed}

    async def _rpc_write(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        key = _arg_key(args)
        value = args.get("value")
        if value is not None:
            value = _arg_bytes(args, "value", MAX_VALUE)
        ttl = args.get("ttl")
        self._check_ttl(ttl)
        if not self.is_primary(ids.hash_key(key)):  # before it costs the sender anything
            raise Busy("not the primary for this key (yet); look it up again")
        self._charge(src, len(key) + (len(value) if value is not None else ITEM_OVERHEAD))
        return await self._write_here(key, value, ttl)

    def _rpc_read(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        keys = args.get("keys")
        if not isinstance(keys, list) or len(keys) > 1000:
            raise BadRequest("'keys' must be a list of at most 1000 keys")
        as_primary = args.get("primary") is True
        out: list[list[object]] = []
        size = 0
        read = 0
        for key in keys:
            if not isinstance(key, bytes) or not 0 < len(key) <= MAX_KEY:
                raise BadRequest(f"keys are 1..{MAX_KEY} bytes")
            if as_primary and not self.is_primary(ids.hash_key(key)):
                raise Busy("not the primary for this key; look it up again")
            record = self.store.get(key)
            if record is not None:
                size += record.size() + ITEM_OVERHEAD
                if out and size > BATCH_BYTES:
                    break  # a full datagram: ``read`` tells the caller where to go on
                out.append(record.to_wire())
            read += 1
        reply: dict[str, Any] = {"records": out, "read": read}
        if as_primary:
            reply["settled"] = self.settled()
        return reply

    def _rpc_push(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        records = self._records(args.get("records"))
        kept = [r for r in records if self.accepts(r.key_id)]
        self._charge(src, sum(r.size() for r in kept))
        quota = self.config.max_store_bytes
        if quota is not None and self.store.stats().bytes + sum(r.size() for r in kept) > quota:
            # Room for all of them, or none: the sender learns exactly what was kept.
            growth = sum(r.size() - self._held_size(r.key) for r in kept)
            if growth > 0 and self.store.stats().bytes + growth > quota:
                raise StoreFull(f"store full: no room for {growth} more bytes (--max-store-bytes)")
        applied = sum(self._apply(r) for r in kept)
        return {"applied": applied, "refused": len(records) - len(kept)}

    def _held_size(self, key: bytes) -> int:
        held = self.store.get(key)
        return held.size() if held is not None else 0

    def _rpc_digest(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        digest, count = self.store.digest(*_arg_range(args))
        return {"digest": digest, "count": count}

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

    async def _scan(
        self, peer: Peer, lo: int, hi: int, *, values: bool
    ) -> AsyncIterator[list[Any]]:
        """The pages of a peer's scan of ``(lo, hi]``, one at a time (never all in memory)."""
        after: bytes | None = None
        for _ in range(100_000):  # bounded: each page moves ``after`` forward
            reply = await self.node.call_peer(
                peer,
                "store_scan",
                {"lo": ids.to_bytes(lo), "hi": ids.to_bytes(hi), "after": after, "values": values},
            )
            yield reply["items"]
            after = reply["next"]
            if after is None:
                break

    async def after_join(self, successor: Peer) -> int:
        """Take from the successor every record outside ``(self, successor]``: our share,
        applied page by page as it comes."""
        taken = 0
        async for page in self._scan(successor, successor.id, self.node.id, values=True):
            taken += self._apply_all(self._records(page))
        self.node.log.info("took %d records from %s", taken, successor)
        return taken

    async def before_leave(self) -> None:
        """Hand everything we hold to our first r successors, a page at a time."""
        targets = self.next_nodes(self.config.replicas)
        if not targets or not len(self.store):
            return
        me = self.node.id
        cursor: Cursor | None = None
        handed = 0
        for _ in range(1_000_000):  # bounded: each page moves the cursor on
            records, cursor = self.store.scan_records(me, me, cursor, budget=BATCH_BYTES)
            if records:
                # A successor that fails a page is not asked again: the others take the rest.
                targets = await self._push(records, targets)
                handed += len(records)
            if cursor is None or not targets:
                break
        if targets:
            self.node.log.info("handed %d records to %d successor(s)", handed, len(targets))
        else:
            self.node.log.warning(
                "no successor took the hand-off: %d records stay here only (on disk if this "
                "node has a data dir), and the replicas repair what they can",
                len(self.store),
            )

    async def sync_round(self) -> None:
        """One anti-entropy round: purge, sync our primary range, move what is not ours."""
        now = self.node.wall_clock()
        self.store.purge(now, limit=1000)  # ~0.2 s at most with 60 KB values: a share a round
        ls = self.node.leafset
        pred = ls.predecessor
        if pred is not None:
            for peer in ls.successors[: self.config.replicas - 1]:
                try:
                    await self._sync_range(peer, pred.id, self.node.id)
                except (DhtError, *MALFORMED) as exc:
                    self.node.log.debug("sync with %s failed: %s", peer, exc)
        await self._move_strays()

    async def _sync_range(self, peer: Peer, lo: int, hi: int) -> None:
        mine, _ = self.store.digest(lo, hi)
        reply = await self.node.call_peer(
            peer, "store_digest", {"lo": ids.to_bytes(lo), "hi": ids.to_bytes(hi)}
        )
        if reply["digest"] == mine:
            return
        theirs = {
            bytes(key): Version(int(stamp), bytes(writer))
            async for page in self._scan(peer, lo, hi, values=False)
            for key, stamp, writer in page
        }
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
        for start in range(0, len(push_keys), 500):
            held = (self.store.get(k) for k in push_keys[start : start + 500])
            push = [r for r in held if r is not None]
            if push:
                await self._push(push, [peer])
        start = 0
        while start < len(pull):
            keys = pull[start : start + 500]
            reply = await self.node.call_peer(peer, "store_read", {"keys": keys})
            self._apply_all(self._records(reply.get("records")))
            start += max(1, int(reply.get("read", 500)))  # a reply stops at a full datagram

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
