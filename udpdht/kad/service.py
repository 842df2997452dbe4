"""A udpdht node answers the `kademlia` package's protocol on its own port.

:class:`KadService` hosts a :class:`~udpdht.kad.endpoint.KadEndpoint` on the node's socket
(``RpcEndpoint.foreign`` hands it every datagram whose first byte is 0x00 or 0x01, after the
native rate limits) and serves kademlia's five RPCs from the ring:

* ``ping(id)`` -> the node's 160-bit ring id as 20 big-endian bytes; ``stun()`` -> the
  caller's ``[ip, port]``.
* ``find_node(id, key)`` -> up to k = 20 ``[id, ip, port]`` of the *udpdht nodes* this node
  knows (its leafset, fingers and the nodes heard from in the last minute, itself included),
  nearest to ``key`` by XOR, without the caller. A kademlia client thus only ever stores on and
  reads from ring nodes; the clients that called us are never named (their storage is not the
  ring's). Only peers that answered *our kademlia ping* lately are named (:class:`KadPeers`):
  not a node started with ``--no-kad``, not one that left (a native ``leaving``) or stopped
  answering. A peer is pinged when first considered (an answer waits up to
  :attr:`KadPeers.wait` for those pings), again after :attr:`KadPeers.recheck` seconds.
* ``find_value(id, key)`` -> ``{"value": v}`` from a get on the ring of the 20-byte ``key``, the
  very key ``udpdht.Server`` keeps a value under (``server.dht.get(digest(k))``); when the ring
  has none (or a value of a type kademlia cannot hold, or cannot be read now), the
  ``find_node`` answer, as a kademlia node without the value answers.
* ``store(id, key, value)`` -> True after a put on the ring of ``key``. A kademlia client
  stores each value on the (up to 20) nearest nodes at once: the put is *unless_same* (a
  primary that holds this very value writes nothing, Replicator.put), and identical stores
  running on this node at once share one put, so 10 stores of one value make one write.

Refused without an answer (rpcudp's way; counted): a request whose arguments are not what the
method takes (count, types, 20-byte ids), a value kademlia cannot hold (``codec.check_value``)
or over the store's limits, a write past the sender's write budget, and a store the ring could
not take.

Amplification: an answer more than :data:`AMPLIFICATION` times the size of its request goes
only to an address that has shown that it receives. :class:`AddressCheck` holds such an answer,
pings the address (kademlia's own ``ping``, which every kademlia node and client answers) and
sends the answer once the ping's reply comes back from there; an off-path spoofer never sees
the ping, so its victim gets at most the pings. Proven addresses are remembered (a bounded
LRU, 10 minutes), so this costs one round trip on a client's first large answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import ids, wire
from ..errors import DecodeError, DhtError, KeyNotFound, ValueTooLarge
from ..net import Address, format_addr
from ..ratelimit import source_of
from ..routing import Peer, RingView
from ..storage import MAX_VALUE
from . import codec
from .endpoint import Ignore, KadConfig, KadEndpoint

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("udpdht.kad")

#: An answer larger than this many times its request needs a proven address (as the native
#: protocol, PROTOCOL.md §6a, and QUIC's limit before address validation).
AMPLIFICATION = 3
METHODS = ("ping", "stun", "find_node", "find_value", "store")


@dataclass(frozen=True)
class GuardConfig:
    proven_max: int = 4096  # addresses remembered as proven (LRU)
    proven_ttl: float = 600.0  # seconds one proof lasts
    failed_ttl: float = 10.0  # seconds an address that did not answer a probe is not probed
    probe_deadline: float = 2.0  # a probe's whole wait (kademlia waits 5 s for our answer)
    probe_tries: int = 2
    max_probes: int = 256  # probes in flight
    held_per_addr: int = 8  # answers held for one address while it is probed
    held_bytes: int = 4 << 20  # answers held in all


class AddressCheck:
    """Which addresses have shown they receive what we send them; a reply gate for a
    :class:`KadEndpoint` (``endpoint.reply_gate = check.gate``)."""

    def __init__(
        self,
        endpoint: KadEndpoint,
        own_id: Callable[[], bytes],
        config: GuardConfig | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.own_id = own_id
        self.config = config or GuardConfig()
        self._proven: OrderedDict[Address, float] = OrderedDict()  # addr -> proven until
        self._failed: OrderedDict[Address, float] = OrderedDict()  # addr -> not probed until
        self._held: dict[Address, list[bytes]] = {}  # addresses being probed -> answers
        self._held_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats: Counter[str] = Counter(
            probes=0, proven=0, probe_failures=0, held=0, released=0, dropped=0
        )

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def proven(self, addr: Address) -> bool:
        until = self._proven.get(addr)
        if until is None:
            return False
        if until < self._now():
            del self._proven[addr]
            return False
        self._proven.move_to_end(addr)
        return True

    def prove(self, addr: Address) -> None:
        """``addr`` answered us: it receives what we send it."""
        self._proven[addr] = self._now() + self.config.proven_ttl
        self._proven.move_to_end(addr)
        while len(self._proven) > self.config.proven_max:
            self._proven.popitem(last=False)
        self._failed.pop(addr, None)

    def gate(self, addr: Address, request_size: int, data: bytes) -> bool:
        """Whether ``data``, the answer to a request of ``request_size`` bytes, may go to
        ``addr`` now; if not, it is held while ``addr`` is probed, or dropped."""
        if len(data) <= AMPLIFICATION * request_size or self.proven(addr):
            return True
        cfg = self.config
        held = self._held.get(addr)
        if held is not None:  # a probe is in flight: wait with it
            if len(held) < cfg.held_per_addr and self._hold(len(data)):
                held.append(data)
                return False
            self.stats["dropped"] += 1
            return False
        until = self._failed.get(addr)
        if until is not None and until > self._now():
            self.stats["dropped"] += 1  # it did not answer a probe a moment ago
            return False
        if len(self._held) >= cfg.max_probes or not self._hold(len(data)):
            self.stats["dropped"] += 1
            return False
        self._held[addr] = [data]
        self.stats["probes"] += 1
        task = asyncio.ensure_future(self._probe(addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return False

    def _hold(self, size: int) -> bool:
        if self._held_bytes + size > self.config.held_bytes:
            return False
        self._held_bytes += size
        self.stats["held"] += 1
        return True

    async def _probe(self, addr: Address) -> None:
        cfg = self.config
        ok = False
        try:
            reply = await self.endpoint.call(
                addr, "ping", self.own_id(), deadline=cfg.probe_deadline, tries=cfg.probe_tries
            )
            codec.node_id(reply)  # a kademlia node's answer: its 20-byte id
            ok = True
        except DhtError as exc:
            log.debug("%s did not answer our ping: %s", format_addr(addr), exc)
        finally:
            held = self._held.pop(addr, [])
            self._held_bytes -= sum(len(d) for d in held)
        if not ok:
            self.stats["probe_failures"] += 1
            self.stats["dropped"] += len(held)
            self._failed[addr] = self._now() + cfg.failed_ttl
            while len(self._failed) > cfg.proven_max:
                self._failed.popitem(last=False)
            return
        self.stats["proven"] += 1
        self.prove(addr)
        for data in held:
            if self.endpoint.transmit(data, addr):
                self.stats["released"] += 1
                self.endpoint.stats.answered += 1

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._held.clear()
        self._held_bytes = 0

    def as_dict(self) -> dict[str, int]:
        return {**self.stats, "proven_now": len(self._proven), "probing": len(self._held)}


@dataclass(frozen=True)
class PeersConfig:
    fresh_for: float = 600.0  # seconds an answered ping lets a peer be named
    recheck: float = 120.0  # seconds after which a named peer is pinged again (in background)
    failed_for: float = 120.0  # seconds a peer that did not answer is neither named nor pinged
    wait: float = 0.5  # an answer waits this long, at most, for the pings of new peers
    tries: int = 2  # sends of one ping
    max_known: int = 1024  # peers remembered either way (LRU)
    max_checks: int = 32  # pings in flight


class KadPeers:
    """Which ring peers answer kademlia: a bounded, time-limited record of the answers to our
    kademlia ``ping``. find_node names only the peers in it (and the node itself), so that a
    kademlia client is never sent to a node that ignores it (``--no-kad``) or has gone."""

    def __init__(
        self,
        endpoint: KadEndpoint,
        own_id: Callable[[], bytes],
        on_answer: Callable[[Address], None],
        config: PeersConfig | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.own_id = own_id
        self.on_answer = on_answer
        self.config = config or PeersConfig()
        self._answered: OrderedDict[int, tuple[Address, float]] = OrderedDict()  # id -> when
        self._failed: OrderedDict[int, tuple[Address, float]] = OrderedDict()  # id -> until
        self._checks: dict[int, asyncio.Task[None]] = {}
        self.stats: Counter[str] = Counter(pings=0, answered=0, failed=0, forgotten=0)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def state(self, peer: Peer) -> str:
        """``ok`` (named), ``stale`` (named, pinged again in background), ``failed`` (not
        named) or ``unknown`` (not named until its ping answers)."""
        now = self._now()
        seen = self._answered.get(peer.id)
        if seen is not None and seen[0] == peer.addr:
            age = now - seen[1]
            if age < self.config.recheck:
                return "ok"
            if age < self.config.fresh_for:
                return "stale"
            del self._answered[peer.id]
        failed = self._failed.get(peer.id)
        if failed is not None and failed[0] == peer.addr:
            if failed[1] > now:
                return "failed"
            del self._failed[peer.id]
        return "unknown"

    def check(self, peer: Peer) -> asyncio.Task[None] | None:
        """Ping ``peer`` in the background (once at a time); the task, or None when too many
        are in flight."""
        task = self._checks.get(peer.id)
        if task is not None:
            return task
        if len(self._checks) >= self.config.max_checks:
            return None
        task = asyncio.ensure_future(self._ping(peer))
        self._checks[peer.id] = task
        task.add_done_callback(lambda done: self._done(peer.id, done))
        return task

    def _done(self, peer_id: int, task: asyncio.Task[None]) -> None:
        if self._checks.get(peer_id) is task:
            del self._checks[peer_id]

    async def _ping(self, peer: Peer) -> None:
        cfg = self.config
        self.stats["pings"] += 1
        try:
            reply = await self.endpoint.call(
                peer.addr, "ping", self.own_id(), deadline=cfg.wait * 2, tries=cfg.tries
            )
            ok = codec.node_id(reply) == ids.to_bytes(peer.id)  # the ring node, not another
        except DhtError as exc:
            log.debug("%s did not answer our kademlia ping: %s", peer, exc)
            ok = False
        now = self._now()
        if ok:
            self.stats["answered"] += 1
            self._failed.pop(peer.id, None)
            self._remember(self._answered, peer.id, (peer.addr, now))
            self.on_answer(peer.addr)  # (it receives: large answers may go to it at once)
        else:
            self.stats["failed"] += 1
            self._answered.pop(peer.id, None)
            self._remember(self._failed, peer.id, (peer.addr, now + cfg.failed_for))

    def _remember(
        self, table: OrderedDict[int, tuple[Address, float]], key: int, value: tuple[Address, float]
    ) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.config.max_known:
            table.popitem(last=False)

    def forget(self, peer_id: int, addr: Address) -> None:
        """The peer at ``addr`` said it leaves: not named from now on (until its ping answers
        again, should it come back)."""
        seen = self._answered.get(peer_id)
        if seen is None or seen[0] != addr:
            return
        del self._answered[peer_id]
        self.stats["forgotten"] += 1
        task = self._checks.pop(peer_id, None)
        if task is not None:
            task.cancel()

    def close(self) -> None:
        for task in list(self._checks.values()):
            task.cancel()
        self._checks.clear()

    def as_dict(self) -> dict[str, int]:
        return {**self.stats, "named_now": len(self._answered), "checking": len(self._checks)}


class KadService:
    """Kademlia's RPCs served by a udpdht node, on the node's own socket (see the module)."""

    #: Stores and finds running at once for one source (its IP; IP and port on 127.0.0.1, as
    #: the rate limits); more wait their turn, up to PER_SOURCE_WAITING; more still are
    #: dropped (busy). A kademlia client's burst of gets waits; a flood takes 128 slots at
    #: most of the endpoint's 256.
    PER_SOURCE = 32
    PER_SOURCE_WAITING = 96

    def __init__(
        self,
        node: Node,
        config: KadConfig | None = None,
        guard: GuardConfig | None = None,
        peers: PeersConfig | None = None,
    ) -> None:
        self.node = node
        self.endpoint = KadEndpoint(config=config)
        self.guard = AddressCheck(self.endpoint, self._own_id, guard)
        self.peers = KadPeers(self.endpoint, self._own_id, self.guard.prove, peers)
        self.requests: Counter[str] = Counter({m: 0 for m in METHODS})
        self.counts: Counter[str] = Counter(
            malformed=0,  # arguments not of the method's shape: no answer
            values_refused=0,  # a store of a type kademlia cannot hold, or too large
            writes_rate_limited=0,  # a store past its sender's write budget
            stores_failed=0,  # the ring could not take a store
            stores_shared=0,  # identical stores that waited for one already running
            reads_failed=0,  # find_value could not read the ring (answered with nodes)
            not_kademlia_values=0,  # find_value of a value kademlia cannot hold
            busy=0,  # a source's PER_SOURCE stores and finds already running
        )
        self._running: Counter[Hashable] = Counter()  # source -> handlers running
        self._waiting: dict[Hashable, deque[asyncio.Future[None]]] = {}  # source -> turns
        # (key, encoded value) -> the put storing it now
        self._storing: dict[tuple[bytes, bytes], asyncio.Future[Any]] = {}

    def _own_id(self) -> bytes:
        return ids.to_bytes(self.node.id)  # (follows the node's id if it advertises anew)

    # --- wiring ---------------------------------------------------------------------------------

    def attach(self) -> None:
        """Start answering: the node's socket hands us rpcudp's datagrams from now on."""
        rpc = self.node.endpoint
        ep = self.endpoint
        ep.host(rpc.send_raw, rpc.addr)
        ep.reply_gate = self.guard.gate
        ep.on_request = self._on_request
        ep.serve("ping", self._ping)
        ep.serve("stun", self._stun)
        ep.serve("find_node", self._limited(self._find_node))
        ep.serve("find_value", self._limited(self._find_value))
        ep.serve("store", self._limited(self._store))
        rpc.foreign = ep.feed

    def close(self) -> None:
        rpc = self.node._endpoint
        if rpc is not None and rpc.foreign == self.endpoint.feed:
            rpc.foreign = None
        self.guard.close()
        self.peers.close()
        self.endpoint.close()

    def status(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "requests": dict(self.requests),
            **self.counts,
            "guard": self.guard.as_dict(),
            "peers": self.peers.as_dict(),
            "endpoint": self.endpoint.stats.as_dict(),
        }

    def left(self, peer_id: int, addr: Address) -> None:
        """A native ``leaving`` from ``addr``: find_node names that peer no more."""
        self.peers.forget(peer_id, addr)

    def _on_request(self, addr: Address, method: str, args: list[Any]) -> None:
        self.requests[method] += 1

    # --- arguments ------------------------------------------------------------------------------

    def _args(self, args: tuple[Any, ...], count: int) -> tuple[Any, ...]:
        """The arguments when there are ``count`` of them and every one but the last (ids and
        keys) is 20 bytes; else no answer, counted."""
        try:
            if len(args) != count:
                raise DecodeError(f"takes {count} arguments, not {len(args)}")
            for raw in args[:2]:
                codec.node_id(raw)
        except DecodeError as exc:
            self.counts["malformed"] += 1
            raise Ignore(str(exc)) from None
        return args

    def _limited(
        self, handler: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Awaitable[Any] | None]:
        """At most PER_SOURCE of a source's stores and finds run at once, and PER_SOURCE_WAITING
        wait: one source cannot take every handler slot of the endpoint."""

        def run(addr: Address, *args: Any) -> Awaitable[Any]:
            source = source_of(addr)
            if (
                self._running[source] >= self.PER_SOURCE
                and len(self._waiting.get(source, ())) >= self.PER_SOURCE_WAITING
            ):
                self.counts["busy"] += 1
                raise Ignore("too many requests of this source running")
            return self._in_turn(source, handler, addr, args)

        return run

    async def _in_turn(
        self,
        source: Hashable,
        handler: Callable[..., Coroutine[Any, Any, Any]],
        addr: Address,
        args: tuple[Any, ...],
    ) -> Any:
        if self._running[source] >= self.PER_SOURCE:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(source, deque()).append(turn)
            try:
                await turn  # a finishing handler hands its slot over
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release(source)  # handed over just before the cancellation
                raise
        else:
            self._running[source] += 1
        try:
            # (Charged for its CPU as our own handlers are: find_value and store from one
            # socket at 900 a second cost 3-4 times our get and put, uncharged.)
            return await self.node.endpoint.charged(handler(addr, *args), addr)
        finally:
            self._release(source)

    def _release(self, source: Hashable) -> None:
        """A handler of ``source`` finished: its slot goes to the next waiting, if any."""
        waiting = self._waiting.get(source)
        while waiting:
            turn = waiting.popleft()
            if not turn.done():  # (a cancelled one is done)
                turn.set_result(None)
                if not waiting:
                    del self._waiting[source]
                return
        self._waiting.pop(source, None)
        left = self._running[source] - 1
        if left > 0:
            self._running[source] = left
        else:
            del self._running[source]

    def _stored(self, job: tuple[bytes, bytes], done: asyncio.Future[Any]) -> None:
        self._storing.pop(job, None)
        if not done.cancelled():
            done.exception()  # retrieved: its waiters may all have gone

    # --- handlers -------------------------------------------------------------------------------

    def _ping(self, addr: Address, *args: Any) -> bytes:
        self._args(args, 1)
        return self._own_id()

    def _stun(self, addr: Address, *args: Any) -> list[Any]:
        self._args(args, 0)
        return [addr[0], addr[1]]

    async def _find_node(self, addr: Address, *args: Any) -> list[list[Any]]:
        _, key = self._args(args, 2)
        return await self.nearest(key, addr)

    def candidates(self, key: bytes, exclude: Address | None = None) -> list[Peer]:
        """The ring nodes this node knows, nearest to ``key`` by XOR (itself included,
        ``exclude`` and suspected nodes not), whether they answer kademlia or not."""
        node = self.node
        target = int.from_bytes(key, "big")
        since = asyncio.get_running_loop().time() - RingView.TRUSTED_FOR
        seen: dict[int, Peer] = {}
        for peer in (
            node.peer,
            *node.leafset.peers(),
            *node.fingers.distinct(),
            *node.view.xor_nearest(target, codec.K + 8, since),
        ):
            if peer.id >= 0 and peer.addr != exclude and not node.detector.suspected(peer.id):
                seen.setdefault(peer.id, peer)
        return sorted(seen.values(), key=lambda p: p.id ^ target)

    async def nearest(self, key: bytes, exclude: Address | None = None) -> list[list[Any]]:
        """Up to k ``[id, ip, port]`` of :meth:`candidates` that answer kademlia (KadPeers):
        the node's own, and the peers whose kademlia ping answered lately. A peer not pinged
        yet is pinged now, and the answer waits up to ``PeersConfig.wait`` for it."""
        own = self.node.peer
        named: list[Peer] = []
        waiting: list[asyncio.Task[None]] = []
        for peer in self.candidates(key, exclude):
            if len(named) + len(waiting) >= codec.K:
                break
            state = "ok" if peer.id == own.id else self.peers.state(peer)
            if state in ("ok", "stale"):
                named.append(peer)
                if state == "stale":
                    self.peers.check(peer)
            elif state == "unknown":
                task = self.peers.check(peer)
                if task is not None:
                    waiting.append(task)
        if waiting:
            await asyncio.wait(waiting, timeout=self.peers.config.wait)
            return self._named(key, exclude)
        return [p.to_wire() for p in named]

    def _named(self, key: bytes, exclude: Address | None) -> list[list[Any]]:
        own = self.node.peer.id
        best = [
            p
            for p in self.candidates(key, exclude)
            if p.id == own or self.peers.state(p) in ("ok", "stale")
        ]
        return [p.to_wire() for p in best[: codec.K]]

    async def _find_value(self, addr: Address, *args: Any) -> Any:
        _, key = self._args(args, 2)
        try:
            value = await self.node.get(key)
        except KeyNotFound:
            return await self.nearest(key, addr)
        except DhtError as exc:  # Unavailable: the ring cannot tell now; the others may
            self.counts["reads_failed"] += 1
            log.debug("find_value %s: %s", key.hex(), exc)
            return await self.nearest(key, addr)
        try:
            codec.check_value(value)
        except TypeError:  # a list, a map, nil... written natively: kademlia cannot hold it
            self.counts["not_kademlia_values"] += 1
            return await self.nearest(key, addr)
        return {"value": value}

    async def _store(self, addr: Address, *args: Any) -> bool:
        _, key, value = self._args(args, 3)
        try:
            codec.check_value(value)
            data = wire.pack_value(value, MAX_VALUE)
        except (TypeError, ValueTooLarge, DhtError) as exc:
            self.counts["values_refused"] += 1
            raise Ignore(str(exc)) from None
        replicator = self.node.replicator
        try:
            replicator.charge(addr, len(key) + len(data))
        except DhtError as exc:
            self.counts["writes_rate_limited"] += 1
            raise Ignore(str(exc)) from None
        job = (key, data)
        running = self._storing.get(job)
        if running is not None:
            self.counts["stores_shared"] += 1
        else:
            running = asyncio.ensure_future(replicator.put(key, data, None, unless_same=True))
            self._storing[job] = running
            running.add_done_callback(lambda done: self._stored(job, done))
        try:
            await asyncio.shield(running)
        except DhtError as exc:
            self.counts["stores_failed"] += 1
            raise Ignore(f"the ring did not take the store: {exc}") from None
        return True
