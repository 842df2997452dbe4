"""A client of a `kademlia` network: what the shell and the CLI use with ``kad://H:P``.

:class:`KadClient` has an endpoint (``endpoint.py``) on a socket of its own, of the bootstrap
node's address family, and a 20-byte id: the user's own id and port (``identity.py``) for the
CLI and the shell, else a random id on an ephemeral port. It bootstraps by pinging the
given node; ``get`` is a find_value lookup, ``put`` a find_node lookup then ``store`` on the k
nearest, as ``kademlia.network.Server`` does them, and each lookup keeps its trace
(``lookup.py``).

A kademlia node adds whoever asks it anything to its routing table (``welcome_if_new``), hands
it out to others as a contact, and may push it stored keys: so the client *answers* what nodes
ask back (``ping``, ``store`` into a small bounded dict, ``find_node``, ``find_value``,
``stun``), as a short-lived kademlia node would. Once it has gone, the network's lookups wait
for it until they give up on it (kademlia: one 5 s wait, then it is dropped): with the user's
identity, that is one contact per user and host, not one per command.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import (
    DecodeError,
    DhtError,
    KeyNotFound,
    MessageTooLarge,
    Refused,
    RpcTimeout,
    Unavailable,
)
from ..ids import digest
from ..net import Address, check_peer_addr, format_addr, resolve, unless_refused
from . import codec
from .endpoint import KadConfig, KadEndpoint
from .identity import Identity
from .lookup import ALPHA, Answer, Contact, K, RoutingTable, Trace, bucket_of, iterative_lookup

#: How long one question of a lookup may take, and its sends: a node that does not answer
#: holds up its round this long (kademlia's own wait is 5 s, one send). Within these bounds
#: the wait follows the round-trip times seen (3 RTOs, RTO = SRTT + 4 RTTVAR as in TCP): a
#: network keeps the address of every client that has gone (kademlia adds whoever asks it
#: anything), and on loopback each such ghost would otherwise cost a lookup a whole second.
QUERY_DEADLINE = 1.0
MIN_QUERY_DEADLINE = 0.2
MIN_RTO = 0.05
QUERY_TRIES = 3
#: The bootstrap ping: the user's --tries / --timeout override these.
PING_DEADLINE = 3.5
PING_TRIES = 4
#: Values kademlia nodes push to the client (welcome_if_new), kept at most.
LOCAL_KEYS = 1024
#: ``probe``: ids asked around the node's own (one per bit of common prefix) and spread evenly.
PROBE_DEPTH = 24
PROBE_SPREAD = 16


class NotSent(ValueError):
    """A put refused before anything is sent, with the reason (a type or size kademlia cannot
    take): the shell says ``not sent: …``, the CLI the same and exits 2."""


def check_store(key: str | bytes, value: Any) -> bytes:
    """The ``store`` request of ``value`` under ``key``, as it would go out; NotSent when
    kademlia cannot take it: a type it cannot keep, or a request over rpcudp's 8,192 bytes
    (kademlia's sender refuses larger ones, so no kademlia node ever gets one)."""
    try:
        codec.check_value(value)
    except TypeError as exc:
        raise NotSent(str(exc)) from None
    try:
        return codec.encode_request(
            bytes(codec.ID_BYTES), "store", [bytes(codec.ID_BYTES), digest(key), value]
        )
    except MessageTooLarge as exc:
        size = len(value.encode("utf8")) if isinstance(value, str) else len(value)
        what = f"the value is {size:,} bytes" if isinstance(value, (str, bytes)) else str(exc)
        raise NotSent(
            f"{what}; a kademlia request is at most {codec.MAX_REQUEST_BODY:,} bytes "
            "(kademlia's rpcudp refuses larger ones), so a value of about 8 KB at most"
        ) from None


class KadTimeout(RpcTimeout):
    """A kademlia node that did not answer: words name the kademlia protocol."""

    peer_kind = "a kademlia node"


class KadRefused(Refused):
    """Nothing listens where a kademlia node was expected."""

    peer_kind = "a kademlia node"


@dataclass
class PutResult:
    trace: Trace
    stored: list[Contact] = field(default_factory=list)
    failed: list[Contact] = field(default_factory=list)


@dataclass
class Probe:
    """What ``find_node`` calls spread across the id space told of a node's table."""

    node: Contact
    asked: int
    answered: int
    contacts: dict[bytes, Contact]
    elapsed: float

    def by_bucket(self) -> list[tuple[int, list[Contact]]]:
        """The contacts by their common prefix with the probed node's id, nearest first."""
        groups: dict[int, list[Contact]] = {}
        for c in self.contacts.values():
            groups.setdefault(bucket_of(self.node.id, c.id), []).append(c)
        return [(i, groups[i]) for i in sorted(groups, reverse=True)]


class KadClient:
    """A short-lived participant of a kademlia network (see the module's docstring)."""

    def __init__(
        self,
        bootstrap: Address,
        *,
        node_id: bytes | None = None,
        k: int = K,
        alpha: int = ALPHA,
        ping_tries: int = PING_TRIES,
        ping_deadline: float | None = None,
        query_deadline: float = QUERY_DEADLINE,
        query_tries: int = QUERY_TRIES,
        identity: Identity | None = None,
    ) -> None:
        self.bootstrap_addr = bootstrap
        #: The user's kademlia id and port (identity.py), kept from one command to the next;
        #: None: a random id and an ephemeral port.
        self.identity = identity
        self.id = node_id or (identity.id if identity else None) or os.urandom(codec.ID_BYTES)
        self.k = k
        self.alpha = alpha
        self.ping_tries = ping_tries
        # (0.5 s for one try, 1.5 for two, at most PING_DEADLINE: the resends double)
        self.ping_deadline = ping_deadline or min(PING_DEADLINE, 0.5 * 2**ping_tries - 0.5)
        self.query_deadline = query_deadline
        self.query_tries = query_tries
        self.endpoint = KadEndpoint(config=KadConfig(timeout=self.ping_deadline, rto=0.25))
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.table = RoutingTable(self.id, k)
        self.local: OrderedDict[bytes, Any] = OrderedDict()  # what nodes stored here
        self.bootstrap_node: Contact | None = None
        self.last_trace: Trace | None = None
        for method in ("ping", "store", "find_node", "find_value", "stun"):
            self.endpoint.serve(method, getattr(self, f"_rpc_{method}"))
        self.endpoint.on_request = self._welcome

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def addr(self) -> Address | None:
        """Where the client's socket is bound (kademlia nodes see this address)."""
        return self.endpoint.addr

    async def open(self) -> tuple[Contact, float]:
        """Bind, then ping the bootstrap node: its contact and the round-trip time. KadTimeout
        when it is silent."""
        self.bootstrap_addr = await resolve(self.bootstrap_addr)
        if self.endpoint.addr is None:
            host = "::" if ":" in self.bootstrap_addr[0] else "0.0.0.0"
            port = self.identity.port if self.identity is not None else None
            try:
                bound = await self.endpoint.bind(host, port or 0)
            except OSError:  # the user's port is taken: any other, the same id
                bound = await self.endpoint.bind(host, 0)
            if self.identity is not None:
                self.identity.bound(bound[1])
        node, rtt = await self.ping_node(self.bootstrap_addr)
        self.bootstrap_node = node
        return node, rtt

    async def close(self) -> None:
        self.endpoint.close()
        if self.identity is not None:
            self.identity.release()  # (another command may have the port now)

    async def __aenter__(self) -> KadClient:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _rtt_sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.endpoint.config.rto = max(MIN_RTO, self.srtt + 4 * self.rttvar)

    def query_wait(self) -> float:
        """How long a lookup's question waits for its answer, resends included."""
        if self.srtt is None:
            return self.query_deadline
        wait = 3 * self.endpoint.config.rto
        return min(self.query_deadline, max(MIN_QUERY_DEADLINE, wait))

    # --- answering what kademlia nodes ask -----------------------------------------------------

    def _welcome(self, addr: Address, method: str, args: list[Any]) -> None:
        """Every well-formed request: its sender (id first) goes into the table, where there is
        room, and once per address: ids are the sender's claim, so a stranger must not be able
        to fill our buckets with one address under many ids and push out nodes that answered
        us (a full bucket keeps its contacts; answers to our own calls still refresh them)."""
        if method == "stun" or not args:
            return
        try:
            sender = codec.node_id(args[0])
        except DecodeError:
            return
        if any(c.addr == addr and c.id != sender for c in self.table.contacts()):
            return
        self.table.seen(Contact(sender, addr), evict=False)

    def _rpc_ping(self, addr: Address, sender: Any) -> bytes:
        codec.node_id(sender)
        return self.id

    def _rpc_store(self, addr: Address, sender: Any, key: Any, value: Any) -> bool:
        codec.node_id(sender)
        codec.node_id(key)
        codec.check_value(value)
        self.local.pop(key, None)
        self.local[key] = value
        while len(self.local) > LOCAL_KEYS:
            self.local.popitem(last=False)
        return True

    def _rpc_find_node(self, addr: Address, sender: Any, key: Any) -> list[list[Any]]:
        codec.node_id(sender)
        target = codec.node_id(key)
        return [[c.id, c.addr[0], c.addr[1]] for c in self.table.nearest(target, exclude=addr)]

    def _rpc_find_value(self, addr: Address, sender: Any, key: Any) -> Any:
        target = codec.node_id(key)
        if target in self.local:
            return {"value": self.local[target]}
        return self._rpc_find_node(addr, sender, key)

    def _rpc_stun(self, addr: Address) -> list[Any]:
        return [addr[0], addr[1]]

    # --- asking --------------------------------------------------------------------------------

    async def ping_node(
        self, addr: Address, *, tries: int | None = None, deadline: float | None = None
    ) -> tuple[Contact, float]:
        """Ping the node at ``addr``: its contact and the round-trip time. KadRefused in about
        half a second when its host says that nothing listens there (``net.unless_refused``;
        nothing more is sent when the node answers at once), KadTimeout when it is silent."""
        start = self._now()
        call = self.endpoint.call(
            addr,
            "ping",
            self.id,
            tries=tries or self.ping_tries,
            deadline=deadline or self.ping_deadline,
        )
        probe = codec.encode_request(os.urandom(codec.ID_BYTES), "ping", [self.id])
        try:
            raw = await unless_refused(call, addr, "ping", probe)
        except Refused as exc:
            raise KadRefused(exc.addr, exc.method, exc.elapsed) from None
        except RpcTimeout as exc:
            if type(exc) is RpcTimeout:  # (a SendFailed says why at once: kept as it is)
                raise KadTimeout(exc.addr, exc.method, exc.tries, exc.elapsed) from None
            raise
        rtt = self._now() - start
        self._rtt_sample(rtt)
        try:
            node = Contact(codec.node_id(raw), addr)
        except DecodeError:
            raise DhtError(
                f"{format_addr(addr)} answered a ping with something that is not a node id; "
                "is it a kademlia node?"
            ) from None
        self.table.seen(node, rtt)
        return node, rtt

    async def ping(self, addr: Address | None = None) -> tuple[Contact, float]:
        return await self.ping_node(addr or self.bootstrap_addr)

    async def stun(self, addr: Address | None = None) -> Address:
        """Our address as the node at ``addr`` (default: the bootstrap node) sees it."""
        raw = await self.endpoint.call(
            addr or self.bootstrap_addr,
            "stun",
            tries=self.query_tries,
            deadline=self.query_wait(),
        )
        try:
            if type(raw) is not list or len(raw) != 2:
                raise ValueError("not [ip, port]")
            return check_peer_addr(raw[0], raw[1])
        except ValueError as exc:
            raise DhtError(f"a stun answer that is not an address: {exc}") from None

    async def _ask(self, peer: Contact, method: str, target: bytes) -> Answer:
        """One find_node / find_value question of a lookup; never raises."""
        start = self._now()
        try:
            raw = await self.endpoint.call(
                peer.addr,
                method,
                self.id,
                target,
                tries=self.query_tries,
                deadline=self.query_wait(),
            )
        except DhtError as exc:
            self.table.failed(peer.id)
            return Answer("no answer", error=str(exc))
        rtt = self._now() - start
        self._rtt_sample(rtt)
        if method == "find_value" and type(raw) is dict:
            if "value" not in raw or type(raw["value"]) not in codec.VALUE_TYPES:
                return Answer("bad answer", rtt=rtt, error="a value kademlia cannot hold")
            self.table.seen(peer, rtt)
            return Answer("value", value=raw["value"], rtt=rtt)
        try:
            found = codec.contacts(raw)
        except DecodeError as exc:
            return Answer("bad answer", rtt=rtt, error=str(exc))
        self.table.seen(peer, rtt)
        contacts = tuple(Contact(nid, (host, port)) for nid, host, port in found)
        return Answer("contacts", contacts=contacts, rtt=rtt)

    def _start(self, target: bytes) -> list[Contact]:
        start = self.table.nearest(target, self.k)
        if not start:
            if self.bootstrap_node is None:
                raise DhtError("not attached to a kademlia network (no contact to start from)")
            start = [self.bootstrap_node]  # it went silent once; it is all there is
        return start

    async def lookup(
        self, target: bytes, *, method: str = "find_node", stop_at_value: bool = True
    ) -> Trace:
        """An iterative lookup of ``target`` with ``method`` (find_node or find_value).

        ``stop_at_value`` False (``lookup KEY``): a find_value lookup that goes on to the k
        nearest; a node that answers with the value is asked find_node too, for contacts."""

        async def ask(peer: Contact) -> Answer:
            answer = await self._ask(peer, method, target)
            if answer.outcome != "value" or stop_at_value:
                return answer
            # A holder answers find_value with the value alone: to go on past it, ask it
            # find_node as well (one question more, in the same row of the trace).
            more = await self._ask(peer, "find_node", target)
            return replace(answer, contacts=more.contacts)

        trace = await iterative_lookup(
            target,
            self._start(target),
            ask,
            method=method,
            own_id=self.id,
            k=self.k,
            alpha=self.alpha,
            stop_at_value=stop_at_value,
            clock=self._now,
        )
        self.last_trace = trace
        return trace

    def _no_answer(self, trace: Trace) -> DhtError:
        silent = trace.silent
        if not silent:
            return Unavailable("no kademlia node to ask")
        first = format_addr(silent[0].addr)
        return Unavailable(
            f"none of the {len(silent)} kademlia nodes asked answered (first: {first}); "
            "is the network running?"
        )

    async def get(self, key: str | bytes) -> tuple[Any, Trace]:
        """The value of ``key`` (a find_value lookup that stops at the first value), with the
        trace. KeyNotFound when the nodes nearest the key answered without it; Unavailable
        when none answered."""
        trace = await self.lookup(digest(key), method="find_value")
        if trace.found:
            return trace.value, trace
        if not trace.answered:
            raise self._no_answer(trace)
        raise KeyNotFound(f"{key!r}: not found on the {len(trace.nearest)} nearest nodes")

    async def put(self, key: str | bytes, value: Any) -> PutResult:
        """Store ``value`` under ``key`` on the k nodes nearest it (a find_node lookup, then
        ``store`` on each). A value kademlia cannot keep (its type, or over about 8 KB) is
        refused before anything is sent (NotSent, with the reason). Unavailable when no node
        took it."""
        check_store(key, value)
        target = digest(key)
        trace = await self.lookup(target)
        if not trace.nearest:
            raise self._no_answer(trace)
        result = PutResult(trace)

        async def store(peer: Contact) -> bool:
            try:
                ok = await self.endpoint.call(
                    peer.addr,
                    "store",
                    self.id,
                    target,
                    value,
                    tries=self.query_tries,
                    deadline=self.query_wait(),
                )
            except DhtError:
                self.table.failed(peer.id)
                return False
            return ok is True

        oks = await asyncio.gather(*(store(peer) for peer in trace.nearest))
        for peer, ok in zip(trace.nearest, oks, strict=True):
            (result.stored if ok else result.failed).append(peer)
        if not result.stored:
            raise Unavailable(
                f"none of the {len(trace.nearest)} nodes nearest the key accepted the store"
            )
        return result

    async def find_node(self, node_id: bytes) -> Trace:
        """The k nodes nearest ``node_id`` (a find_node lookup), with the trace."""
        codec.node_id(node_id)
        return await self.lookup(node_id)

    async def probe(self, addr: Address, *, depth: int = PROBE_DEPTH) -> Probe:
        """What the node at ``addr`` has in its table: find_node for ids around its own (one per
        bit of common prefix, 0..depth-1) and spread evenly across the id space."""
        start = self._now()
        node, _ = await self.ping_node(addr)
        own = int.from_bytes(node.id, "big")
        targets = [(own ^ (1 << (159 - bit))).to_bytes(20, "big") for bit in range(depth)]
        step = (1 << 160) // PROBE_SPREAD
        targets += [(i * step + step // 2).to_bytes(20, "big") for i in range(PROBE_SPREAD)]
        found: dict[bytes, Contact] = {}
        gate = asyncio.Semaphore(8)

        async def one(target: bytes) -> bool:
            async with gate:
                answer = await self._ask(node, "find_node", target)
            for c in answer.contacts:
                if c.id != self.id:
                    found.setdefault(c.id, c)
            return answer.outcome == "contacts"

        answered = sum(await asyncio.gather(*(one(t) for t in targets)))
        return Probe(node, len(targets), answered, found, self._now() - start)
