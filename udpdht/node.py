"""The Chord node: one RPC endpoint, the leafset and fingers, lookups, the store, join and leave.

How the ring is kept (stabilize, rectify, check_predecessor, fix_fingers, rejoin) is in
maintenance.py, the store in replication.py, lookups in lookup.py; this module ties them to one
endpoint, and holds what they share: the routing state, the failure detector, and the calls
to peers, which check what peers answer before anyone uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import secrets
import time
from collections.abc import Callable, Container, Coroutine, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from . import BUILD, ids, wire
from .admin import Verifier, load_or_create_cookie
from .datadir import DataDir, DataDirError
from .errors import (
    BadRequest,
    Busy,
    DhtError,
    NotResponsible,
    RpcTimeout,
    Unavailable,
)
from .kad.service import KadService
from .limits import STARTING_FOR, key_bytes
from .lookup import MALFORMED, PEER_FAILURES, Lookup, LookupFailed, iterative_lookup
from .maintenance import NOT_REMEMBERED, Maintenance
from .membership import FailureDetector, PeerMemory
from .net import (
    Address,
    Network,
    UdpNetwork,
    check_peer_addr,
    format_addr,
    loop_clock,
    parse_addr,
    resolve,
    unless_refused,
)
from .ratelimit import TokenBucket
from .replication import Replicator, StoreConfig
from .routing import FingerTable, LeafSet, Peer, RingView, arg_id, next_hop, peers_from_wire
from .rpc import NODE_RPC, NOT_CALLED, RpcConfig, RpcEndpoint
from .storage import MAX_VALUE, STORE_FILE, DiskStore, EngineError, MemoryStore, Store
from .text import plural

log = logging.getLogger("udpdht.node")


#: What a ring of one can do when its data dir or store file was deleted under it (the node's
#: error line): every record is on it alone, and a leave hands them over (a new user's trial).
_RING_OF_ONE = (
    "a ring of one: start a second node with --bootstrap to this one, then stop this one: "
    "its leave hands every record to the new node"
)


class NodeLog(logging.LoggerAdapter[logging.Logger]):
    """A node's logger: its records carry the node's id prefix as ``node`` (several nodes may
    share a process; the CLI's format shows it). ``named``: the message starts with it too,
    for a format that does not show it (a program's ``logging.basicConfig``, through the
    Server API, logged "joined the ring" with no word of which node had)."""

    def __init__(self, logger: logging.Logger, node: str, *, named: bool = False) -> None:
        super().__init__(logger, {"node": node})
        self.prefix = f"node {node}: " if named else ""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        msg, kwargs = super().process(msg, kwargs)
        return (self.prefix + str(msg) if self.prefix else msg), kwargs


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
    # The ring's name ("": none). A node's id is SHA-1 of "RING/host:port" in a named ring, so
    # nodes of rings of other names, which every id check refuses, never join or merge with
    # it: a node of another ring on an address this ring remembers took the two rings into
    # one (a new user's trial). Every node of a ring has the same name (ids.node_id_for).
    ring: str = ""
    failure_strikes: int = 2  # failed calls in a row before a peer is declared dead
    # Answer the `kademlia` package's protocol on the node's port too (kad/service.py).
    kad: bool = True


#: For a ring whose nodes share one process on loopback (`udpdht cluster`, the shell's embedded
#: ring): rounds four times as often as a deployed node's settle it, and its store, in a couple
#: of seconds, for a few ms of CPU a second.
LOCAL_RING = NodeConfig(stabilize_period=0.25)


#: The calls that name the node they are for (``to``): the store's, whose data must go to that
#: node and no other that took its address (RpcEndpoint.identity).
_ADDRESSED = frozenset(
    ("store_write", "store_push", "store_read", "store_digest", "store_digests", "store_scan")
)
#: The methods whose answers name their node (``id``): call_peer checks it against the node
#: called, the one check for the lookup's finds, the ring walk and stabilize.
_NAMED = frozenset({"ping", "neighbors", "find"})


class OtherFamily(DhtError):
    """A bootstrap of the other IP family than the node's own address: a setting to change,
    not a failure that a try later may not have (``udpdht node`` exits 2 on it)."""


def _same_family(bootstrap: Address, own: Address) -> None:
    """OtherFamily, saying why a node cannot join through an address of the other IP family:
    its peers must reach each other, and a ring's addresses are all IPv4 or all IPv6."""
    try:
        theirs = ipaddress.ip_address(bootstrap[0]).version
        ours = ipaddress.ip_address(own[0]).version
    except ValueError:  # not IP literals (a test network's names): nothing to compare
        return
    if theirs != ours:
        raise OtherFamily(
            f"{format_addr(bootstrap)} is an IPv{theirs} address and this node's "
            f"({format_addr(own)}) is IPv{ours}: the nodes of one ring all use one address "
            f"family, so bootstrap through an IPv{ours} node (or run this one on IPv{theirs})"
        )


def _loop_time() -> float:
    """The running loop's time(): Node.clock until the node starts."""
    return asyncio.get_running_loop().time()


class Node:
    """A DHT node. ``port=0`` binds an ephemeral port; ``node.addr`` tells which."""

    FAILED_MEMORY = 30.0  # seconds a failed peer is not offered or taken as a hint
    # Seconds after a stall of our own loop when failures not tied to a call do not count
    # (a call's failure counts unless the stall came while it was under way: _stalled_during).
    STALL_GRACE = 10.0
    PEERS_FILE = "peers.json"  # the remembered peers, in the data dir

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
        advertise: Address | None = None,
        new_address: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        #: The address peers reach us at, when not the one bound (a wildcard, a NAT); port 0
        #: there means the bound port. The node's id is SHA-1 of it (see advertise).
        self.advertised = advertise
        #: Whether a data dir that remembers another address may take this one (the node moved).
        self.new_address = new_address
        self._data: DataDir | None = None
        #: Whether this node took its data dir (another node's in use is refused before):
        #: what a failed start wrote there is its own to remove (cli_node).
        self.took_data_dir = False
        #: What was found removed or moved under us (_check_data_dir): the data dir, or the
        #: store's file in it; and whether it is the file alone (the dir is still there).
        self.lost_path: Path | None = None
        self.store_file_lost = False
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.config = config or NodeConfig()
        ids.check_ring_name(self.config.ring)  # (ValueError: it goes into every id)
        self.store_config = store_config or StoreConfig()
        if not 1 <= self.store_config.replicas <= self.config.leafset // 2 + 1:
            raise ValueError("replicas must be 1..L/2+1: replicas live on the successor list")
        # Values expire by the wall clock, which all nodes share; the simulator passes one
        # derived from its virtual time. Everything else here runs on the loop's clock.
        self.wall_clock = wall_clock
        #: The loop's clock (its time()), bound at start: every read and write asks it a few
        #: times, and asyncio.get_running_loop() costs a getpid() system call each time (CPython
        #: 3.11's check for a fork; 6 a get, 4 % of a get's CPU on a settled ring, py-spy).
        self.clock: Callable[[], float] = _loop_time
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
        self._tasks: list[asyncio.Task[Any]] = []
        self._tasks_kept = 16  # (see background)
        self.leafset = LeafSet(Peer(self.id, self.addr), self.config.leafset)
        self.fingers = FingerTable(self.id)
        self.view = RingView(Peer(self.id, self.addr))  # nodes heard of lately (routing.RingView)
        #: Whether log messages start with the node's id prefix too (the Server API's nodes:
        #: a program's own log format does not show the records' ``node``).
        self.named_logs = False
        self.log = NodeLog(log, "--------")
        self.detector = FailureDetector(self.config.failure_strikes, self.FAILED_MEMORY)
        peers_file = self.data_dir / self.PEERS_FILE if self.data_dir is not None else None
        self.memory = PeerMemory(
            peers_file, verify_ids=self.config.verify_ids, ring=self.config.ring
        )
        # Whether we belong to a ring with other nodes. A member whose tables empty has lost
        # contact (a partition, an overload): it rejoins, and never serves as a ring of one.
        self.member = False
        #: Why this node left its ring by itself (None: it did not): its store's file was
        #: deleted (_check_data_dir). `udpdht node` then exits with status 2.
        self.left_because: str | None = None
        self._hand_off: asyncio.Task[None] | None = None  # (_leave_without_store)
        self._said: set[str] = set()  # what the store-deleted path said already (_say_once)
        #: Whether this node has had a neighbour since it started (joined, or rejoined after a
        #: restart): one isolated since then lost contact, even a moment after its start.
        self.had_neighbours = False
        self.maintenance = Maintenance(self)
        self._replicator: Replicator | None = None
        # The admin secret: given, or kept in the data dir, or made up for this run.
        self.cookie = cookie
        self._verifier: Verifier | None = None
        self.finished = asyncio.Event()  # set once the node has stopped (leave, shutdown, stop)
        self.leaving = False  # a leave has begun (maintenance.Maintenance._rpc_leaving)
        self._failures_budget = TokenBucket(10.0, 0.0)  # failed node tasks logged (background)
        self._leave_asked = False  # an admin asked for a leave, which starts after the reply
        self.handed_off = False  # a leave has handed the store over (the rest is messages)
        #: Called after each lookup this node runs (lookup_id: its own, a client's, the store's
        #: and maintenance's) with the Lookup, or None when it failed, and the seconds it took.
        #: Metrics feed on it (udpdht.metrics); with none, lookups are not even timed.
        self.lookup_observers: list[Callable[[Lookup | None, float], None]] = []
        #: The `kademlia` protocol on this node's port (NodeConfig.kad), once started.
        self.kad: KadService | None = None

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
        ep = await self._bind()
        self.clock = loop_clock(asyncio.get_running_loop())
        self._started_at = self.clock()
        try:
            # (All of it: a damaged cookie file failed the start after the store alone was
            # guarded, and left the socket bound and the data dir locked, so that a Server
            # could not try again in the same process; a maintainer's review.)
            # Our ring first: a member from the start, rejoining, takes in only the nodes it
            # rejoins through (Maintenance._rpc_notify). Restored after the store opened (in a
            # thread), a stranger's notify that came meanwhile took a node restarted alone
            # into a ring with it, 12 runs of 12 (the attack's third helper).
            self._restore_membership()
            self._register_handlers(ep)
            await self._open_store(ep)
            if self.config.kad:
                self.kad = KadService(self)
                self.kad.attach()
        except BaseException:
            if self.kad is not None:
                self.kad.close()
                self.kad = None
            if self._replicator is not None:
                self._replicator.store.close()
                self._replicator = None
            await self._unbind(ep)
            raise
        if self._maintenance_on:
            # (As node tasks: a failure is logged; stop() no longer raises it: a review.)
            self.background(self.maintenance.run())
            self.background(self._sync_store())
        # (udpdht node prints where it listens: logged at INFO too, the line showed twice.)
        self.log.debug("listening on %s", format_addr(self.addr))

    async def _bind(self) -> RpcEndpoint:
        """Take the data dir (one node each), bind the socket, settle our address and id, and
        claim the address in the data dir; on any failure, undo what was done."""
        if self.data_dir is not None:
            self._data = DataDir.open(self.data_dir)  # one node per data dir (DataDirError)
            self.took_data_dir = True
            try:
                self._data.claim_ring(self.config.ring)  # (its id and peers are that ring's)
            except BaseException:
                self._release_data_dir()
                raise
        try:
            ep = await RpcEndpoint.bind(
                self.network, (self.host, self.port), config=self.rpc_config, rng=self._seeded_rng
            )
        except BaseException:
            self._release_data_dir()
            raise
        self._endpoint = ep
        ep.exempt = self.in_leafset  # (their pages take milliseconds: rpc._charge)
        try:
            self._set_address(self._advertised_addr(ep.addr))
            if (
                self._fixed_id is not None
                and self.config.verify_ids
                and not self.peer.id_matches(self.config.ring)
            ):
                raise ValueError(
                    "a node with a chosen id needs NodeConfig(verify_ids=False), on every node "
                    "of its ring: verifying nodes refuse ids that are not SHA-1 of the address"
                )
            if self._data is not None and not ipaddress.ip_address(self.addr[0]).is_unspecified:
                # (A wildcard is named by advertise() next.) A node on an ephemeral port has
                # a new address at every start: nothing to hold it to.
                ephemeral = self.port == 0 and self.advertised is None
                self._claim_address(moved=self.new_address or ephemeral)
        except BaseException:
            await self._unbind(ep)
            raise
        return ep

    async def _unbind(self, ep: RpcEndpoint) -> None:
        """Undo _bind: a start that failed after it leaves no socket nor data dir lock."""
        ep.close()
        self._endpoint = None
        self._release_data_dir()
        await ep.wait_closed()

    def _register_handlers(self, ep: RpcEndpoint) -> None:
        """The node's own methods, the ring's (Maintenance) and the admin ones (cookie)."""
        # Reads are idempotent: a retry may simply run them again, so their replies are not
        # cached.
        for name, handler in (
            ("ping", self._rpc_ping),
            ("status", self._rpc_status),
            ("find", self._rpc_find),
        ):
            ep.register(name, handler, idempotent=True)
        self.maintenance.register()
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

    async def _open_store(self, ep: RpcEndpoint) -> None:
        """The store (on disk with a data dir, else in memory) and the Replicator's methods."""
        store: Store = MemoryStore()
        if self.data_dir is not None:
            # Opening counts every record of the index (1.8 s at a million): off the loop, so
            # that the endpoint, already bound, does not go deaf meanwhile. Store calls get
            # BUSY until then (not cached: the caller's retry finds the store), not "unknown
            # method".
            for name in Replicator.METHODS:
                ep.register(name, self._store_opening, idempotent=True)
            try:
                store = await asyncio.to_thread(DiskStore, self.data_dir)
            except EngineError as exc:  # (a full disk is StoreFull, from DiskStore itself)
                # (A 51-line traceback before, and under systemd a restart every 5 s.)
                raise DataDirError(
                    f"cannot open the store in {self.data_dir}: {exc} (a damaged file?); move "
                    f"{STORE_FILE} out of it to start this node empty: it then takes its "
                    "range from its neighbours"
                ) from None
            self.log.info("loaded %s from %s", plural(len(store), "record"), self.data_dir)
            if self._data is not None:
                self._data.watch(STORE_FILE)  # (deleted alone, it went unnoticed: a trial)
        self._replicator = Replicator(self, store, self.store_config)
        self._replicator.register()
        quota, used = self.store_config.max_store_bytes, self._replicator.quota_used()
        if quota is not None and used > quota:
            # (Started again with a smaller quota: said at once, not at its first refusal.)
            self.log.warning(
                "the store holds %s bytes, more than its quota of %s (--max-store-bytes): it "
                "refuses new records, and the copies it should hold, until it is under it",
                f"{used:,}",
                f"{quota:,}",
            )

    def _restore_membership(self) -> None:
        """A node whose data dir remembers peers of its ring rejoins it (never starts a second
        one): it is a member already."""
        if not self.memory.load():
            return
        self.member = True
        # (The bootstrap addresses are named too: they are tried only if none answers, and an
        # operator who gave one should see that it was heard.)
        boot = ", ".join(map(format_addr, self.bootstrap))
        one = len(self.memory) == 1
        also = f", or through {boot} if {'it does not answer' if one else 'none answers'}"
        self.log.info(
            "remembers %s of its ring; rejoins through %s%s",
            plural(len(self.memory), "peer"),
            "it" if one else "them",
            also if boot else "",
        )

    def _advertised_addr(self, bound: Address) -> Address:
        if self.advertised is None:
            return bound
        host, port = self.advertised
        return check_peer_addr(host, port or bound[1])

    def _check_data_dir(self) -> None:
        """Say so when our data dir, or the store's file in it, was removed or moved under us
        (status ``data_dir_lost``, ``lost_path``), when what is lost changes (the file went,
        then the dir), and when it is back: an operator's ``rm -rf`` went unnoticed, the node
        served on from files no longer there, and the next start found nothing."""
        if self._data is None:
            return
        store = self.replicator.store
        if isinstance(store, DiskStore) and not self.leave_begun and store.file_deleted():
            self._leave_without_store(store.path)
        lost = self._data.lost()
        if lost == self.lost_path:
            return
        was, self.lost_path = self.lost_path, lost
        self.store_file_lost = lost is not None and lost != self._data.path
        if lost == self._data.path:
            self.log.error(
                "data dir %s was removed or moved while this node runs: its files are no "
                "longer at that path, and a start from it would begin empty. Moved, the node "
                "still writes them where they went: put the dir back (also after this node "
                "stops: nothing is lost). Deleted, the node hands its records to its "
                "successors and leaves the ring: start it again with --bootstrap to take its "
                "range back from its neighbours (%s)",
                self.data_dir,
                _RING_OF_ONE,
            )
        elif lost is not None:
            self.log.error(
                "the store's file %s was removed, moved or replaced while this node runs: a "
                "start from its data dir would begin empty. Moved, put it back. Deleted, the "
                "node hands its records to its successors and leaves the ring: start it again "
                "with --bootstrap to take its range back from its neighbours (%s)",
                lost,
                _RING_OF_ONE,
            )
        elif was == self._data.path:
            self.log.info("data dir %s is back", self.data_dir)
        else:
            self.log.info("the store's file %s is back", was)

    def _leave_without_store(self, path: Path) -> None:
        """Our store's file was deleted: hand what it holds to our successors, leave the
        ring, and stop. It refuses writes meanwhile (DiskStore._still_ours): those it took
        would be lost when we stop. Kept running, the node refused every write of its range
        as the key's primary, and was named "full ... once it has room" in `ring`, for as long
        as no one restarted it: worse than a crash, which the ring routes round in seconds
        (an operator's trial). A ring of one has no one to hand its records to: it stays,
        refusing writes, as it says."""
        # (Each said once: every store round looks again.)
        self._say_once(
            logging.ERROR,
            "its store's file %s was deleted: what this node takes now would be lost when it "
            "stops, so it refuses writes, hands what it holds to its successors and leaves the "
            "ring. Start it again with --bootstrap: it takes its range back from its neighbours",
            path,
        )
        if not self.leafset.peers():
            self._say_once(
                logging.ERROR,
                "it has no neighbour to hand its records to: it keeps serving them, refusing "
                "writes (%s)",
                _RING_OF_ONE,
            )
            return
        if self._hand_off is None or self._hand_off.done():
            self._hand_off = self.background(self._hand_off_and_leave(path))

    async def _hand_off_and_leave(self, path: Path) -> None:
        """Leave once our successors took everything we hold; else keep serving it (refusing
        writes) and try again at the next store round. (A leave whose hand-off failed stopped
        all the same, and the records went with the deleted file: a reviewer's trial, the
        data dirs of several nodes under one parent removed at once.)"""
        if not await self.replicator.before_leave(quiet=True):
            self._say_once(
                logging.WARNING,
                "no successor took its records yet: it keeps serving them, refusing writes, and "
                "tries again at each store round",
            )
            return
        self.left_because = f"its store's file {path} was deleted"
        await self.leave(forget=False, handed_off=True)

    def _say_once(self, level: int, message: str, *args: object) -> None:
        """Log ``message`` the first time only (its text, before the arguments, says which)."""
        if message not in self._said:
            self._said.add(message)
            self.log.log(level, message, *args)

    def gained_neighbours(self) -> None:
        """We are in a ring with others (a join, stabilize, a notify, a round with a
        leafset): a member, and one that has had a neighbour since its start (starting)."""
        self.member = self.had_neighbours = True

    @property
    def data_dir_lost(self) -> bool:
        """Whether our data dir, or the store's file in it, is found removed or moved (status
        ``data_dir_lost``; lost_path says which)."""
        return self.lost_path is not None

    def _release_data_dir(self) -> None:
        data, self._data = self._data, None
        if data is not None:
            data.close()

    def _set_address(self, addr: Address) -> None:
        """Name this node ``addr``; its id follows (unless chosen), and so do its tables."""
        self.addr = addr
        if self._fixed_id is None:
            self.id = ids.node_id_for(addr[0], addr[1], self.config.ring)
        self.leafset = LeafSet(Peer(self.id, addr), self.config.leafset)
        self.fingers = FingerTable(self.id)
        self.view = RingView(Peer(self.id, self.addr))  # nodes heard of lately (routing.RingView)
        self.maintenance.reset()
        self.log = NodeLog(log, ids.short(self.id), named=self.named_logs)
        if self._endpoint is not None:
            self._endpoint.identity = ids.to_bytes(self.id)  # (requests for another id: refused)
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
        self.advertised = addr
        self._set_address(check_peer_addr(*addr))
        if self._data is not None:
            self._claim_address(moved=self.new_address or self.port == 0)

    def _claim_address(self, *, moved: bool) -> None:
        """Record our address in the data dir (DataDirError: it is another node's); a move
        asked for (--new-address) is logged, with the new id it brings (it said nothing: an
        operator's trial)."""
        assert self._data is not None
        was = self._data.claim(self.addr, moved=moved)
        if was is not None and self.new_address:
            self.log.info(
                "moved from %s to %s (--new-address): a new id, %s; its records stay",
                format_addr(was),
                format_addr(self.addr),
                ids.short(self.id),
            )

    @staticmethod
    def _store_opening(args: dict[str, Any], src: Address) -> None:
        raise Busy("the node is opening its store; try again in a moment")

    def background(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as a task of this node: cancelled when the node stops. What it raises
        is logged when it ends (nothing awaits these tasks for their outcome)."""
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(self._background_done)
        self._tasks.append(task)
        if len(self._tasks) > 2 * self._tasks_kept:  # amortized: not a scan per task
            self._tasks = [t for t in self._tasks if not t.done()]
            self._tasks_kept = len(self._tasks) + 16
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        # Ten a minute at most, with their tracebacks: whatever a stranger might make a task
        # fail with, the log stays readable (as RpcEndpoint's handler failures).
        if self._failures_budget.take(10 / 60, 10.0, time.monotonic()):
            what = getattr(task.get_coro(), "__qualname__", task.get_name())
            self.log.error("%s failed: %r", what, exc, exc_info=exc)

    async def stop(self) -> None:
        """Stop at once (a crash, as far as the ring can tell). See :meth:`leave`."""
        # Not the task running this (an admin's shutdown or leave runs as one of them).
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        self._tasks = []
        for task in tasks:
            task.cancel()
        # (Their outcomes: logged as they ended (background). One that had failed was raised
        # here, and the node stopped halfway: its socket open, its data dir locked, `finished`
        # never set (a maintainer's review).)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.kad is not None:
            self.kad.close()
            self.kad = None
        ep, self._endpoint = self._endpoint, None
        if ep is not None:
            ep.close()
            await ep.wait_closed()
            saved = self.memory.save()
            if not saved and self.memory.error is not None and not self.data_dir_lost:
                # (A data dir found lost was said already, with what to do: an operator's
                # trial read this warning as news at the stop.)
                self.log.warning(NOT_REMEMBERED, self.memory.error)
        if self._replicator is not None:
            self._replicator.store.close()
            self._replicator = None
        self._release_data_dir()
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

    async def join(self, bootstrap: Address | str) -> None:
        """Join the ring that ``bootstrap`` (``(host, port)`` or ``"HOST:PORT"``) belongs to.

        On real sockets, errors.Refused at once when the bootstrap's host says that nothing
        listens there (a closed port); RpcTimeout when it does not answer at all."""
        if isinstance(bootstrap, str):
            bootstrap = parse_addr(bootstrap)
        if isinstance(self.network, UdpNetwork):
            bootstrap = await resolve(bootstrap)
            _same_family(bootstrap, self.addr)
            await unless_refused(self._join(bootstrap), bootstrap, "join", wire.PING_PROBE)
        else:
            await self._join(bootstrap)

    JOIN_PATIENCE = 10  # stabilize periods a join waits for the ring to repair at our place
    JOIN_CANDIDATES = 3  # the owner of our id and the nodes after it, asked in turn (_join)

    async def _join(self, bootstrap: Address) -> None:
        started = self.clock()
        period = self.config.stabilize_period
        deadline = started + self.JOIN_PATIENCE * period
        for _ in range(4 * self.JOIN_PATIENCE):  # bounded; the deadline ends it first
            candidates = await self._join_owner(bootstrap, started)
            answer = await self._answering_successor(candidates[: self.JOIN_CANDIDATES])
            if answer is not None:
                break
            waited = self.clock() - started
            if self.clock() + period / 2 > deadline:
                raise Unavailable(
                    f"the ring names {candidates[0]} this node's successor, and neither it nor "
                    f"the nodes after it answered for {waited:.0f} s: the ring has not repaired "
                    "itself there yet; try again later"
                )
            self.log.info("joining: %s, our successor by the ring, is silent", candidates[0])
            await asyncio.sleep(period / 2)
        else:
            raise Unavailable("the ring did not repair itself at this node's place; try later")
        owner, (succs, preds, fingers) = answer
        # (A node that joined a moment ago may sit between us and the owner, which the
        # ring's older nodes do not know yet: our first stabilize walks back to it. Doing it
        # here instead slows a thousand joins through one node from 14 to 85 virtual s: the
        # owner, which hears from every joiner and hints each its place, would not be asked.)
        self.leafset.set_successors([owner, *succs])
        # Its predecessors, those before us, are ours: we are primary for our range at once,
        # instead of leaving it to nobody until our predecessor's next round notifies us (the
        # successor gives it up as soon as we notify it). Rectify corrects the list if another
        # node joined just before us meanwhile.
        self.leafset.set_predecessors(
            [p for p in preds if not ids.in_interval(p.id, self.id, owner.id, right_open=False)]
        )
        self.maintenance.seed_fingers([owner, *succs, *preds, *fingers])
        self.gained_neighbours()
        self.log.info("joined the ring: successor %s", owner)
        self.maintenance.joined(owner)
        # Tell the successor now rather than at the next round: from then on it refuses writes
        # for our share of its keys, so the records fetched next include every acknowledged one.
        # (It names the predecessor it had, which is told of us too: it takes us for its
        # successor at once, an early stabilize, section 9.7, instead of at its next round.)
        await self.maintenance.notify(owner)
        if any(ids.in_interval(p.id, self.id, owner.id) for p in preds):
            # The owner knows nodes between us and it (they joined a moment ago, and the
            # nodes our lookup asked did not know them yet): walk back to them now.
            self.maintenance.stabilize_soon()
        self.maintenance.introduce_soon(owner)
        # A hand-off that fails is logged and shown in status ("handoff"); the node is in the
        # ring all the same, its reads ask the replicas until it is settled, and repair brings
        # the rest of its range.
        with contextlib.suppress(DhtError, *PEER_FAILURES, EngineError):
            await self.replicator.after_join(owner)

    async def _answering_successor(
        self, candidates: list[Peer]
    ) -> tuple[Peer, tuple[list[Peer], list[Peer], list[Peer]]] | None:
        """The first of ``candidates`` (the owner of our id, then the nodes after it) that
        answers, with its lists (Maintenance.neighbors_when_joining); None: none did. In turn,
        not at once as Maintenance._first_answering asks a round's successors: the first is
        the one, and usually answers.

        A ring that has not noticed yet that a node crashed names it as the owner for a while
        (a new user's trial: a join just before a node killed with -9 failed after 4.7 s,
        naming that node). Past a dead owner, the next node owns our id now; a live but slow
        owner would lie between us and that node, which our first stabilize finds."""
        for i, peer in enumerate(candidates):
            tries = 0 if i == len(candidates) - 1 else self.config.lookup_tries
            try:
                return peer, await self.maintenance.neighbors_when_joining(peer, tries=tries)
            except RpcTimeout as exc:
                self.peer_failed(peer, exc)
        return None

    async def _join_owner(self, bootstrap: Address, started: float) -> list[Peer]:
        """The node that owns our id, by a lookup from ``bootstrap`` (our successor to be),
        and the nodes after it.

        Confirmed: the owner itself says so. While a ring forms, the nodes asked may not know
        nodes that joined a moment ago; their successors do (PROTOCOL.md 9.5)."""
        try:
            found = await self.lookup_id(self.id, start=bootstrap, confirm=True)
        except LookupFailed as exc:
            cause = exc.cause
            if exc.hops == 0 and isinstance(cause, RpcTimeout):
                # The bootstrap itself did not answer: say that, not "no live route to <id>
                # after 0 hops", nor name the call it did not answer (a new user's trial).
                if type(cause) is RpcTimeout:
                    cause = RpcTimeout(bootstrap, "join", cause.tries, self.clock() - started)
                raise cause from None
            if exc.hops == 0 and isinstance(cause, ValueError):
                # It answered, but is not a node we can join (another ring's, one advertising
                # another address): why, as the CLI says it. "No live route to <id> after 0
                # hops (...: ValueError)" told a user of Node.join and Server.bootstrap
                # nothing (a new user's trial). (Its callers name the address.)
                raise DhtError(str(cause)) from None
            raise
        owner: Peer | None = found.owner
        if found.owner.id == self.id and found.owner.addr == self.addr:
            # Our own entry from before a restart, still in the ring's tables: our successor
            # is the node after it.
            owner = next((p for p in found.successors if p.id != self.id), None)
        elif found.owner.id == self.id:
            raise DhtError(f"node id {ids.to_hex(self.id)} is already taken by {found.owner}")
        if owner is None:
            raise DhtError("the ring knows no node but our own former self; try again later")
        after = [p for p in found.successors if p.id not in (self.id, owner.id)]
        return [owner, *after]

    async def leave(self, *, forget: bool = True, handed_off: bool = False) -> None:
        """Leave gracefully: tell both neighbours so the ring closes at once, then stop.

        ``forget``: forget the peers the data dir remembers, so that a later start is a new
        ring unless told where to join (the node left for good). A node stopped to be started
        again (``udpdht node`` on SIGTERM: a restart, an upgrade) keeps them and rejoins.
        ``handed_off``: our records were handed to our successors already.
        """
        self.leaving = True
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if not handed_off:
            await self.replicator.before_leave()
        self.handed_off = True
        ls = self.leafset
        me = ids.to_bytes(self.id)
        # The successor learns our predecessors, the predecessor our successors; in a ring of
        # two they are one node and get one message with both. Every other node of the leafset
        # just learns that we are gone, so none of them wastes a timeout on us.
        # ``back``: stopped to start again, we stay in their remembered peers, as a node that
        # crashed does (a whole ring stopped by SIGTERM at once: the last node to stop had
        # heard every other one leave, forgot them all, and came back as a new ring of one).
        told: dict[str, Any] = {"id": me} if forget else {"id": me, "back": True}
        messages: dict[int, tuple[Peer, dict[str, Any]]] = {
            p.id: (p, dict(told)) for p in ls.peers()
        }
        if ls.successor is not None:
            messages[ls.successor.id][1]["preds"] = [p.to_wire() for p in ls.predecessors]
        if ls.predecessor is not None:
            messages[ls.predecessor.id][1]["succs"] = [p.to_wire() for p in ls.successors]
        if messages:  # (none: alone, or out of contact with its ring; no ring to leave)
            calls = [self.call_peer(peer, "leaving", a, tries=2) for peer, a in messages.values()]
            await asyncio.gather(*calls, return_exceptions=True)
            self.log.info("left the ring")
        if forget:
            self.memory.forget()  # we left for good: a restart starts afresh unless told where
        else:
            self.memory.remember(ls.peers(), self.id)  # (stop saves them)
        await self.stop()

    @property
    def isolated(self) -> bool:
        """Whether this node belonged to a ring with others and has lost every neighbour: it
        is rejoining, and serves no key meanwhile."""
        return self.member and not self.leafset.successors and not self.leafset.predecessors

    STARTING_FOR = STARTING_FOR  # (limits.py; an attribute, for a test to change)

    @property
    def starting(self) -> bool:
        """Whether this node, isolated, is rejoining its ring right after its start (within
        STARTING_FOR, with no neighbour yet since), not cut off from it. A node restarted on
        its data dir, asked within half a second, said it had "lost contact with its ring",
        and the client's hint told the user to consider --new-ring (which starts a second
        ring) for what was a restart (a new user's trial); one whose only peer was killed 20 s
        after its start said it had just started (another)."""
        return self.isolated and not self.had_neighbours and self.uptime() < self.STARTING_FOR

    def _isolated_words(self) -> str:
        """Why an isolated node serves no key: just started and rejoining, or cut off."""
        if self.starting:
            up = self.uptime()
            return f"this node started {up:.1f} s ago and is rejoining its ring; try again shortly"
        return "this node has lost contact with its ring and is rejoining"

    # --- the key-value store -------------------------------------------------------------------

    @property
    def replicator(self) -> Replicator:
        if self._replicator is None:
            raise RuntimeError("node is not started")
        return self._replicator

    async def put(
        self, key: str | bytes, value: Any, ttl: float | None = None, *, unless_same: bool = False
    ) -> None:
        """Store ``value`` (any msgpack value) under ``key`` on its r replicas. ``unless_same``:
        if the key's primary holds this very value already (with no expiry), nothing is
        written (no new version; see Replicator.put)."""
        data = wire.pack_value(value, MAX_VALUE)
        await self.replicator.put(key_bytes(key), data, ttl, unless_same=unless_same)

    async def get(self, key: str | bytes) -> Any:
        """The value of ``key``; KeyNotFound when it has none."""
        record = await self.replicator.get(key_bytes(key))
        assert record.value is not None
        return wire.unpack_value(record.value)

    async def delete(self, key: str | bytes) -> bool:
        """Delete ``key``; returns whether it had a value."""
        written = await self.replicator.put(key_bytes(key), None, None)
        return written.existed

    async def _sync_store(self) -> None:
        period = self.store_config.sync_period
        while True:
            await asyncio.sleep(period * (0.5 + self.rng.random()))
            try:  # (the check inside too: a failure of it ended the store's rounds for good)
                self._check_data_dir()
                if self._hand_off is not None and not self._hand_off.done():
                    continue  # (its store's file deleted: no round beside that hand-off)
                await self.replicator.sync_round(may_skip=True)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("store sync round failed")

    # --- calling peers: what lookup.py, replication.py and maintenance.py use of a node -------

    async def call_peer(
        self,
        peer: Peer,
        method: str,
        args: dict[str, Any] | None = None,
        *,
        tries: int = 0,
        pad: bool = False,
    ) -> Any:
        """Call a peer; a reply clears the failures counted against it (an error reply does
        not: a peer that only ever says no is of no use either). ``pad``: see RpcEndpoint.call
        (for the ring's own calls with answers of a few hundred bytes: find, neighbors)."""
        ep = self._endpoint
        if ep is None:  # stopped (left, shut down) while a request of its was under way
            raise DhtError("this node has stopped")
        if method in _ADDRESSED and peer.id >= 0:
            args = {**(args or {}), "to": ids.to_bytes(peer.id)}  # (rpc: RpcEndpoint.identity)
        try:
            result = await ep.call(peer.addr, method, args, tries=tries or None, pad=pad)
        except NotResponsible as exc:
            # (Another node at its address: it is gone. Error messages come as "method: ...":
            # compared with NOT_CALLED alone, this never matched, and writes kept going to the
            # other node until a ping's id check caught it; a maintainer's review.)
            if exc.message == f"{method}: {NOT_CALLED}":
                self.peer_failed(peer, ValueError(f"{peer} is gone: {NOT_CALLED}"))
            raise
        if type(result) is not dict and method in _NAMED and peer.id >= 0:  # (most are maps)
            # (Its answer must name it: a process on a dead node's port that answered pings
            # with 1 kept it alive; the attack's second helper.)
            raise ValueError(f"{peer} answered {method!r} with no map")
        if peer.id >= 0 and type(result) is dict:
            said = result.get("id")  # (a missing one too, from a method that must: _NAMED)
            if (said is not None or method in _NAMED) and said != ids.to_bytes(peer.id):
                # Another node answers at that address: the one we know there is gone. A node
                # of another ring on the port of one of ours that had crashed answered our
                # pings, so ours stayed our predecessor for 4.5 minutes, and the writes of its
                # range went to the other ring (a new user's trial).
                raise ValueError(f"{peer} answered {method!r} with another node's id")
        self.detector.answered(peer.id)
        if peer.id >= 0:  # (-1: a node known by its address only, until it answers)
            self.view.add(peer, self.clock())
        return result

    def in_leafset(self, addr: Address) -> bool:
        """Whether ``addr`` is a node of our leafset (a neighbour: it replicates to us, hands
        keys off, repairs; its requests are neither charged nor budgeted as a stranger's)."""
        return self.leafset.has_addr(addr)

    def heard_of(self, peers: Iterable[Peer], now: float) -> None:
        """``peers`` were named by a node of the ring (in a lookup's answer, or as the holders
        of a key): guesses for the view, dropped if a call to one fails, and not taken again
        on hearsay while suspected or lately dead (a liar naming a node that does not exist
        costs each coordinator one failed call). Hearsay adds nodes; it never moves one the
        view knows to another address (only that node's own answers do, call_peer): with ids
        not bound to addresses (verify_ids off), a stranger's hello under a member's id would
        otherwise draw that member's reads."""
        detector, view = self.detector, self.view
        for p in peers:
            known = view.get(p.id)
            if known is not None and known.addr != p.addr:
                continue
            if not detector.suspected(p.id) and not detector.recently_dead(p.id, now):
                view.add(p, now)

    def parse_peers(self, items: Any) -> list[Peer]:
        """A peer list a peer sent: bounded by L, every entry checked (routing.peers_from_wire).

        Raises ValueError; a handler turns it into BadRequest, a caller into a peer failure.
        """
        return peers_from_wire(
            items, self.config.leafset, verify_ids=self.config.verify_ids, ring=self.config.ring
        )

    def arg_peers(self, args: dict[str, Any], name: str) -> list[Peer]:
        try:
            return self.parse_peers(args.get(name, []))
        except ValueError as exc:
            raise BadRequest(f"argument {name!r}: {exc}") from None

    def sender(self, args: dict[str, Any], src: Address) -> Peer:
        """The node that sent a request, from its claimed ``id`` and the datagram's source.

        With verify_ids the id must be SHA-1 of that source address: a stranger cannot claim
        an id it does not own (nor another node's id) to take a place in our tables.
        """
        claimed = arg_id(args, "id")
        try:
            addr = check_peer_addr(*src)
        except ValueError as exc:
            raise BadRequest(f"cannot take the sender as a peer: {exc}") from None
        if self.config.verify_ids and claimed != ids.node_id_for(
            addr[0], addr[1], self.config.ring
        ):
            raise BadRequest(
                f"id {ids.short(claimed)} is not this sender's: a node's id is SHA-1 of its "
                f"address ({format_addr(addr)})"
            )  # (short: within 3 times a small request, it needs no token)
        return Peer(claimed, addr)

    def forget_left(self, peer_id: int, src: Address) -> None:
        """The node at ``src`` says that it leaves: drop it from the view (guesses) and from
        the peers kademlia's find_node may name (kad/service.py), when it is ``src`` that
        those name under this id (no one else can make us drop it)."""
        seen = self.view.get(peer_id)
        if seen is not None and seen.addr == src:
            self.view.remove(peer_id)
        if self.kad is not None:
            self.kad.left(peer_id, src)

    def peer_failed(self, peer: Peer, exc: BaseException | None = None) -> None:
        """A call to ``peer`` failed with ``exc`` (None: no answer). It is forgotten, wherever
        it appears, once the failure detector has consistent evidence: two failures in a row
        (membership.FailureDetector), or one answer that makes no sense. A BUSY is no failure:
        the peer is alive and says so."""
        if isinstance(exc, Busy):
            return
        self.view.remove(peer.id)  # at once: the view is only for guesses
        self.maintenance.failures += 1  # (news: the rounds come at their full rate again)
        now = asyncio.get_running_loop().time()
        if isinstance(exc, MALFORMED):  # it answered, with nonsense: no need to ask again
            self.detector.declare_dead(peer.id, now)
        else:
            stalled = self._stalled_during(exc, now) if self.running else False
            if not self.detector.failed(peer.id, now, stalled=stalled):
                self.log.debug("peer %s did not answer; suspected", peer)
                return
        in_leafset = self.leafset.remove(peer.id)
        in_fingers = self.fingers.remove(peer.id)
        self.maintenance.peer_declared_dead(peer.id)
        if in_leafset or in_fingers:
            self.log.info("peer %s failed; removed", peer)

    def _stalled_during(self, exc: BaseException | None, now: float) -> bool:
        """Whether our own loop stalled while the failed call was under way: its timeouts
        then say nothing of the peer. A failure that names no call (``exc`` not a timeout)
        counts any stall in the last STALL_GRACE seconds.

        (Every failure within STALL_GRACE of a stall was once discounted, calls begun after it
        too: a node that had been frozen itself then took 10 s more to notice that its
        predecessor was frozen, and writes of that range failed meanwhile, 4 deletes in 58
        through a ring of 4 with the key's primary frozen.)"""
        last = self.endpoint.last_stall
        if isinstance(exc, RpcTimeout):
            return last >= now - exc.elapsed
        return now - last < self.STALL_GRACE

    # --- maintenance (maintenance.py) -----------------------------------------------------------

    async def stabilize(self) -> None:
        await self.maintenance.stabilize()

    async def fix_fingers(self) -> None:
        await self.maintenance.fix_fingers()

    # --- lookups -------------------------------------------------------------------------------

    def local_find(self, key: int, *, strict: bool = False) -> tuple[bool, list[Peer]]:
        """One routing step at this node (see routing.next_hop)."""
        if self.isolated:
            raise Unavailable(self._isolated_words())
        return next_hop(
            self.leafset,
            self.fingers,
            key,
            width=self.config.lookup_width,
            min_owners=self.store_config.replicas,
            strict=strict,
        )

    def local_owner(self, key: int, *, strict: bool = False) -> Lookup | None:
        """The owner of ``key`` and the nodes after it as our leafset names them, with no call;
        None when it does not (the key lies outside its span, or so near its far end that it
        cannot name the holders after the owner: a lookup asks a node)."""
        if not self.leafset.covers(key):
            return None  # (next_hop would only name candidates: not worth computing here)
        done, nodes = self.local_find(key, strict=strict)
        return Lookup(nodes[0], [], nodes[1:]) if done else None

    async def lookup(self, key: str | bytes) -> Lookup:
        """Find the owner of a key, with the hop trace."""
        return await self.lookup_id(ids.hash_key(key))

    async def lookup_id(
        self,
        key: int,
        *,
        start: Address | None = None,
        confirm: bool = True,
        via: Peer | None = None,
        strict: bool = False,
        near: Container[int] = (),
    ) -> Lookup:
        """Find the owner of a ring position; ``start`` begins at a node given by address.

        ``confirm``: ask the owner itself before believing whoever named it (lookup.py). The
        store skips it: the owner checks its own responsibility when it gets the read or write.
        ``via``: a node of our tables to ask first, ``near``: see lookup.iterative_lookup.
        ``strict``: see routing.next_hop.
        """
        # Our leafset names the owner (a store's lookups for keys near us: a fifth of the gets
        # in a ring of 100): answered here, without a lookup's bookkeeping. (iterative_lookup
        # answers so too, before it asks ``via``.)
        if start is None and (found := self.local_owner(key, strict=strict)) is not None:
            if self.lookup_observers:
                self._observe_lookup(found, 0.0)
            return found
        if not self.lookup_observers:
            return await iterative_lookup(
                self, key, start=start, confirm=confirm, via=via, strict=strict, near=near
            )
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            found = await iterative_lookup(
                self, key, start=start, confirm=confirm, via=via, strict=strict, near=near
            )
        except Exception:
            self._observe_lookup(None, loop.time() - began)
            raise
        self._observe_lookup(found, loop.time() - began)
        return found

    def _observe_lookup(self, found: Lookup | None, seconds: float) -> None:
        for observer in self.lookup_observers:
            try:
                observer(found, seconds)
            except Exception:  # an observer's bug must not fail the lookup
                self.log.exception("lookup observer %r failed", observer)

    # --- handlers ------------------------------------------------------------------------------

    def _rpc_ping(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        reply: dict[str, Any] = {"id": ids.to_bytes(self.id)}
        if self.isolated:  # a node rejoining tells the others (maintenance.Maintenance._rejoin)
            reply["isolated"] = True
            self.maintenance.heard_while_isolated(src)
        if args.get("addr") is True:
            # The address we name ourselves by: a caller that reached us under another one (a
            # wildcard socket has several) learns the one our id belongs to. Only on request:
            # a plain ping's answer stays within three times its size (no token needed).
            reply["addr"] = list(self.addr)
            if self.starting:
                # How long it has run, in whole seconds, when it is rejoining right after its
                # start: a client tells it from one cut off from its ring (`udpdht ping` said
                # "lost contact" of a node started a second before: a maintainer's review).
                reply["up"] = int(self.uptime())
        return reply

    def _rpc_status(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        return self.status()

    def _rpc_find(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        done, nodes = self.local_find(arg_id(args, "key"), strict=args.get("strict") is True)
        # The owner and what follows it: enough for the replicas, and a bounded answer.
        nodes = nodes[: self.leafset.half + 1]
        return {"id": ids.to_bytes(self.id), "done": done, "nodes": [p.to_wire() for p in nodes]}

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
            from .cli_errors import in_words

            raise Unavailable(
                f"could not join through {format_addr(addr)}: {in_words(exc)}"
            ) from None
        succ = self.leafset.successor
        return {"successor": succ.to_wire() if succ is not None else None}

    def _after_reply(self, act: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``act()`` once the current reply has gone out: a task of the node's, which a
        stop before then cancels. (A timer that made the coroutine at once left a leave to
        start on a node stopped meanwhile, and an unawaited coroutine if the loop ended
        first; a maintainer's review.)"""

        async def later() -> None:
            await asyncio.sleep(0.05)
            await act()

        later.__qualname__ = f"the admin's {act.__name__}"  # (what a failure's log line names)
        self.background(later())

    @property
    def leave_begun(self) -> bool:
        """Whether a leave is under way or about to start (an admin's, or its store's file
        deleted): a second one would cancel the first's hand-off, and start it again."""
        return self.leaving or self._leave_asked or self.left_because is not None

    def _admin_leave(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        self._authorized("admin_leave", args)
        if self.leave_begun:  # (a second leave would cancel the first's hand-off)
            return {"leaving": True}
        self._leave_asked = True
        self.log.info("leaving the ring at an admin's request from %s", format_addr(src))
        self._after_reply(self.leave)
        return {"leaving": True}

    def _admin_shutdown(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        self._authorized("admin_shutdown", args)
        self.log.info("shutting down at an admin's request from %s", format_addr(src))
        self._after_reply(self.stop)
        return {"stopping": True}

    # --- status --------------------------------------------------------------------------------

    def uptime(self) -> float:
        """Seconds since the node started (call it on the node's loop)."""
        return asyncio.get_running_loop().time() - self._started_at

    def status(self) -> dict[str, Any]:
        """The status object (PROTOCOL.md section 8, `status`)."""
        ls = self.leafset
        pred = ls.predecessor
        return {
            "id": ids.to_hex(self.id),
            "addr": format_addr(self.addr),
            "ring": self.config.ring,  # ("": the ring with no name)
            "uptime_s": round(self.uptime(), 3),
            "starting": self.starting,  # (isolated right after its start: see starting)
            "predecessor": pred.info() if pred is not None else None,
            "successors": [p.info() for p in ls.successors],
            "predecessors": [p.info() for p in ls.predecessors],
            "fingers": [p.info() for p in self.fingers.distinct()],
            "view": self.maintenance.view_status(),
            "isolated": self.isolated,
            "store": self.replicator.counts(),
            # Whether this node's "no value" for a key of its range counts (replication.settled).
            "settled": self.replicator.settled(),
            "handoff": self.replicator.handoff,
            "repair": self.replicator.repair_stats(),
            "rpc": self.endpoint.stats.as_dict(),
            "kad": self.kad.status() if self.kad is not None else {"enabled": False},
            "build": BUILD,  # (README "A compiled build")
            "data_dir_lost": self.data_dir_lost,  # (removed or moved under us: _check_data_dir)
            # ... which: the dir, or the store's file alone (null while nothing is lost).
            "lost_path": str(self.lost_path) if self.lost_path is not None else None,
            "store_file_lost": self.store_file_lost,
        }
