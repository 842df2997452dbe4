"""``udpdht.Server``: the front of kademlia's ``kademlia.network.Server`` (2.2.x) on the ring.

A script written for kademlia runs on udpdht by changing its import::

    from kademlia.network import Server   # before
    from udpdht import Server             # after

The method names, arguments, return values and value types are kademlia's; what happens
underneath is udpdht's: iterative Chord lookups with retries, versioned records on r replicas
that repair themselves, and a graceful leave that hands the keys over. docs/kademlia-migration.md
lists what each argument means here and every difference that remains.

Keys. kademlia turns a key into its 20-byte SHA-1 *digest* (:func:`digest`: bytes as they are,
anything else ``str(key)`` UTF-8 encoded) and stores the value under the digest. This front does
the same: every value lives in udpdht under the 20-byte digest as its key, so ``set(k, v)``,
``set_digest(digest(k), v)`` and ``get(k)`` all meet, as in kademlia. Its place on the ring is
udpdht's usual SHA-1 of the key bytes, i.e. SHA-1 of the digest. From the native API the same
value is ``await server.dht.get(digest(k))``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import os
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, Self, TypeVar

from . import ids, wire
from .errors import (
    BadRequest,
    DhtError,
    EncodeError,
    KeyNotFound,
    Unavailable,
    ValueTooLarge,
)
from .ids import digest
from .kad.codec import VALUE_TYPES
from .lookup import PEER_FAILURES
from .net import Address, check_peer_addr, format_addr, resolve, route_from, unless_refused
from .node import Node, NodeConfig, NodeLog
from .replication import StoreConfig
from .routing import Peer

log = logging.getLogger("udpdht.server")

T = TypeVar("T")

#: What kademlia's ``set`` accepts (``kademlia.network.check_dht_value_type``): exact types.
Value = int | float | bool | str | bytes

#: Copies of each value when ``ksize`` allows (see :class:`Server`).
DEFAULT_REPLICAS = 3

#: The ``format`` field of a state file.
STATE_FORMAT = "udpdht.Server/1"


def check_dht_value_type(value: object) -> bool:
    """Whether ``set`` takes this value: an int, float, bool, str or bytes (not a subclass)."""
    return type(value) in VALUE_TYPES


class NodeInfo(NamedTuple):
    """A node as kademlia's ``kademlia.node.Node`` shows one: ``id`` (20 bytes), ``ip``,
    ``port``, ``long_id``; ``tuple(info)`` is ``(id, ip, port)`` and ``str(info)`` is
    ``"ip:port"``."""

    id: bytes
    ip: str | None
    port: int | None

    @property
    def long_id(self) -> int:
        return int.from_bytes(self.id, "big")

    def distance_to(self, node: NodeInfo) -> int:
        """kademlia's XOR distance (routing here goes clockwise round the ring instead)."""
        return self.long_id ^ node.long_id

    def same_home_as(self, node: NodeInfo) -> bool:
        return self.ip == node.ip and self.port == node.port

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"

    @classmethod
    def from_peer(cls, peer: Peer) -> NodeInfo:
        return cls(ids.to_bytes(peer.id), peer.addr[0], peer.addr[1])


def _node_id(node_id: bytes | int) -> int:
    if isinstance(node_id, bytes | bytearray):
        if not 0 < len(node_id) <= ids.ID_BYTES:
            raise ValueError(f"node_id must be 1..{ids.ID_BYTES} bytes (a SHA-1 digest)")
        return int.from_bytes(node_id, "big")
    if isinstance(node_id, int) and not isinstance(node_id, bool) and 0 <= node_id <= ids.MASK:
        return node_id
    raise TypeError("node_id must be a 20-byte digest (bytes), an int below 2**160, or None")


async def _finish_at_shutdown(server: Server, node: Node) -> AsyncGenerator[None, None]:
    """Held open while a leave is pending: if the event loop shuts down first (``asyncio.run``
    returning right after ``stop()``), the loop closes this generator, and the leave is
    completed here instead of being lost with the cancelled task."""
    try:
        yield
    finally:
        await server._leave_once(node)


def _arm(guard: AsyncGenerator[None, None]) -> None:
    """Start ``guard`` now, synchronously, so that the running loop tracks it from here on."""
    step = guard.asend(None)  # the loop's first-iteration hook registers the generator here
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()  # unreachable: the generator yields before awaiting anything
    raise RuntimeError("shutdown guard did not start")


