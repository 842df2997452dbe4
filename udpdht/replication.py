"""The replicated key-value store on the ring: writes, reads, hand-off and repair.

Placement: the successor of a key's id is its *primary*; the next r-1 successors hold
*replicas*. So a node holds the keys in ``(pred_r, self]``, where ``pred_r`` is its r-th
predecessor, and is primary for ``(pred_1, self]``.

* **put/delete** go through any node (the coordinator), which looks up the primary and sends it
  the write. The primary stamps a version, stores, and pushes the record to its r-1 successors
  before it answers, so an acknowledged write is on every live replica. A node that is not the
  primary (routing moved on) answers ``Busy`` and the coordinator looks up again.
* **get** asks the primary, which holds every acknowledged write. If the primary is dead, or has
  nothing (it joined a moment ago), the replicas are asked and the newest answer wins.
* **join**: the new node fetches from its successor every record outside ``(self, successor]``,
  after telling the successor it is its predecessor, so no write acknowledged meanwhile is lost.
* **leave**: the node pushes everything it holds to its first r successors before it goes.
* **repair**: every sync period each primary compares its range with each of its r-1 successors
  (one digest; on a mismatch, the version lists), pushes what they lack and pulls what is newer.
  After a crash, the dead node's successor becomes primary and restores r copies. Records a
  node is no longer responsible for are pushed to their new place, then dropped. Expired values
  and tombstones are purged.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import ids
from .errors import (
    BadRequest,
    Busy,
    DhtError,
    KeyNotFound,
    RpcTimeout,
    Unavailable,
    ValueTooLarge,
)
from .routing import Peer
from .storage import MAX_KEY, MAX_VALUE, Record, Store, Version

if TYPE_CHECKING:
    from .node import Node

#: Payload budget of one batch of records: a datagram with room to spare for the envelope.
BATCH_BYTES = 60_000


@dataclass(frozen=True)
class StoreConfig:
    replicas: int = 3  # r: copies of each key, the primary included
    sync_period: float = 5.0  # mean seconds between anti-entropy rounds
    tombstone_ttl: float = 24 * 3600.0  # how long a delete shadows older replicas
    write_attempts: int = 4  # lookups a put or delete may make before giving up


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


def _arg_ttl(args: dict[str, Any]) -> float | None:
    ttl = args.get("ttl")
    if ttl is None:
        return None
    if type(ttl) not in (int, float) or not ttl > 0:  # not a bool, not NaN, not negative
        raise BadRequest("'ttl' must be a positive number of seconds")
    return float(ttl)


def check_value(value: bytes) -> None:
    if len(value) > MAX_VALUE:
        raise ValueTooLarge(f"value of {len(value)} encoded bytes exceeds {MAX_VALUE}")


def batches(records: Iterable[Record]) -> Iterable[list[Record]]:
    """Group records into batches that each fit one datagram."""
    batch: list[Record] = []
    size = 0
    for record in records:
        rsize = record.size() + 64
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


def _records(items: Any) -> list[Record]:
    if not isinstance(items, list):
        raise BadRequest("'records' must be a list")
    try:
        return [Record.from_wire(item) for item in items]
    except ValueError as exc:
        raise BadRequest(f"bad record: {exc}") from None


class Replicator:
    """The store side of a node: its handlers, its coordinator calls and its repair loop."""

    def __init__(self, node: Node, store: Store, config: StoreConfig) -> None:
        self.node = node
        self.store = store
        self.config = config

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
            # Alone, or joined a moment ago: primary for everything only when truly alone.
            return self.node.leafset.successor is None
        return ids.in_interval(key_id, pred.id, self.node.id, right_open=False)

    def responsible_low(self) -> int | None:
        """``pred_r``: we hold the keys in ``(pred_r, self]``; None when we hold everything."""
        preds = self.node.leafset.predecessors
        r = self.config.replicas
        return preds[r - 1].id if len(preds) >= r else None

    def holds(self, key_id: int) -> bool:
        low = self.responsible_low()
        return low is None or ids.in_interval(key_id, low, self.node.id, right_open=False)

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
        """Live records held as primary and as replica, and their bytes (status ``store``)."""
        now = self.node.wall_clock()
        primary = replica = size = 0
        for record in self.store.records():
            if record.is_tombstone or not record.live(now):
                continue
            size += record.size()
            if self.is_primary(record.key_id):
                primary += 1
            else:
                replica += 1
        return {"primary": primary, "replica": replica, "bytes": size}

    # --- the coordinator: what a client asks any node to do ------------------------------------

    async def put(self, key: bytes, value: bytes | None, ttl: float | None) -> tuple[Version, bool]:
        """Write (``value`` None: delete) through the key's primary.

        Returns the new version and whether a live value existed before.
        """
        check_key(key)
        if value is not None:
            check_value(value)
        if ttl is not None and not ttl > 0:
            raise BadRequest("ttl must be a positive number of seconds")
        key_id = ids.hash_key(key)
        args = {"key": key, "value": value, "ttl": ttl}
        last: Exception | None = None
        for attempt in range(self.config.write_attempts):
            if attempt:  # routing moved on under us: give stabilization a moment
                await asyncio.sleep(self.node.config.stabilize_period * attempt)
            found = await self.node.lookup_id(key_id)
            for target in [found.owner, *found.successors][: self.config.replicas]:
                try:
                    if target.id == self.node.id:
                        reply = await self._write_here(key, value, ttl)
                    else:
                        reply = await self.node._call(target, "store_write", args)
                    stamp, writer = reply["version"]
                    return Version(int(stamp), bytes(writer)), bool(reply["existed"])
                except Busy as exc:
                    last = exc
                    break  # not the primary: look up again
                except RpcTimeout as exc:
                    last = exc
                    self.node._peer_failed(target)
        raise Unavailable(f"could not write the key: {last}")

    async def get(self, key: bytes) -> Record:
        """The newest live record of ``key``; KeyNotFound when absent, deleted or expired."""
        check_key(key)
        key_id = ids.hash_key(key)
        found = await self.node.lookup_id(key_id)
        targets = [found.owner, *found.successors][: self.config.replicas]
        primary, replicas = targets[0], targets[1:]
        best: Record | None = None
        answered = False
        try:
            # Few tries when replicas can answer instead: a dead primary costs little.
            best = await self._read_from(primary, key, quick=bool(replicas))
            answered = True
        except (RpcTimeout, DhtError) as exc:
            self.node.log.debug("primary %s did not serve a read: %s", primary, exc)
        if best is None:  # dead primary, or one that has not received its range yet
            results = await asyncio.gather(
                *(self._read_from(p, key) for p in replicas), return_exceptions=True
            )
            for result in results:
                if isinstance(result, Record) and (best is None or result.version > best.version):
                    best = result
                answered = answered or not isinstance(result, BaseException)
        if not answered:
            raise Unavailable(f"no replica of the key answered ({len(targets)} asked)")
        now = self.node.wall_clock()
        if best is None or best.is_tombstone or not best.live(now):
            raise KeyNotFound(f"no value for key {key[:60]!r}")
        return best

    async def _read_from(self, peer: Peer, key: bytes, *, quick: bool = False) -> Record | None:
        if peer.id == self.node.id:
            return self.store.get(key)
        tries = self.node.config.lookup_tries if quick else 0
        try:
            reply = await self.node._call(peer, "store_read", {"keys": [key]}, tries=tries)
        except RpcTimeout:
            self.node._peer_failed(peer)
            raise
        records = _records(reply.get("records"))
        return records[0] if records else None

    # --- the primary ---------------------------------------------------------------------------

    async def _write_here(
        self, key: bytes, value: bytes | None, ttl: float | None
    ) -> dict[str, Any]:
        key_id = ids.hash_key(key)
        if not self.is_primary(key_id):
            raise Busy("not the primary for this key (yet); look it up again")
        now = self.node.wall_clock()
        current = self.store.get(key)
        version = Version.next_after(
            current.version if current else None, int(now * 1000), self._me
        )
        if value is None:
            expires: float | None = now + self.config.tombstone_ttl
        else:
            expires = now + ttl if ttl is not None else None
        record = Record(key, value, version, expires)
        self.store.put(record)
        existed = current is not None and not current.is_tombstone and current.live(now)
        # Replicate before acknowledging: an acknowledged write is on every live replica.
        await self._push([record], self.next_nodes(self.config.replicas - 1))
        return {"version": [version.stamp, version.writer], "existed": existed}

    async def _push(self, records: list[Record], peers: Iterable[Peer]) -> list[Peer]:
        """Send records to peers (each keeps what is newer); return the peers that took them."""
        peers = [p for p in peers if p.id != self.node.id]

        async def one(peer: Peer) -> Peer | None:
            try:
                for batch in batches(records):
                    await self.node._call(
                        peer, "store_push", {"records": [r.to_wire() for r in batch]}
                    )
            except RpcTimeout:
                self.node._peer_failed(peer)
                return None
            except DhtError as exc:
                self.node.log.warning("push to %s failed: %s", peer, exc)
                return None
            return peer

        done = await asyncio.gather(*(one(p) for p in peers))
        return [p for p in done if p is not None]

    # --- handlers ------------------------------------------------------------------------------

    async def _rpc_put(self, args: dict[str, Any], src: Any) -> dict[str, Any]:
        key = _arg_key(args)
        value = args.get("value")
        if not isinstance(value, bytes):
            raise BadRequest("'value' must be the msgpack encoding of the value, as bytes")
        version, _ = await self.put(key, value, _arg_ttl(args))
        return {"version": [version.stamp, version.writer]}

    async def _rpc_get(self, args: dict[str, Any], src: Any) -> dict[str, Any]:
        record = await self.get(_arg_key(args))
        v = record.version
        return {"value": record.value, "version": [v.stamp, v.writer], "expires": record.expires_at}

    async def _rpc_delete(self, args: dict[str, Any], src: Any) -> dict[str, Any]:
        # A tombstone is written even for an absent key: it shadows any stray older replica.
        _, existed = await self.put(_arg_key(args), None, None)
        return {"existed": existed}

    async def _rpc_write(self, args: dict[str, Any], src: Any) -> dict[str, Any]:
        key = _arg_key(args)
        value = args.get("value")
        if value is not None:
            value = _arg_bytes(args, "value", MAX_VALUE)
        return await self._write_here(key, value, _arg_ttl(args))

    def _rpc_read(self, args: dict[str, Any], src: Any) -> dict[str, Any]:
        keys = args.get("keys")
        if not isinstance(keys, list) or len(keys) > 1000:
            raise BadRequest("'keys' must be a list of at most 1000 keys")
        out: list[list[object]] = []
        size = 0
        read = 0
        for key in keys:
            if not isinstance(key, bytes):
                raise BadRequest("keys are bytes")
            record = self.store.get(key)
            if record is not None:
                size += record.size() + 64
                if out and size > BATCH_BYTES:
                    break  # a full datagram: ``read`` tells the caller where to go on
                out.append(record.to_wire())
            read += 1
        return {"records": out, "read": read}

    def _rpc_push(self, args: dict[str, Any], src: Any) -> dict[str, Any]:
        applied = sum(self.store.put(r) for r in _records(args.get("records")))
        return {"applied": applied}

    def _digest(self, lo: int, hi: int) -> tuple[bytes, int]:
        """A hash of the (key, version) pairs in ``(lo, hi]``: equal digests, equal contents."""
        now = self.node.wall_clock()
        items = sorted((r.key, r.version) for r in self.store.in_range(lo, hi) if r.live(now))
        h = hashlib.sha1()
        for key, version in items:
            h.update(len(key).to_bytes(2, "big") + key)
            h.update(version.stamp.to_bytes(8, "big") + version.writer)
        return h.digest(), len(items)

    def _rpc_digest(self, args: dict[str, Any], src: Any) -> dict[str, Any]:
        digest, count = self._digest(*_arg_range(args))
        return {"digest": digest, "count": count}

    def _rpc_scan(self, args: dict[str, Any], src: Any) -> dict[str, Any]:
        """Records in ``(lo, hi]`` after key ``after``, with values or versions only, a page at
        a time: ``next`` is the key to continue after, nil at the end."""
        lo, hi = _arg_range(args)
        after = args.get("after")
        if after is not None and not isinstance(after, bytes):
            raise BadRequest("'after' must be a key or nil")
        values = bool(args.get("values"))
        now = self.node.wall_clock()
        records = sorted(
            (r for r in self.store.in_range(lo, hi) if r.live(now)), key=lambda r: r.key
        )
        if after is not None:
            records = [r for r in records if r.key > after]
        items: list[Any] = []
        size = 0
        for record in records:
            wire = record.to_wire() if values else [record.key, record.version.stamp,
                                                    record.version.writer]  # fmt: skip
            size += (record.size() if values else len(record.key)) + 64
            if items and size > BATCH_BYTES:
                return {"items": items, "next": items[-1][0]}
            items.append(wire)
        return {"items": items, "next": None}

    # --- hand-off and repair -------------------------------------------------------------------

    async def _scan(self, peer: Peer, lo: int, hi: int, *, values: bool) -> list[Any]:
        """Every page of a peer's scan of ``(lo, hi]``."""
        out: list[Any] = []
        after: bytes | None = None
        for _ in range(100_000):  # bounded: each page moves ``after`` forward
            reply = await self.node._call(
                peer,
                "store_scan",
                {"lo": ids.to_bytes(lo), "hi": ids.to_bytes(hi), "after": after, "values": values},
            )
            out.extend(reply["items"])
            after = reply["next"]
            if after is None:
                break
        return out

    async def after_join(self, successor: Peer) -> int:
        """Take from the successor every record outside ``(self, successor]``: our share."""
        items = await self._scan(successor, successor.id, self.node.id, values=True)
        taken = sum(self.store.put(r) for r in _records(items))
        self.node.log.info("took %d records from %s", taken, successor)
        return taken

    async def before_leave(self) -> None:
        """Hand everything we hold to our first r successors."""
        records = list(self.store.records())
        targets = self.next_nodes(self.config.replicas)
        if records and targets:
            took = await self._push(records, targets)
            self.node.log.info("handed %d records to %d successor(s)", len(records), len(took))

    async def sync_round(self) -> None:
        """One anti-entropy round: purge, sync our primary range, move what is not ours."""
        now = self.node.wall_clock()
        self.store.purge(now)
        ls = self.node.leafset
        pred = ls.predecessor
        if pred is not None:
            for peer in ls.successors[: self.config.replicas - 1]:
                try:
                    await self._sync_range(peer, pred.id, self.node.id)
                except (RpcTimeout, DhtError, KeyError, TypeError, ValueError) as exc:
                    self.node.log.debug("sync with %s failed: %s", peer, exc)
        await self._move_strays()

    async def _sync_range(self, peer: Peer, lo: int, hi: int) -> None:
        mine, _ = self._digest(lo, hi)
        reply = await self.node._call(
            peer, "store_digest", {"lo": ids.to_bytes(lo), "hi": ids.to_bytes(hi)}
        )
        if reply["digest"] == mine:
            return
        theirs = {
            bytes(key): Version(int(stamp), bytes(writer))
            for key, stamp, writer in await self._scan(peer, lo, hi, values=False)
        }
        now = self.node.wall_clock()
        ours = {r.key: r for r in self.store.in_range(lo, hi) if r.live(now)}
        push = [r for k, r in ours.items() if k not in theirs or r.version > theirs[k]]
        pull = [k for k, v in theirs.items() if k not in ours or v > ours[k].version]
        if push:
            await self._push(push, [peer])
        start = 0
        while start < len(pull):
            reply = await self.node._call(peer, "store_read", {"keys": pull[start : start + 500]})
            for record in _records(reply.get("records")):
                self.store.put(record)
            start += max(1, int(reply.get("read", 500)))  # a reply stops at a full datagram

    async def _move_strays(self) -> None:
        """Records outside ``(pred_r, self]`` go to where they belong, then leave us."""
        if self.responsible_low() is None:
            return
        strays = [r for r in self.store.records() if not self.holds(r.key_id)]
        for record in strays[:200]:  # a bounded share per round
            try:
                found = await self.node.lookup_id(record.key_id)
            except DhtError:
                continue
            targets = [found.owner, *found.successors][: self.config.replicas]
            if any(p.id == self.node.id for p in targets):
                continue  # our view of the ring disagrees with the lookup: keep it for now
            took = await self._push([record], targets)
            if len(took) == len(targets):
                self.store.remove(record.key)
