"""The Chord node: one RPC endpoint, the leafset and fingers, maintenance, lookups, leave.

Maintenance follows the Chord paper with Zave's corrections ("Reasoning about identifier spaces:
how to make Chord correct", 2017):

* **stabilize**: ask the first live successor for its neighbours; a dead one is dropped and the
  next tried. The successor list becomes ``[s] + s's list`` (cut to L/2, cut where it wraps past
  us). If ``s`` knows of nodes between us and it, the nearest is asked directly and adopted
  only if it answers. Then ``s`` is notified.
* **rectify** (on a notify from ``n``): ``n`` becomes the predecessor if there is none, if it
  lies between the current one and us, or if the current one no longer answers. The
  predecessor half of the leafset is replaced by ``[n] + n's predecessors``.
* **check_predecessor** pings the predecessor; a dead one is dropped and the next takes its place.
* **fix_fingers** refreshes one finger per round that needs a lookup; fingers the leafset can
  answer for are filled for free.

Every period is drawn uniformly from ½–1½ × its mean, so nodes do not fall into lockstep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from . import ids, wire
from .admin import Verifier, load_or_create_cookie
from .errors import BadRequest, DhtError, Unavailable
from .lookup import PEER_FAILURES, Lookup, LookupFailed, iterative_lookup
from .net import Address, Network, UdpNetwork, format_addr, resolve
from .replication import Replicator, StoreConfig
from .routing import FingerTable, LeafSet, Peer, next_hop, peers_from_wire
from .rpc import RpcConfig, RpcEndpoint
from .storage import MAX_VALUE, DiskStore, MemoryStore, Store

log = logging.getLogger("udpdht.node")


@dataclass(frozen=True)
class NodeConfig:
    leafset: int = 16  # L: L/2 successors and L/2 predecessors
    stabilize_period: float = 1.0  # mean seconds between maintenance rounds
    lookup_tries: int = 2  # sends per lookup hop before trying the next-best candidate
    lookup_width: int = 3  # candidates a hop returns (fallbacks when one is dead)
    max_hops: int = 64


def _key_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


def _arg_id(args: dict[str, Any], name: str) -> int:
    raw = args.get(name)
    if not isinstance(raw, bytes) or len(raw) != ids.ID_BYTES:
        raise BadRequest(f"argument {name!r} must be a {ids.ID_BYTES}-byte id")
    return ids.from_bytes(raw)


def _arg_peers(args: dict[str, Any], name: str) -> list[Peer]:
    try:
        return peers_from_wire(args.get(name, []))
    except ValueError as exc:
        raise BadRequest(f"argument {name!r}: {exc}") from None


class Node:
    """A DHT node. ``port=0`` binds an ephemeral port; ``node.addr`` tells which."""

    MAX_NOTIFIERS = 64  # recent notifiers remembered for hints (see _hint_for)
    FAILED_MEMORY = 30.0  # seconds a failed peer is not offered or taken as a hint

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        data_dir: str | Path | None = None,
        node_id: int | None = None,
        config: NodeConfig | None = None,
        store_config: StoreConfig | None = None,
        network: Network | None = None,
        rpc_config: RpcConfig | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        maintenance: bool = True,
        cookie: bytes | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.config = config or NodeConfig()
        self.store_config = store_config or StoreConfig()
        if not 1 <= self.store_config.replicas <= self.config.leafset // 2 + 1:
            raise ValueError("replicas must be 1..L/2+1: replicas live on the successor list")
        # Values expire by the wall clock, which all nodes share; the simulator passes one
        # derived from its virtual time. Everything else here runs on the loop's clock.
        self.wall_clock = wall_clock
        self.network: Network = network or UdpNetwork()
        self.rpc_config = rpc_config
        # The simulator passes a seeded rng so that a run repeats; request ids then come from
        # it too. A real node draws its timing jitter from its own Random and its request ids
        # from the OS.
        self._seeded_rng = rng
        self.rng = rng or random.Random()
        self._fixed_id = node_id
        self._maintenance_on = maintenance
        self.id = node_id if node_id is not None else 0
        self.addr: Address = (host, port)
        self._endpoint: RpcEndpoint | None = None
        self._started_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self.leafset = LeafSet(Peer(self.id, self.addr), self.config.leafset)
        self.fingers = FingerTable(self.id)
        self._next_finger = 0
        # Log records carry the node's id prefix (several nodes may share a process).
        self.log = logging.LoggerAdapter(log, {"node": "--------"})
        self._notifiers: OrderedDict[int, tuple[Peer, float]] = OrderedDict()
        self._failed: dict[int, float] = {}  # peer id -> until when it is not a hint
        self._replicator: Replicator | None = None
        # The admin secret: given, or kept in the data dir, or made up for this run.
        self.cookie = cookie
        self._verifier: Verifier | None = None
        self.finished = asyncio.Event()  # set once the node has stopped (leave, shutdown, stop)

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def endpoint(self) -> RpcEndpoint:
        if self._endpoint is None:
            raise RuntimeError("node is not started")
        return self._endpoint

    @property
    def running(self) -> bool:
        return self._endpoint is not None and not self._endpoint.closed

    @property
    def peer(self) -> Peer:
        return self.leafset.own

    async def start(self) -> None:
        if self._endpoint is not None:
            raise RuntimeError("node already started")
        ep = await RpcEndpoint.bind(
            self.network, (self.host, self.port), config=self.rpc_config, rng=self._seeded_rng
        )
        self._endpoint = ep
        self.addr = ep.addr
        if self._fixed_id is None:
            self.id = ids.node_id_for(*self.addr)
        self.leafset = LeafSet(Peer(self.id, self.addr), self.config.leafset)
        self.fingers = FingerTable(self.id)
        self.log = logging.LoggerAdapter(log, {"node": ids.short(self.id)})
        self._started_at = asyncio.get_running_loop().time()
        # Reads are idempotent: a retry may simply run them again, so their replies are not
        # cached. notify and leaving change state, but applying either twice is harmless.
        for name, handler in (
            ("ping", self._rpc_ping),
            ("status", self._rpc_status),
            ("neighbors", self._rpc_neighbors),
            ("notify", self._rpc_notify),
            ("find", self._rpc_find),
            ("leaving", self._rpc_leaving),
        ):
            ep.register(name, handler, idempotent=True)
        ep.register("lookup", self._rpc_lookup)  # several hops: a retry must not start another
        if self.cookie is None:
            self.cookie = (
                load_or_create_cookie(self.data_dir)
                if self.data_dir is not None
                else secrets.token_bytes(32)
            )
        self._verifier = Verifier(self.cookie)
        for name, admin in (
            ("admin_join", self._admin_join),
            ("admin_leave", self._admin_leave),
            ("admin_shutdown", self._admin_shutdown),
        ):
            ep.register(name, admin)
        store: Store = DiskStore(self.data_dir) if self.data_dir is not None else MemoryStore()
        self._replicator = Replicator(self, store, self.store_config)
        self._replicator.register()
        if self._maintenance_on:
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._maintain()))
            self._tasks.append(loop.create_task(self._sync_store()))
        self.log.info("node %s listening on %s", ids.short(self.id), format_addr(self.addr))

    def advertise(self, addr: Address) -> None:
        """Name this node ``addr`` to its peers instead of the address it is bound to.

        For a node bound to a wildcard (``0.0.0.0``, ``::``): it lists itself in its answers to
        lookups, and the wildcard there would send every asker to its own machine. Call it
        after ``start`` and before ``join``, while no peer has seen the node's own entry.
        """
        if self.leafset.successors or self.leafset.predecessors:
            raise RuntimeError("advertise() must come before the node joins a ring")
        self.addr = addr
        self.leafset = LeafSet(Peer(self.id, addr), self.config.leafset)

    async def stop(self) -> None:
        """Stop at once (a crash, as far as the ring can tell). See :meth:`leave`."""
        # Not the task running this (an admin's shutdown or leave runs as one of them).
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        self._tasks = []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        ep, self._endpoint = self._endpoint, None
        if ep is not None:
            ep.close()
            await ep.wait_closed()
        if self._replicator is not None:
            self._replicator.store.close()
            self._replicator = None
        self.finished.set()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def join(self, bootstrap: Address) -> None:
        """Join the ring that ``bootstrap`` belongs to."""
        if isinstance(self.network, UdpNetwork):
            bootstrap = await resolve(bootstrap)
        found = await self.lookup_id(self.id, start=bootstrap)
        owner: Peer | None = found.owner
        if found.owner.id == self.id and found.owner.addr == self.addr:
            # Our own entry from before a restart, still in the ring's tables: our successor
            # is the node after it.
            owner = next((p for p in found.successors if p.id != self.id), None)
        elif found.owner.id == self.id:
            raise DhtError(f"node id {ids.to_hex(self.id)} is already taken by {found.owner}")
        if owner is None:
            raise DhtError("the ring knows no node but our own former self; try again later")
        succs, _ = await self._neighbors(owner)
        self.leafset.set_successors([owner, *succs])
        self.log.info("joined the ring: successor %s", owner)
        # Tell the successor now rather than at the next round: from then on it refuses writes
        # for our share of its keys, so the records fetched next include every acknowledged one.
        await self._notify(owner)
        with contextlib.suppress(*PEER_FAILURES):
            await self.replicator.after_join(owner)

    async def leave(self) -> None:
        """Leave gracefully: tell both neighbours so the ring closes at once, then stop."""
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await self.replicator.before_leave()
        ls = self.leafset
        me = ids.to_bytes(self.id)
        # The successor learns our predecessors, the predecessor our successors; in a ring of
        # two they are one node and get one message with both. Every other node of the leafset
        # just learns that we are gone, so none of them wastes a timeout on us.
        messages: dict[int, tuple[Peer, dict[str, Any]]] = {
            p.id: (p, {"id": me}) for p in ls.peers()
        }
        if ls.successor is not None:
            messages[ls.successor.id][1]["preds"] = [p.to_wire() for p in ls.predecessors]
        if ls.predecessor is not None:
            messages[ls.predecessor.id][1]["succs"] = [p.to_wire() for p in ls.successors]
        calls = [self._call(peer, "leaving", args, tries=2) for peer, args in messages.values()]
        await asyncio.gather(*calls, return_exceptions=True)
        self.log.info("left the ring")
        await self.stop()

    # --- the key-value store -------------------------------------------------------------------

    @property
    def replicator(self) -> Replicator:
        if self._replicator is None:
            raise RuntimeError("node is not started")
        return self._replicator

    async def put(self, key: str | bytes, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` (any msgpack value) under ``key`` on its r replicas."""
        data = wire.pack_value(value, MAX_VALUE)
        await self.replicator.put(_key_bytes(key), data, ttl)

    async def get(self, key: str | bytes) -> Any:
        """The value of ``key``; KeyNotFound when it has none."""
        record = await self.replicator.get(_key_bytes(key))
        assert record.value is not None
        return wire.unpack_value(record.value)

    async def delete(self, key: str | bytes) -> bool:
        """Delete ``key``; returns whether it had a value."""
        _, existed = await self.replicator.put(_key_bytes(key), None, None)
        return existed

    async def _sync_store(self) -> None:
        period = self.store_config.sync_period
        while True:
            await asyncio.sleep(period * (0.5 + self.rng.random()))
            try:
                await self.replicator.sync_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("store sync round failed")

    # --- calling peers -------------------------------------------------------------------------

    async def _call(
        self, peer: Peer, method: str, args: dict[str, Any] | None = None, *, tries: int = 0
    ) -> Any:
        return await self.endpoint.call(peer.addr, method, args, tries=tries or None)

    async def _neighbors(self, peer: Peer) -> tuple[list[Peer], list[Peer]]:
        """A peer's successor list, and its predecessor list with its hint for us in front.

        Raises one of PEER_FAILURES.
        """
        reply = await self._call(peer, "neighbors", {"id": ids.to_bytes(self.id)})
        preds = peers_from_wire(reply["preds"])
        if reply.get("hint") is not None:
            preds.insert(0, Peer.from_wire(reply["hint"]))
        return peers_from_wire(reply["succs"]), preds

    async def _notify(self, peer: Peer) -> None:
        preds = [p.to_wire() for p in self.leafset.predecessors]
        with contextlib.suppress(*PEER_FAILURES):
            await self._call(peer, "notify", {"id": ids.to_bytes(self.id), "preds": preds})

    def _peer_failed(self, peer: Peer) -> None:
        """Forget a node that did not answer, wherever it appears."""
        now = asyncio.get_running_loop().time()
        self._failed.pop(peer.id, None)  # re-insert: the dict stays ordered by expiry
        self._failed[peer.id] = now + self.FAILED_MEMORY
        while next(iter(self._failed.values())) < now:
            self._failed.pop(next(iter(self._failed)))
        in_leafset = self.leafset.remove(peer.id)
        in_fingers = self.fingers.remove(peer.id)
        self._notifiers.pop(peer.id, None)
        if in_leafset or in_fingers:
            self.log.info("peer %s failed; removed", peer)

    # --- maintenance ---------------------------------------------------------------------------

    async def _maintain(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.config.stabilize_period
        while True:
            await asyncio.sleep(period * (0.5 + self.rng.random()))
            start = loop.time()
            try:
                await self.stabilize()
                await self.check_predecessor()
                await self.fix_fingers()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not silently stop maintenance for good
                self.log.exception("maintenance round failed")
            self.log.debug("maintenance round took %.3f s", loop.time() - start)

    def _fallback_successor(self) -> Peer | None:
        """With no successor left, the nearest node we know of clockwise."""
        known = self.leafset.predecessors + self.fingers.distinct()
        known = [p for p in known if p.id != self.id]
        if not known:
            return None
        return min(known, key=lambda p: ids.distance(self.id, p.id))

    async def stabilize(self) -> None:
        ls = self.leafset
        for _ in range(ls.half * 2 + 2):  # each failure removes a node, so this ends
            succ = ls.successor or self._fallback_successor()
            if succ is None:
                return  # alone: a ring of one
            try:
                succs, preds = await self._neighbors(succ)
            except PEER_FAILURES:
                self._peer_failed(succ)
                continue
            break
        else:
            return
        new_list = [succ, *succs]
        # Nodes between us and the successor: those it knows (its predecessors and its hint
        # for us), and those we know ourselves (after many joins at once, the first node heard
        # from every joiner, but its successor may know none of the nodes just after it).
        mine = self._nearest_after(self.id, succ.id)
        candidates = [*preds, mine] if mine is not None else preds
        between = [
            p
            for p in candidates
            if ids.in_interval(p.id, self.id, succ.id) and not self._recently_failed(p.id)
        ]
        if between:
            nearest = min(between, key=lambda p: ids.distance(self.id, p.id))
            # Adopt a node between us and our successor only once it has answered (Zave).
            try:
                nearer_succs, _ = await self._neighbors(nearest)
            except PEER_FAILURES:
                self._peer_failed(nearest)
            else:
                succ, new_list = nearest, [nearest, *nearer_succs]
        ls.set_successors(new_list)
        await self._notify(succ)

    async def check_predecessor(self) -> None:
        pred = self.leafset.predecessor
        if pred is None:
            return
        try:
            await self._call(pred, "ping")
        except PEER_FAILURES:
            self._peer_failed(pred)

    async def fix_fingers(self) -> None:
        """Refresh fingers from where the last round stopped, up to one lookup's worth."""
        for _ in range(ids.BITS):
            i = self._next_finger
            start = self.fingers.start(i)
            if self.leafset.covers(start):
                owner = self.leafset.owner(start)[0]
                looked_up = False
            else:
                try:
                    owner = (await self.lookup_id(start)).owner
                except (LookupFailed, *PEER_FAILURES):
                    return
                looked_up = True
            nxt = self.fingers.set(i, owner) if owner.id != self.id else i + 1
            self._next_finger = nxt % ids.BITS
            if looked_up or nxt >= ids.BITS:
                return

    # --- lookups -------------------------------------------------------------------------------

    def local_find(self, key: int) -> tuple[bool, list[Peer]]:
        """One routing step at this node (see routing.next_hop)."""
        return next_hop(
            self.leafset,
            self.fingers,
            key,
            width=self.config.lookup_width,
            min_owners=self.store_config.replicas,
        )

    async def lookup(self, key: str | bytes) -> Lookup:
        """Find the owner of a key, with the hop trace."""
        return await self.lookup_id(ids.hash_key(key))

    async def lookup_id(self, key: int, *, start: Address | None = None) -> Lookup:
        """Find the owner of a ring position; ``start`` begins at a node given by address."""
        return await iterative_lookup(self, key, start=start)

    # --- handlers ------------------------------------------------------------------------------

    def _rpc_ping(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        return {"id": ids.to_bytes(self.id)}

    def _rpc_status(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        return self.status()

    def _rpc_neighbors(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        ls = self.leafset
        reply: dict[str, Any] = {
            "id": ids.to_bytes(self.id),
            "succs": [p.to_wire() for p in ls.successors],
            "preds": [p.to_wire() for p in ls.predecessors],
        }
        if "id" in args:
            hint = self._hint_for(_arg_id(args, "id"))
            reply["hint"] = hint.to_wire() if hint is not None else None
        return reply

    def _hint_for(self, asker: int) -> Peer | None:
        """The nearest node we know that follows ``asker`` and precedes us.

        When many nodes join at once they all start out with the same successor, which then
        hears from every one of them. Passing on the best of what it heard lets each find its
        place in a round or two, instead of creeping back L/2 nodes per round along the
        predecessor lists. The asker adopts a hint only after it answers (Zave's rule).
        """
        return self._nearest_after(asker, self.id)

    def _nearest_after(self, low: int, high: int) -> Peer | None:
        """The known node nearest after ``low`` and strictly before ``high``, if any."""
        between = [p for p in self._contacts() if ids.in_interval(p.id, low, high)]
        return min(between, key=lambda p: ids.distance(low, p.id), default=None)

    def _contacts(self) -> list[Peer]:
        """Nodes we know beyond the successor list: recent notifiers, predecessors, fingers."""
        now = asyncio.get_running_loop().time()
        horizon = 3 * self.config.stabilize_period
        while self._notifiers and next(iter(self._notifiers.values()))[1] < now - horizon:
            self._notifiers.popitem(last=False)
        known = [p for p, _ in self._notifiers.values()]
        known += self.leafset.predecessors + self.fingers.distinct()
        return [p for p in known if not self._recently_failed(p.id)]

    def _recently_failed(self, peer_id: int) -> bool:
        return self._failed.get(peer_id, 0.0) > asyncio.get_running_loop().time()

    async def _rpc_notify(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        """Rectify: adopt the notifier as predecessor when it is closer, or ours is dead."""
        peer = Peer(_arg_id(args, "id"), src)
        preds = _arg_peers(args, "preds")
        if peer.id == self.id:
            return {}
        self._notifiers.pop(peer.id, None)
        self._notifiers[peer.id] = (peer, asyncio.get_running_loop().time())
        if len(self._notifiers) > self.MAX_NOTIFIERS:
            self._notifiers.popitem(last=False)
        pred = self.leafset.predecessor
        if (
            pred is not None
            and pred.id != peer.id
            and not ids.in_interval(peer.id, pred.id, self.id)
        ):
            try:
                await self._call(pred, "ping", tries=self.config.lookup_tries)
                return {}  # ours is alive and closer: keep it
            except PEER_FAILURES:
                self._peer_failed(pred)
            # The ping took time: another notify may have brought a closer one meanwhile.
            pred = self.leafset.predecessor
            if pred is not None and not ids.in_interval(peer.id, pred.id, self.id):
                return {}
        self.leafset.set_predecessors([peer, *preds])
        return {}

    def _rpc_find(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        done, nodes = self.local_find(_arg_id(args, "key"))
        return {"id": ids.to_bytes(self.id), "done": done, "nodes": [p.to_wire() for p in nodes]}

    def _rpc_leaving(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        """A neighbour leaves and hands us its lists, so the ring closes at once."""
        gone = Peer(_arg_id(args, "id"), src)
        ls = self.leafset
        if "preds" in args and ls.predecessor is not None and ls.predecessor.id == gone.id:
            ls.set_predecessors(_arg_peers(args, "preds"))
        if "succs" in args and ls.successor is not None:
            ids_before = [p.id for p in ls.successors]
            if gone.id in ids_before:
                kept = ls.successors[: ids_before.index(gone.id)]
                ls.set_successors([*kept, *_arg_peers(args, "succs")])
        ls.remove(gone.id)
        self.fingers.remove(gone.id)
        self._notifiers.pop(gone.id, None)  # and no hint may point at it any more
        self.log.info("peer %s left", gone)
        return {}

    async def _rpc_lookup(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        """A client's lookup, run from this node."""
        key = args.get("key")
        if not isinstance(key, bytes | str):
            raise BadRequest("argument 'key' must be bytes or str")
        found = await self.lookup(key)
        return {
            "key_id": ids.to_bytes(ids.hash_key(key)),
            "owner": found.owner.to_wire(),
            "hops": [[h.peer.to_wire(), h.rtt_s] for h in found.hops],
            "successors": [p.to_wire() for p in found.successors],
        }

    # --- admin (cookie-authenticated) -----------------------------------------------------------

    def _authorized(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        assert self._verifier is not None
        return self._verifier.verify(method, args, self.wall_clock())

    async def _admin_join(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        rest = self._authorized("admin_join", args)
        target = rest.get("addr")
        if not (isinstance(target, list) and len(target) == 2 and isinstance(target[0], str)):
            raise BadRequest("'addr' must be [host, port]")
        if (target[0], target[1]) == self.addr:
            raise BadRequest("that is this node itself: give the address of another ring's node")
        if self.leafset.successors or self.leafset.predecessors:
            raise BadRequest("this node is already in a ring; make it leave first")
        try:
            await self.join((target[0], int(target[1])))
        except DhtError as exc:
            raise Unavailable(
                f"could not join through {format_addr(tuple(target))}: {exc}"
            ) from None
        succ = self.leafset.successor
        return {"successor": succ.to_wire() if succ is not None else None}

    def _after_reply(self, coro: Any) -> None:
        """Run ``coro`` once the current reply has gone out."""
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, lambda: self._tasks.append(loop.create_task(coro)))

    def _admin_leave(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        self._authorized("admin_leave", args)
        self.log.info("leaving the ring at an admin's request from %s", format_addr(src))
        self._after_reply(self.leave())
        return {"leaving": True}

    def _admin_shutdown(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        self._authorized("admin_shutdown", args)
        self.log.info("shutting down at an admin's request from %s", format_addr(src))
        self._after_reply(self.stop())
        return {"stopping": True}

    # --- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The status object of INTERFACES.md."""
        ls = self.leafset
        pred = ls.predecessor
        return {
            "id": ids.to_hex(self.id),
            "addr": format_addr(self.addr),
            "uptime_s": round(asyncio.get_running_loop().time() - self._started_at, 3),
            "predecessor": pred.info() if pred is not None else None,
            "successors": [p.info() for p in ls.successors],
            "predecessors": [p.info() for p in ls.predecessors],
            "fingers": [p.info() for p in self.fingers.distinct()],
            "store": self.replicator.counts(),
            "rpc": self.endpoint.stats.as_dict(),
        }