class Server:
    """A DHT node with kademlia's ``Server`` interface.

    ``ksize`` (kademlia's k): each value is kept on ``min(ksize, 3)`` nodes — the key's primary
    and its next successors — unless ``replicas`` says otherwise; ``bootstrap`` and
    ``bootstrappable_neighbors`` return at most ``ksize`` nodes. ``alpha``: candidates each
    lookup hop returns (the fallbacks tried when one is dead). ``node_id``: None (the default)
    for SHA-1 of the address the server names itself by, which other nodes check against the
    source of its datagrams; or a digest (bytes) to place it at a chosen id, which turns that
    check off in this node (NodeConfig.verify_ids): every node of such a ring must be given
    its id, and a stranger may then claim any id (SECURITY.md). ``storage`` is not used (a
    warning says so): values live in udpdht's versioned store; pass ``data_dir`` to keep them
    on disk.

    Keyword-only additions: ``replicas`` (copies of each value; the leafset grows to fit),
    ``config`` (a :class:`~udpdht.node.NodeConfig`, e.g. a shorter ``stabilize_period``), and
    ``data_dir`` (sqlite store that survives restarts).

    ``stop()`` is synchronous like kademlia's; it starts a graceful leave (the keys are handed
    to the successors and the neighbours told) and ``await server.astop()`` waits for it.
    """

    #: How long ``set`` and ``get`` keep trying while the ring cannot serve a key (it is still
    #: settling after joins, or repairing after crashes), in stabilization periods.
    RETRY_ROUNDS = 15
    #: Seconds a bootstrap waits at most for its introduction to the ring to end (bootstrap):
    #: a hello to a node that left lately waits for its timeout, and a bootstrap of one of 30
    #: servers right after 6 had stopped took 0.7-1.4 s with a wait of 2 s (3-10 ms without).
    INTRODUCTION_WAIT = 0.5

    def __init__(
        self,
        ksize: int = 20,
        alpha: int = 3,
        node_id: bytes | int | None = None,
        storage: object | None = None,
        *,
        replicas: int | None = None,
        config: NodeConfig | None = None,
        data_dir: str | Path | None = None,
    ) -> None:
        if ksize < 1:
            raise ValueError("ksize must be at least 1")
        if alpha < 1:
            raise ValueError("alpha must be at least 1")
        self.ksize = ksize
        self.alpha = alpha
        self.replicas = replicas if replicas is not None else min(ksize, DEFAULT_REPLICAS)
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1")
        if storage is not None:
            warnings.warn(
                "udpdht.Server does not use a kademlia storage object: values are kept in "
                "udpdht's versioned, replicated store (pass data_dir=... to keep them on disk)",
                UserWarning,
                stacklevel=2,
            )
        base = config or NodeConfig()
        leafset = max(base.leafset, 2 * (self.replicas - 1))  # replicas <= L/2 + 1
        leafset += leafset % 2
        self._chosen_id = None if node_id is None else _node_id(node_id)
        self.config = dataclasses.replace(
            base,
            leafset=leafset,
            lookup_width=alpha,
            verify_ids=base.verify_ids and self._chosen_id is None,
        )
        self.store_config = StoreConfig(replicas=self.replicas)
        self.data_dir = data_dir
        #: This node as kademlia shows it (``.id`` 20 bytes, ``.long_id``; ip and port once
        #: listening). Without a chosen id, the id is SHA-1 of the address, known once listening.
        self.node = NodeInfo(
            ids.to_bytes(self._chosen_id) if self._chosen_id is not None else b"", None, None
        )
        #: The udpdht :class:`~udpdht.node.Node` underneath, once ``listen`` has run.
        self.dht: Node | None = None
        #: The timer of ``save_state_regularly`` (kademlia's attribute name).
        self.save_state_loop: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._leave_task: asyncio.Task[None] | None = None
        self._leave_lock: asyncio.Lock | None = None
        self._guard: AsyncGenerator[None, None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._wildcard = False

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        """The UDP port bound by ``listen`` (useful after ``listen(0)``); None before."""
        return self.dht.addr[1] if self.dht is not None else None

    def _running(self) -> Node:
        node = self.dht
        if node is not None and node.running and self._leave_task is not None:
            # (A new-user trial: a get right after stop() answered, a set "failed" but landed.)
            raise RuntimeError("the server is stopping: stop() was called")
        if node is not None and not node.running and node.left_because is not None:
            # (It left its ring by itself: "await listen() first" hid why; a reviewer's note.)
            raise RuntimeError(
                f"the server left its ring and stopped: {node.left_because}; start it again "
                "and bootstrap it from a node of the ring"
            )
        if node is None or not node.running:
            raise RuntimeError("the server is not listening: await server.listen(port) first")
        return node

    @property
    def _log(self) -> NodeLog:
        """The server's logger: each message starts with its id prefix, as its node's do,
        and its records carry it as ``node`` (for a format's ``%(node)s``)."""
        return NodeLog(log, self._short_id(), named=True)

    async def listen(self, port: int, interface: str = "0.0.0.0") -> None:
        """Start listening on ``interface:port`` (port 0: an ephemeral one, see :attr:`port`).

        On a wildcard interface (``0.0.0.0``, ``::``) the node must still name itself to others
        by one address: the address its packets to the bootstrap node carry (set by
        ``bootstrap``), or until then that of the machine's outbound interface (loopback when
        offline). docs/kademlia-migration.md explains the one case this does not cover.
        """
        if self.dht is not None and self.dht.running:
            raise RuntimeError("the server is already listening")
        node = Node(
            interface,
            port,
            node_id=self._chosen_id,
            config=self.config,
            store_config=self.store_config,
            data_dir=self.data_dir,
        )
        node.named_logs = True  # (its records' "node" shows in no format of the program's)
        await node.start()
        host = node.addr[0]
        self._wildcard = ipaddress.ip_address(host).is_unspecified
        if self._wildcard:
            node.advertise((route_from(v6=":" in host), node.addr[1]))
        self.dht = node
        self._loop = asyncio.get_running_loop()
        self._leave_task = None
        self._leave_lock = asyncio.Lock()
        self.node = NodeInfo(ids.to_bytes(node.id), node.addr[0], node.addr[1])
        self._log.info("listening on %s", format_addr(node.addr))

    def stop(self) -> None:
        """Leave the ring gracefully: hand the keys over, tell the neighbours, close.

        Synchronous, like kademlia's: inside the event loop it starts the leave and returns at
        once (``await server.astop()`` waits for it; if the loop shuts down first, as when
        ``asyncio.run`` returns right after ``stop()``, the leave is completed during the
        shutdown). Outside a running loop (after ``loop.run_forever()``), it runs the leave to
        the end on the server's loop.
        """
        self._cancel_timers()
        node, loop = self.dht, self._loop
        if node is None or loop is None or self._leave_task is not None or not node.running:
            return
        if loop.is_closed():
            return
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is loop:
            self._start_leave()
        elif loop.is_running():
            loop.call_soon_threadsafe(self._start_leave)
        elif current is None:
            loop.run_until_complete(self.astop())
        else:
            raise RuntimeError("stop() called from another event loop: await server.astop()")

    async def astop(self) -> None:
        """Leave the ring gracefully (see :meth:`stop`) and wait until it is done."""
        self._cancel_timers()
        if self.dht is None:
            return
        self._start_leave()
        if self._leave_task is not None:
            await asyncio.shield(self._leave_task)

    def _cancel_timers(self) -> None:
        if self.save_state_loop is not None:
            self.save_state_loop.cancel()
            self.save_state_loop = None
        for task in self._background:
            task.cancel()

    def _start_leave(self) -> None:
        node = self.dht
        if node is None or self._leave_task is not None or not node.running:
            return
        guard = _finish_at_shutdown(self, node)
        _arm(guard)
        self._guard = guard
        self._leave_task = asyncio.get_running_loop().create_task(self._leave(node))

    async def _leave(self, node: Node) -> None:
        try:
            await self._leave_once(node)
        finally:
            # Normally a no-op; after a cancellation (loop shutdown) it finishes the leave.
            guard, self._guard = self._guard, None
            if guard is not None:
                await guard.aclose()

    async def _leave_once(self, node: Node) -> None:
        lock = self._leave_lock or asyncio.Lock()
        async with lock:
            if not node.running:
                return
            try:
                await node.leave()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("graceful leave failed; stopping at once")
            if node.running:
                await node.stop()
            self._log.info("stopped")

    # --- joining -------------------------------------------------------------------------------

    async def bootstrap(self, addrs: Iterable[tuple[str, int]]) -> list[NodeInfo]:
        """Join the ring through the first of ``addrs`` (``(host, port)`` pairs) that answers.

        Every address is pinged at once; the server joins through the first that answered, in
        the order given, without waiting for the pings of the addresses after it (if already in
        a ring with others, it does not join again, and waits for every ping). Returns the
        nodes it reached — the addresses that had answered, then the ring neighbours the join
        gave it — at most ``ksize``, as :class:`NodeInfo` (kademlia returns its crawl's nearest
        nodes, in the same shape). Empty when no address answered or no join succeeded.

        After a join in a ring of up to 256 nodes, it returns once the server has told the
        ring's nodes of itself (its introduction: a round trip to each, 16 at a time), or after
        INTRODUCTION_WAIT (0.5 s) if that takes longer; the rest then goes on in the background.
        """
        node = self._running()
        targets: list[Address] = []
        for host, port in addrs:
            try:
                targets.append(await resolve((str(host), int(port))))
            except ValueError as exc:
                self._log.warning("bootstrap: %s", exc)
        pings = [asyncio.create_task(self._ping(node, addr)) for addr in targets]
        try:
            joined = True
            if node.leafset.successor is None:  # alone so far: join
                joined = await self._join_first(node, pings)
            elif pings:
                await asyncio.wait(pings)
            answers = [p.result() for p in pings if p.done() and not p.cancelled()]
        finally:
            for ping in pings:
                ping.cancel()  # (those after the address joined through: not waited for)
        reached = _unique(a for a in answers if a is not None and a.id != self.node.id)
        if not reached:
            if any(a is not None for a in answers):  # (only ours: nothing to join)
                self._log.warning("bootstrap: only this server's own address answered")
            else:
                self._log.warning("bootstrap: no address answered (%d tried)", len(targets))
            return []
        if not joined:
            return []
        neighbours = [NodeInfo.from_peer(p) for p in node.leafset.successors]
        return _unique([*reached, *neighbours])[: self.ksize]

    async def _join_first(self, node: Node, pings: list[asyncio.Task[NodeInfo | None]]) -> bool:
        """Join through the first address, in the order given, whose ping answered (and not
        after the pings of the addresses after it: a silent one listed after a live one cost
        every bootstrap 4.5 s, a new user's trial); whether a join worked.

        Then wait, INTRODUCTION_WAIT at most, for the ring's nodes to hear of us, as kademlia's
        bootstrap returns once its crawl has reached the nodes near it: a script's sets and
        gets right after its servers joined then share the process with no hellos (PROTOCOL.md
        9.6d). Returned before, right after 100 joins, 350 of the ~900 calls made during 300
        sets were the last joiners' hellos and their checks: 1,099 sets a second, 1,377 with
        the wait (medians of 6; the build took 1.71 s, 1.75 s with).
        """
        for ping in pings:
            info = await ping
            if info is None or info.id == self.node.id:
                continue
            assert info.ip is not None and info.port is not None
            self._advertise_towards(node, info.ip)
            try:
                await node.join((info.ip, info.port))
            except (DhtError, *PEER_FAILURES) as exc:
                self._log.warning("bootstrap: could not join through %s: %s", info, exc)
                continue
            await node.maintenance.introduced(self.INTRODUCTION_WAIT)
            return True
        return False

    def _advertise_towards(self, node: Node, host: str) -> None:
        """On a wildcard socket, name ourselves by the address our packets to ``host`` carry:
        the one that node, and the nodes on its network, see us by and can reach."""
        v6 = ":" in node.addr[0]
        if not self._wildcard or v6 != (":" in host):
            return
        addr = (route_from(v6, host), node.addr[1])
        if addr != node.addr:
            node.advertise(addr)  # the id follows the address, unless chosen
            self.node = NodeInfo(ids.to_bytes(node.id), addr[0], addr[1])

    async def _ping(self, node: Node, addr: Address) -> NodeInfo | None:
        """The node at ``addr``, by the address it names itself by (its ``ping`` says), when
        that address is the one its id belongs to: a server bound to a wildcard is reached at
        127.0.0.1 from its own machine, but its id, which its peers check against the source
        of its datagrams, is SHA-1 of the address it advertises."""
        try:
            # A closed port fails at once, as with the CLI, not after 4 s of tries.
            ping = node.endpoint.call(addr, "ping", {"addr": True})
            reply = await unless_refused(ping, addr, "ping", wire.PING_PROBE)
            raw = reply["id"]
            if not isinstance(raw, bytes) or len(raw) != ids.ID_BYTES:
                raise ValueError("a ping reply carries a 20-byte id")
        except (DhtError, KeyError, TypeError, ValueError) as exc:
            self._log.info("bootstrap: no answer from %s: %s", format_addr(addr), exc)
            return None
        named = reply.get("addr")
        try:
            if type(named) is list and len(named) == 2:
                own = check_peer_addr(*named)
                if own != addr and ids.to_bytes(ids.node_id_for(*own)) == raw:
                    return NodeInfo(raw, own[0], own[1])
        except ValueError:
            pass
        return NodeInfo(raw, addr[0], addr[1])

    def bootstrappable_neighbors(self) -> list[tuple[str, int]]:
        """``(host, port)`` of up to ``ksize`` known nodes, nearest first, for a later
        ``bootstrap``: the successors and predecessors, then the fingers."""
        node = self.dht
        if node is None or not node.running:
            return []
        ls = node.leafset
        near: list[Peer] = []
        for i in range(max(len(ls.successors), len(ls.predecessors))):
            near += ls.successors[i : i + 1] + ls.predecessors[i : i + 1]
        peers = [p for p in (*near, *node.fingers.distinct()) if p.id != node.id]
        infos = _unique(NodeInfo.from_peer(p) for p in peers)[: self.ksize]
        return [(str(info.ip), int(info.port or 0)) for info in infos]

    def refresh_table(self, interval: float = 3600) -> None:
        """Run one maintenance round now (stabilize, then refresh fingers).

        udpdht keeps its tables fresh on its own, every ``stabilize_period`` (1 s), and repairs
        replicas every 5 s, so there is nothing to schedule: ``interval`` is accepted and
        ignored, and nothing needs republishing.
        """
        node = self._running()
        assert self._loop is not None
        task = self._loop.create_task(self._refresh(node))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh(self, node: Node) -> None:
        try:
            await node.stabilize()
            await node.fix_fingers()
        except (DhtError, *PEER_FAILURES) as exc:
            self._log.info("refresh_table: %s", exc)

    # --- the store -----------------------------------------------------------------------------

    async def get(self, key: object) -> Any:
        """The value of ``key``, or None when the ring has none (or cannot be reached: the
        reason is logged; ``server.dht.get(digest(key))`` raises instead)."""
        node = self._running()
        dkey = digest(key)
        started = node.clock()
        try:
            # The first try inline (most gets), straight to the replicator (Node.get less its
            # frame and its check of a key that a digest always passes): a closure and two
            # coroutine frames less.
            try:
                record = await node.replicator.get(dkey)
            except Unavailable as exc:
                record = await self._retrying(node, lambda: node.replicator.get(dkey), exc, started)
            assert record.value is not None  # (a get returns live values only, as Node.get)
            return wire.unpack_value(record.value)
        except KeyNotFound:
            return None
        except DhtError as exc:
            self._log.warning("get %r failed: %s", key, exc)
            return None

    async def set(self, key: object, value: Value) -> bool:
        """Store ``value`` (int, float, bool, str or bytes) under ``key``; True once the key's
        primary has it and has copied it to the live replicas.

        TypeError for any other type, as kademlia (and for an int beyond 64 bits, which msgpack
        cannot carry); ValueTooLarge for a value over 60,000 encoded bytes.
        """
        if not check_dht_value_type(value):
            raise TypeError("Value must be of type int, float, bool, str, or bytes")
        return await self._set(digest(key), value, key)

    async def set_digest(self, dkey: bytes, value: Any) -> bool:
        """Store ``value`` under a digest; ``get(k)`` finds what ``set_digest(digest(k), v)``
        stored. Any msgpack value is taken here (kademlia checks types only in ``set``).

        Returns False when the ring could not take the write (the reason is logged).
        """
        if not isinstance(dkey, bytes):
            raise TypeError("dkey must be bytes (a 20-byte SHA-1 digest)")
        return await self._set(dkey, value, None)

    async def _set(self, dkey: bytes, value: Any, key: object) -> bool:
        """set_digest; a failure is logged under ``key`` (None: by the digest)."""
        node = self._running()
        try:
            await self._retrying(node, lambda: node.put(dkey, value))
        except (ValueTooLarge, EncodeError, BadRequest):
            raise  # the caller's mistake (too large, not encodable, empty), not the ring's
        except DhtError as exc:
            shown = f"{key!r}" if key is not None else f"digest {dkey.hex()}"
            self._log.warning("set %s failed: %s", shown, exc)
            return False
        return True

    async def _retrying(
        self,
        node: Node,
        op: Callable[[], Awaitable[T]],
        failed: Unavailable | None = None,
        started: float | None = None,
    ) -> T:
        """``op()``, again while the ring answers Unavailable, for RETRY_ROUNDS periods from
        ``started`` (now by default); ``failed``: the first try was made (at ``started``) and
        raised this.

        A put or get already retries a few times within itself; after many joins at once the
        ring can take longer than that to settle (successor lists travel one node per round).
        """
        clock = node.clock
        period = node.config.stabilize_period
        deadline = (clock() if started is None else started) + self.RETRY_ROUNDS * period
        pause = 0.05  # doubled after each try, up to a period: most waits are short
        while True:
            try:
                if failed is not None:
                    first, failed = failed, None
                    raise first
                return await op()
            except Unavailable as exc:
                if clock() + pause > deadline or not node.running:
                    raise
                self._log.info("ring not ready (%s); trying again", exc)
            await asyncio.sleep(pause)
            pause = min(2 * pause, period)

    # --- state files ---------------------------------------------------------------------------

    def save_state(self, fname: str | os.PathLike[str]) -> None:
        """Write ksize, alpha, the id and the neighbours to ``fname`` as JSON (kademlia uses
        pickle). Like kademlia, writes nothing (and warns) when no neighbour is known."""
        data: dict[str, Any] = {
            "format": STATE_FORMAT,
            "ksize": self.ksize,
            "alpha": self.alpha,
            "replicas": self.replicas,
            "id": self.node.id.hex(),
            "chosen_id": self._chosen_id is not None,
            "neighbors": [list(addr) for addr in self.bootstrappable_neighbors()],
        }
        if not data["neighbors"]:
            self._log.warning("no known neighbors, so not writing to %s", fname)
            return
        path = Path(fname)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)  # atomic: a reader sees the old file or the new one

    @classmethod
    async def load_state(
        cls, fname: str | os.PathLike[str], port: int, interface: str = "0.0.0.0"
    ) -> Self:
        """A server with the saved ksize, alpha and id, listening on ``interface:port`` and
        bootstrapped from the saved neighbours."""
        raw = await asyncio.to_thread(Path(fname).read_bytes)
        if raw[:1] == b"\x80":
            raise ValueError(
                f"{fname} looks like a kademlia pickle; udpdht state files are JSON "
                "(see docs/kademlia-migration.md to convert one)"
            )
        try:
            data = json.loads(raw)
            ksize, alpha, node_id = int(data["ksize"]), int(data["alpha"]), data["id"]
            replicas = data.get("replicas")
            neighbors = [(str(h), int(p)) for h, p in data["neighbors"]]
            # An id derived from the address follows the address; only a chosen id is kept.
            raw_id = bytes.fromhex(node_id) if data.get("chosen_id") is True else None
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{fname} is not a udpdht.Server state file: {exc}") from None
        server = cls(ksize, alpha, raw_id, replicas=None if replicas is None else int(replicas))
        await server.listen(port, interface)
        if neighbors:
            await server.bootstrap(neighbors)
        return server

    def save_state_regularly(self, fname: str | os.PathLike[str], frequency: float = 600) -> None:
        """``save_state(fname)`` now and every ``frequency`` seconds until ``stop``."""
        self.save_state(fname)
        loop = self._loop or asyncio.get_running_loop()
        self.save_state_loop = loop.call_later(
            frequency, self.save_state_regularly, fname, frequency
        )

    def _short_id(self) -> str:
        return self.node.id.hex()[:8] or "?"

    def __repr__(self) -> str:
        where = format_addr(self.dht.addr) if self.dht is not None else "not listening"
        return f"<udpdht.Server {self._short_id()} {where}>"


def _unique(infos: Iterable[NodeInfo]) -> list[NodeInfo]:
    """First occurrence of each node id, in order."""
    seen: set[bytes] = set()
    out: list[NodeInfo] = []
    for info in infos:
        if info.id not in seen:
            seen.add(info.id)
            out.append(info)
    return out


__all__ = ["NodeInfo", "Server", "check_dht_value_type", "digest"]
