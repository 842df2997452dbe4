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
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

from . import ids, wire
from .admin import Verifier, load_or_create_cookie
from .errors import BadRequest, Busy, DhtError, Unavailable
from .lookup import MALFORMED, PEER_FAILURES, Lookup, LookupFailed, iterative_lookup
from .membership import FailureDetector, PeerMemory
from .net import Address, Network, UdpNetwork, check_peer_addr, format_addr, resolve
from .replication import Replicator, StoreConfig
from .routing import FingerTable, LeafSet, Peer, next_hop, peers_from_wire
from .rpc import NODE_RPC, RpcConfig, RpcEndpoint
from .storage import MAX_VALUE, DiskStore, MemoryStore, Store

log = logging.getLogger("udpdht.node")
T = TypeVar("T")


@dataclass(frozen=True)
class NodeConfig:
    leafset: int = 16  # L: L/2 successors and L/2 predecessors
    stabilize_period: float = 1.0  # mean seconds between maintenance rounds
    lookup_tries: int = 2  # sends per lookup hop before trying the next-best candidate
    lookup_width: int = 3  # candidates a hop returns (fallbacks when one is dead)
    max_hops: int = 64
    # Ids are SHA-1 of the address a node advertises, so a receiver checks a claimed id against
    # the datagram's source: placing a node at a chosen id then takes an address that hashes
    # there. A ring whose nodes have chosen ids (Server(node_id=...), simulations at given ids)
    # must turn this off on every node, and loses that protection (SECURITY.md).
    verify_ids: bool = True
    failure_strikes: int = 2  # failed calls in a row before a peer is declared dead


def _key_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


def _arg_id(args: dict[str, Any], name: str) -> int:
    raw = args.get(name)
    if not isinstance(raw, bytes) or len(raw) != ids.ID_BYTES:
        raise BadRequest(f"argument {name!r} must be a {ids.ID_BYTES}-byte id")
    return ids.from_bytes(raw)


class Node:
    """A DHT node. ``port=0`` binds an ephemeral port; ``node.addr`` tells which."""

    MAX_NOTIFIERS = 64  # recent notifiers remembered for hints (see _hint_for)
    FAILED_MEMORY = 30.0  # seconds a failed peer is not offered or taken as a hint
    STALL_GRACE = 10.0  # seconds after a stall of our own loop when failures do not count
    PEERS_FILE = "peers.json"  # the remembered peers, in the data dir
    SAVE_PEERS_EVERY = 30.0  # seconds between writes of that file (when it changed)
    MAX_REJOIN_WAIT = 30.0  # seconds between rejoin attempts, at most

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
        bootstrap: Sequence[Address] = (),
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
        # A node serves strangers: rate limits on unless the caller configures its own.
        self.rpc_config = rpc_config or NODE_RPC
        # The simulator passes a seeded rng so that a run repeats; request ids then come from
        # it too. A real node draws its timing jitter from its own Random and its request ids
        # from the OS.
        self._seeded_rng = rng
        self.rng = rng or random.Random()
        self._fixed_id = node_id
        self._maintenance_on = maintenance
        self.id = node_id if node_id is not None else 0
        self.addr: Address = (host, port)
        #: Where to rejoin from when every neighbour is lost (with the remembered peers).
        self.bootstrap: list[Address] = list(bootstrap)
        self._endpoint: RpcEndpoint | None = None
        self._started_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self.leafset = LeafSet(Peer(self.id, self.addr), self.config.leafset)
        self.fingers = FingerTable(self.id)
        self._next_finger = 0
        # Log records carry the node's id prefix (several nodes may share a process).
        self.log = logging.LoggerAdapter(log, {"node": "--------"})
        self._notifiers: OrderedDict[int, tuple[Peer, float]] = OrderedDict()
        self.detector = FailureDetector(self.config.failure_strikes, self.FAILED_MEMORY)
        peers_file = self.data_dir / self.PEERS_FILE if self.data_dir is not None else None
        self.memory = PeerMemory(peers_file, verify_ids=self.config.verify_ids)
        # Whether we belong to a ring with other nodes. A member whose tables empty has lost
        # contact (a partition, an overload): it rejoins, and never serves as a ring of one.
        self._member = False
        self._next_rejoin = 0.0
        self._rejoin_wait = self.config.stabilize_period
        self._next_save = 0.0
        self._checks: dict[tuple[str, int], asyncio.Task[Any]] = {}  # see _shared
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
        self._set_address(ep.addr)
        if self._fixed_id is not None and self.config.verify_ids and not self.peer.id_matches_addr:
            ep.close()
            self._endpoint = None
            raise ValueError(
                "a node with a chosen id needs NodeConfig(verify_ids=False), on every node of "
                "its ring: verifying nodes refuse ids that are not SHA-1 of the address"
            )
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
        self._verifier = Verifier(self.cookie, ids.to_bytes(self.id))
        for name, admin in (
            ("admin_join", self._admin_join),
            ("admin_leave", self._admin_leave),
            ("admin_shutdown", self._admin_shutdown),
        ):
            ep.register(name, admin)
        store: Store = DiskStore(self.data_dir) if self.data_dir is not None else MemoryStore()
        self._replicator = Replicator(self, store, self.store_config)
        self._replicator.register()
        if self.memory.load():
            # We were part of a ring before this start: rejoin it, never start a second one.
            self._member = True
            self.log.info("remembers %d peers of its ring; rejoins through them", len(self.memory))
        if self._maintenance_on:
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._maintain()))
            self._tasks.append(loop.create_task(self._sync_store()))
        self.log.info("node %s listening on %s", ids.short(self.id), format_addr(self.addr))

    def _set_address(self, addr: Address) -> None:
        """Name this node ``addr``; its id follows (unless chosen), and so do its tables."""
        self.addr = addr
        if self._fixed_id is None:
            self.id = ids.node_id_for(*addr)
        self.leafset = LeafSet(Peer(self.id, addr), self.config.leafset)
        self.fingers = FingerTable(self.id)
        self._next_finger = 0
        self.log = logging.LoggerAdapter(log, {"node": ids.short(self.id)})
        if self._verifier is not None:  # an admin signature names this id
            self._verifier = Verifier(self._verifier.cookie, ids.to_bytes(self.id))

    def advertise(self, addr: Address) -> None:
        """Name this node ``addr`` to its peers instead of the address it is bound to.

        For a node bound to a wildcard (``0.0.0.0``, ``::``): it lists itself in its answers to
        lookups, and the wildcard there would send every asker to its own machine. Its id
        becomes SHA-1 of ``addr`` (unless chosen), the id its peers check against the source of
        its datagrams. Call it after ``start`` and before ``join``, while no peer has seen the
        node's own entry.
        """
        if self.leafset.successors or self.leafset.predecessors:
            raise RuntimeError("advertise() must come before the node joins a ring")
        self._set_address(check_peer_addr(*addr))

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
            self.memory.save()
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
        # Unconfirmed: the successor proves itself below by answering ``neighbors``.
        found = await self.lookup_id(self.id, start=bootstrap, confirm=False)
        owner: Peer | None = found.owner
        if found.owner.id == self.id and found.owner.addr == self.addr:
            # Our own entry from before a restart, still in the ring's tables: our successor
            # is the node after it.
            owner = next((p for p in found.successors if p.id != self.id), None)
        elif found.owner.id == self.id:
            raise DhtError(f"node id {ids.to_hex(self.id)} is already taken by {found.owner}")
        if owner is None:
            raise DhtError("the ring knows no node but our own former self; try again later")
        succs, _, _ = await self._neighbors(owner)
        self.leafset.set_successors([owner, *succs])
        self._member = True
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
        self.memory.forget()  # we left on purpose: a restart starts afresh unless told where
        await self.stop()

    @property
    def isolated(self) -> bool:
        """Whether this node belonged to a ring with others and has lost every neighbour: it
        is rejoining, and serves no key meanwhile."""
        return self._member and not self.leafset.successors and not self.leafset.predecessors

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
        """Call a peer; a reply clears the failures counted against it (an error reply does
        not: a peer that only ever says no is of no use either)."""
        result = await self.endpoint.call(peer.addr, method, args, tries=tries or None)
        self.detector.answered(peer.id)
        return result

    def _peers(self, items: Any) -> list[Peer]:
        """A peer list a peer sent: bounded by L, every entry checked (routing.peers_from_wire).

        Raises ValueError; a handler turns it into BadRequest, a caller into a peer failure.
        """
        return peers_from_wire(items, self.config.leafset, verify_ids=self.config.verify_ids)

    def _arg_peers(self, args: dict[str, Any], name: str) -> list[Peer]:
        try:
            return self._peers(args.get(name, []))
        except ValueError as exc:
            raise BadRequest(f"argument {name!r}: {exc}") from None

    def _sender(self, args: dict[str, Any], src: Address) -> Peer:
        """The node that sent a request, from its claimed ``id`` and the datagram's source.

        With verify_ids the id must be SHA-1 of that source address: a stranger cannot claim
        an id it does not own (nor another node's id) to take a place in our tables.
        """
        claimed = _arg_id(args, "id")
        try:
            addr = check_peer_addr(*src)
        except ValueError as exc:
            raise BadRequest(f"cannot take the sender as a peer: {exc}") from None
        if self.config.verify_ids and claimed != ids.node_id_for(*addr):
            raise BadRequest(
                f"id {ids.short(claimed)} is not this sender's: a node's id is SHA-1 of its "
                f"address ({format_addr(addr)})"
            )
        return Peer(claimed, addr)

    async def _neighbors(
        self, peer: Peer, *, tries: int = 0
    ) -> tuple[list[Peer], list[Peer], Peer | None]:
        """A peer's successor list, predecessor list, and its hint for us (see _hint_for).

        Raises one of PEER_FAILURES.
        """
        reply = await self._call(peer, "neighbors", {"id": ids.to_bytes(self.id)}, tries=tries)
        if reply["id"] != ids.to_bytes(peer.id):
            raise ValueError(f"{peer} answered with another node's id")
        hint = reply.get("hint")
        hints = self._peers([hint]) if hint is not None else []  # a failed id check: none
        return self._peers(reply["succs"]), self._peers(reply["preds"]), next(iter(hints), None)

    async def _notify(self, peer: Peer) -> None:
        preds = [p.to_wire() for p in self.leafset.predecessors]
        with contextlib.suppress(*PEER_FAILURES):
            await self._call(peer, "notify", {"id": ids.to_bytes(self.id), "preds": preds})

    def _peer_failed(self, peer: Peer, exc: BaseException | None = None) -> None:
        """A call to ``peer`` failed with ``exc`` (None: no answer). It is forgotten, wherever
        it appears, once the failure detector has consistent evidence: two failures in a row
        (membership.FailureDetector), or one answer that makes no sense. A BUSY is no failure:
        the peer is alive and says so."""
        if isinstance(exc, Busy):
            return
        now = asyncio.get_running_loop().time()
        if isinstance(exc, MALFORMED):  # it answered, with nonsense: no need to ask again
            self.detector.declare_dead(peer.id, now)
        else:
            stalled = now - self.endpoint.last_stall < self.STALL_GRACE if self.running else False
            if not self.detector.failed(peer.id, now, stalled=stalled):
                self.log.debug("peer %s did not answer; suspected", peer)
                return
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
                self._remember_peers(start)
                self.replicator.track_range()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not silently stop maintenance for good
                self.log.exception("maintenance round failed")
            self.log.debug("maintenance round took %.3f s", loop.time() - start)

    def _remember_peers(self, now: float) -> None:
        peers = self.leafset.peers()
        if peers:
            self._member = True
        self.memory.remember(peers, self.id)
        if now >= self._next_save:
            self._next_save = now + self.SAVE_PEERS_EVERY
            self.memory.save()

    def _fallback_successors(self) -> list[Peer]:
        """With no successor left, the nodes we know of, nearest clockwise first."""
        known = {p.id: p for p in [*self.leafset.predecessors, *self.fingers.distinct()]}
        known.pop(self.id, None)
        return sorted(known.values(), key=lambda p: ids.distance(self.id, p.id))

    async def _first_answering(
        self, candidates: list[Peer]
    ) -> tuple[Peer, tuple[list[Peer], list[Peer], Peer | None]] | None:
        """The nearest of ``candidates`` (nearest first) that answers ``neighbors``, with its
        answer. The first is asked alone; only if it fails are the others asked, all at once,
        so that a run of dead successors costs one timeout, not one each."""
        first = candidates[0]
        try:
            return first, await self._neighbors(first)
        except PEER_FAILURES as exc:
            self._peer_failed(first, exc)
        rest = candidates[1 : self.leafset.half + 2]
        answers = await asyncio.gather(*(self._neighbors(p) for p in rest), return_exceptions=True)
        found = None
        for peer, answer in zip(rest, answers, strict=True):
            if isinstance(answer, PEER_FAILURES):
                self._peer_failed(peer, answer)
            elif isinstance(answer, BaseException):
                raise answer
            elif found is None:
                found = peer, answer
        return found

    async def stabilize(self) -> None:
        ls = self.leafset
        # The first successor that answers. One that does not is skipped this round (and
        # dropped once the failure detector is sure); the list is rebuilt from the one that
        # answers, so it holds only nodes after it. None answers: the nearest node we know.
        tried = list(ls.successors)
        found = await self._first_answering(tried) if tried else None
        if found is None:
            fallback = [p for p in self._fallback_successors() if p not in tried]
            found = await self._first_answering(fallback) if fallback else None
        if found is None:
            if self.isolated:
                await self._rejoin()
            return  # alone: a ring of one, or one that waits to rejoin
        succ, (succs, preds, hint) = found
        new_list = [succ, *succs]
        # Nodes between us and the successor: those it knows (its predecessors and its hint
        # for us), and those we know ourselves (after many joins at once, the first node heard
        # from every joiner, but its successor may know none of the nodes just after it).
        mine = self._nearest_after(self.id, succ.id)
        candidates = [p for p in (hint, *preds, mine) if p is not None]
        now = asyncio.get_running_loop().time()
        # A node we declared dead lately is not tried again, except the successor's own
        # predecessor: the successor took it on after it answered, so it is back (a node
        # that froze for a while, say), and our memory of its death must not keep it out.
        back = preds[0].id if preds else None
        between = [
            p
            for p in candidates
            if ids.in_interval(p.id, self.id, succ.id)
            and (p.id == back or not self.detector.recently_dead(p.id, now))
        ]
        if between:
            nearest = min(between, key=lambda p: ids.distance(self.id, p.id))
            # Adopt a node between us and our successor only once it has answered (Zave).
            try:
                nearer_succs, _, _ = await self._neighbors(nearest)
            except PEER_FAILURES as exc:
                self._peer_failed(nearest, exc)
            else:
                succ, new_list = nearest, [nearest, *nearer_succs]
        ls.set_successors(new_list)
        self._member = True
        await self._notify(succ)

    async def _rejoin(self) -> None:
        """Every neighbour is lost: join again through the peers we remember and the bootstrap
        addresses, a few per round, backing off up to MAX_REJOIN_WAIT between attempts."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_rejoin:
            return
        self._rejoin_wait = min(2 * self._rejoin_wait, self.MAX_REJOIN_WAIT)
        self._next_rejoin = loop.time() + self._rejoin_wait
        addrs = list(dict.fromkeys([*(p.addr for p in self.memory.peers()), *self.bootstrap]))
        addrs = [a for a in addrs if a != self.addr]
        for addr in addrs[:8]:
            try:
                await self.join(addr)
            except (DhtError, *PEER_FAILURES) as exc:
                self.log.debug("rejoin through %s failed: %s", format_addr(addr), exc)
                continue
            self.log.info("rejoined the ring through %s", format_addr(addr))
            self._rejoin_wait = self.config.stabilize_period
            return
        self.log.warning(
            "lost contact with the ring: none of %d known addresses answered; trying again in "
            "%.0f s (a node started with --new-ring begins a new ring instead)",
            len(addrs),
            self._rejoin_wait,
        )

    async def check_predecessor(self) -> None:
        pred = self.leafset.predecessor
        if pred is None:
            return
        try:
            await self._call(pred, "ping")
        except PEER_FAILURES as exc:
            self._peer_failed(pred, exc)

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
                    # Unconfirmed, but checked against what we know (lookup.plausible_owner):
                    # a finger is only a shortcut; the owner of a key is always confirmed.
                    owner = (await self.lookup_id(start, confirm=False)).owner
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
        if self.isolated:
            raise Unavailable("this node has lost contact with its ring and is rejoining")
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

    async def lookup_id(
        self, key: int, *, start: Address | None = None, confirm: bool = True
    ) -> Lookup:
        """Find the owner of a ring position; ``start`` begins at a node given by address.

        ``confirm``: ask the owner itself before believing whoever named it (lookup.py). The
        store skips it: the owner checks its own responsibility when it gets the read or write.
        """
        return await iterative_lookup(self, key, start=start, confirm=confirm)

    # --- handlers ------------------------------------------------------------------------------

    def _rpc_ping(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        if args.get("addr") is True:
            # The address we name ourselves by: a caller that reached us under another one (a
            # wildcard socket has several) learns the one our id belongs to. Only on request:
            # a plain ping's answer stays within three times its size (no token needed).
            return {"id": ids.to_bytes(self.id), "addr": list(self.addr)}
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
        return [p for p in known if not self.detector.recently_dead(p.id, now)]

    async def _rpc_notify(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        """Rectify: adopt the notifier as predecessor when it is closer, or ours is dead.

        Zave's rectify adopts a closer notifier outright. Here it must first answer
        ``neighbors`` and name us as its successor: otherwise a stranger could sit in front of
        us with a socket that only answers ``ping`` and make every write to our range fail.
        """
        peer = self._sender(args, src)
        preds = self._arg_peers(args, "preds")
        if peer.id == self.id:
            return {}
        loop = asyncio.get_running_loop()
        self._notifiers.pop(peer.id, None)
        self._notifiers[peer.id] = (peer, loop.time())
        if len(self._notifiers) > self.MAX_NOTIFIERS:
            self._notifiers.popitem(last=False)
        ls = self.leafset
        pred = ls.predecessor
        if pred is not None and pred.id == peer.id:  # our predecessor, as every round
            ls.set_predecessors([peer, *preds])
            return {}
        if (
            pred is not None
            and not ids.in_interval(peer.id, pred.id, self.id)
            and not await self._predecessor_dead(pred)
        ):
            return {}  # ours answers, and is closer: keep it
        verified = await self._shared(("verify", peer.id), self._verify_predecessor(peer))
        if verified is None:
            return {}  # it does not answer, or does not take us for its successor
        # The calls took time: another notify may have brought a closer one meanwhile.
        pred = ls.predecessor
        if pred is not None and not ids.in_interval(peer.id, pred.id, self.id, left_open=False):
            return {}  # [pred, self): it, or one between
        ls.set_predecessors([peer, *verified])
        self._member = True
        return {}

    async def _verify_predecessor(self, peer: Peer) -> list[Peer] | None:
        """``peer``'s predecessors if it answers ``neighbors`` naming us as its successor, else
        None. Few tries: the notify's source may be forged, and the victim of a forgery should
        get no more datagrams from us than the forger sent."""
        try:
            succs, preds, _ = await self._neighbors(peer, tries=self.config.lookup_tries)
        except PEER_FAILURES:
            return None
        return preds if succs and succs[0].id == self.id else None

    async def _shared(self, key: tuple[str, int], coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` unless the same check (``key``) is already running, in which case wait
        for that one's answer: a flood of notifies costs one call per peer, not one each."""
        task = self._checks.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(coro)
            self._checks[key] = task
            task.add_done_callback(lambda _: self._checks.pop(key, None))
        else:
            coro.close()
        return cast(T, await asyncio.shield(task))

    async def _predecessor_dead(self, pred: Peer) -> bool:
        """Whether ``pred`` is no longer our predecessor after a ping (failed, and declared
        dead). Every notify that asks meanwhile shares the one ping."""
        return await self._shared(("ping", pred.id), self._ping_predecessor(pred))

    async def _ping_predecessor(self, pred: Peer) -> bool:
        try:
            await self._call(pred, "ping", tries=self.config.lookup_tries)
            return False
        except PEER_FAILURES as exc:
            self._peer_failed(pred, exc)
        current = self.leafset.predecessor
        return current is None or current.id != pred.id

    def _rpc_find(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        done, nodes = self.local_find(_arg_id(args, "key"))
        # The owner and what follows it: enough for the replicas, and a bounded answer.
        nodes = nodes[: self.leafset.half + 1]
        return {"id": ids.to_bytes(self.id), "done": done, "nodes": [p.to_wire() for p in nodes]}

    def _rpc_leaving(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        """A neighbour leaves and hands us its lists, so the ring closes at once.

        Only the leaving node may say so: the id must be a node of our tables whose address is
        the datagram's source. (Anyone else naming it would make us drop a live neighbour.)
        """
        gone_id = _arg_id(args, "id")
        ls = self.leafset
        gone = next((p for p in [*ls.peers(), *self.fingers.distinct()] if p.id == gone_id), None)
        if gone is None:
            return {}  # not ours to forget: nothing to do
        if gone.addr != src:
            raise BadRequest("only the leaving node itself may say that it leaves")
        preds = self._arg_peers(args, "preds") if "preds" in args else None
        succs = self._arg_peers(args, "succs") if "succs" in args else None
        was_neighbour = any(p.id == gone.id for p in ls.peers())
        if preds is not None and ls.predecessor is not None and ls.predecessor.id == gone.id:
            ls.set_predecessors(preds)
        if succs is not None and ls.successor is not None:
            ids_before = [p.id for p in ls.successors]
            if gone.id in ids_before:
                kept = ls.successors[: ids_before.index(gone.id)]
                ls.set_successors([*kept, *succs])
        ls.remove(gone.id)
        self.fingers.remove(gone.id)
        self._notifiers.pop(gone.id, None)  # and no hint may point at it any more
        if was_neighbour:
            self.log.info("peer %s left", gone)
            if not ls.successors and not ls.predecessors:
                self._member = False  # the others left on purpose: a ring of one, rightly
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
        try:
            if type(target) is not list or len(target) != 2:
                raise ValueError("'addr' must be [host, port]")
            addr = check_peer_addr(*target)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if addr == self.addr:
            raise BadRequest("that is this node itself: give the address of another ring's node")
        if self.leafset.successors or self.leafset.predecessors:
            raise BadRequest("this node is already in a ring; make it leave first")
        try:
            await self.join(addr)
        except (DhtError, *PEER_FAILURES) as exc:
            raise Unavailable(f"could not join through {format_addr(addr)}: {exc}") from None
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
            "isolated": self.isolated,
            "store": self.replicator.counts(),
            "rpc": self.endpoint.stats.as_dict(),
        }
