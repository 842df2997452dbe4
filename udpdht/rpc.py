"""Request/response over datagrams: one endpoint per node, on any :class:`~udpdht.net.Network`.

A call is a *transaction* (after aioice's ``stun.Transaction``): it sends the request, sets a
deadline, resends on each expiry with a doubled timeout plus jitter, and fails with
:class:`~udpdht.errors.RpcTimeout` after the last try (a caller with ``max_working`` waits
longer on a peer that answers its resends "working"). Its pending entry is removed in
``finally``, so a cancelled call leaks nothing.

Deadlines sit in a timer wheel per endpoint: slots of ``TICK`` seconds holding request ids,
and one loop timer for the earliest slot of all the endpoints on a loop (_Ticker). A call
enters the wheel only if it is still pending at the first tick after its send (most are
answered sooner); a call that ends leaves its id (an int: nothing for the collector to track)
in its slot, skipped when the slot fires. (docs/measured.md has what this replaced: a heap of
deadlines that kept finished calls alive, a timer handle per call.)

A reply is accepted only for a pending request id and only from the address the request went
to.

The first timeout of a call comes from a per-peer estimate (Jacobson/Karels, RFC 6298:
``RTO = SRTT + 4·RTTVAR``, clamped), fed only by replies to requests sent once (Karn's rule),
one sample per round trip however many calls are in flight (RFC 6298 section 3).

Load must never turn into a retransmission storm, so each peer also has a *window*: the calls
to it in flight at once, like TCP's congestion window: it starts at ``window``, grows by one per
answer (slow start) until the first sign of congestion, then by one per window of answers, and
is halved (at most once per RTO) when the peer is slow. Calls past the window wait their turn
before they are sent, and their timer starts when they are. A peer's window lasts while calls
to it are in flight: an idle peer starts again at ``window``. When a call times out although
the peer answered other calls since it was sent, the peer is alive but slow (its queue is
long): its RTO is doubled (up to ``max_backoff`` ×) for the resends and the calls after it
until a fresh sample comes, as RFC 6298 §5.5 does. A peer that answers nothing keeps its short
RTO, so a dead one is found as fast as before.

The serving side remembers the encoded reply to each (peer, request id) for a while, so a
retried request is answered again instead of executed twice; a resend of a request whose
handler is still running is answered WORKING (kind 4). A handler that raises produces an
error reply, never a dead task: the caller gets :class:`~udpdht.errors.RemoteError` at once
instead of a timeout.

Every sender is a stranger, so the endpoint also defends itself (PROTOCOL.md §6a, SECURITY.md):

* **Amplification.** UDP source addresses can be forged, so an answer more than
  ``amplification`` (3) times the size of its request goes only to an address that has shown it
  receives: the request must carry a *token*, a MAC of the sender's address and the current
  time period under this endpoint's secret. Otherwise the answer is replaced by a small
  ``retry`` carrying the token, and the caller's endpoint sends the request again with it
  (QUIC's Retry, BEP 5's write token). Callers never see this; ``Client`` needs no change.
* **Replays.** A cached answer is sent again at most ``max_resends`` times.
* **Rate.** Datagrams other than answers to our calls are counted per source (per IP, or per
  IP and port for 127.0.0.1 and ::1, which one machine's processes share) and overall in
  token buckets; the excess is dropped before it is even decoded.
* **Concurrency.** At most ``max_handlers`` coroutine handlers run at once; past that a
  request is answered ``BUSY`` at once, so load never turns into unbounded tasks and memory.
* **Sends.** A destination is checked before ``sendto`` (a unicast IP literal of the socket's
  family), and a send that fails is that call's failure (:class:`~udpdht.errors.SendFailed`),
  never the socket's: on the standard asyncio loop a ``sendto`` that raises anything but
  OSError closes the transport for good.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
import hmac
import inspect
import logging
import math
import os
import random
import socket
import struct
import time
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Hashable
from dataclasses import asdict, dataclass
from math import ceil
from typing import Any, ClassVar, TypeVar, cast

from . import wire
from .errors import (
    DhtError,
    EncodeError,
    ErrorCode,
    MessageTooLarge,
    RemoteError,
    RpcTimeout,
    SendFailed,
    TooManyPending,
    remote_error,
)
from .net import AddrObj, Network, check_peer_addr, fit_receive_size, format_addr, loop_clock
from .ratelimit import Buckets, TokenBucket, source_of

log = logging.getLogger("udpdht.rpc")

#: A handler gets the request's arguments and the caller's address; it returns the result,
#: directly or as a coroutine. Raising a RemoteError subclass sends that code back.
Handler = Callable[[dict[str, Any], AddrObj], Any]


@dataclass(frozen=True)
class RpcConfig:
    tries: int = 4  # sends per call, the first included
    initial_rto: float = 0.3  # first timeout for a peer with no RTT sample yet
    min_rto: float = 0.1  # floor: loopback RTTs are microseconds, event-loop stalls are not
    max_rto: float = 2.0  # ceiling for any single wait
    jitter: float = 0.2  # each wait is stretched by up to this fraction, at random
    max_pending: int = 10_000  # calls in flight at once
    # The reply cache holds two generations of answers, each at most half of these bounds: the
    # newest 8,192 answers (and 4 MiB of them) are always kept (see RpcEndpoint._remember).
    reply_cache_entries: int = 16_384
    reply_cache_bytes: int = 8 << 20
    reply_cache_ttl: float = 30.0  # an answer is kept at least this long (longer than any
    # caller keeps retrying), and dropped within twice this
    max_resends: int = 8  # times one cached answer is sent again (retransmissions of a call)
    max_peers: int = 8192  # RTT estimates (and address tokens) kept
    max_handlers: int = 512  # coroutine handlers running at once; past that, BUSY
    max_handlers_per_source: int = 128  # ... for the requests of one source (ratelimit.source_of)
    amplification: float = 3.0  # largest answer to an unproven address, × its request (0: off)
    token_period: float = 300.0  # a token is good for one to two of these (seconds)
    source_rate: float = 0.0  # requests per second from one source (0: no limit)
    source_burst: float = 0.0  # a source's bucket (0: twice its rate)
    global_rate: float = 0.0  # requests per second from everyone (0: no limit)
    global_burst: float = 0.0  # (0: twice the rate)
    max_sources: int = 16_384  # sources whose buckets are kept
    window: int = 16  # calls in flight to one peer at first (then AIMD, see the module doc)
    max_window: int = 1024
    min_window: int = 4
    max_backoff: float = 8.0  # a slow peer's RTO grows at most this many times (1: never)
    # How long in all a call whose peer answers WORKING is waited for; 0: WORKING is ignored
    # (node-to-node calls: a stranger must not stretch a lookup hop to 30 s). Clients: 30 s.
    max_working: float = 0.0
    # An endpoint that serves nothing (a client's): every datagram but an answer to a call of
    # ours in flight, from the address called, is dropped before it is decoded. A stranger
    # that knew a shell's port sent it 21 KB answers to no call of its, 200 a second, each
    # decoded (21,000 maps) before it was dropped: 28 % of a core of the shell.
    answers_only: bool = False


#: What a node runs with unless told otherwise: rate limits at OpenDHT's figures.
NODE_RPC = RpcConfig(source_rate=1024.0, global_rate=8192.0)


@dataclass
class RpcStats:
    sent: int = 0  # datagrams sent: requests, resends, replies
    received: int = 0  # datagrams that decoded
    retries: int = 0  # resends of a request after a timeout
    timeouts: int = 0  # calls that failed with RpcTimeout
    dropped_malformed: int = 0  # datagrams that did not decode
    duplicates: int = 0  # retried requests answered from the cache (or WORKING while running)
    unexpected_replies: int = 0  # replies for no pending call, or from the wrong address
    # (an answers_only endpoint: any datagram but an answer to a call in flight, undecoded)
    errors_sent: int = 0  # error replies sent
    handler_failures: int = 0  # handlers that raised something other than a RemoteError
    rate_limited: int = 0  # datagrams (all but answers) dropped by the rate limits
    busy: int = 0  # requests answered BUSY because max_handlers were running
    tokens_sent: int = 0  # retries sent: for an answer (unproven address, large answer; a
    # proven method) or a request dropped by the rate limits (_offer_token)
    resends_refused: int = 0  # retransmissions not answered again (max_resends reached)
    working_sent: int = 0  # WORKING answers to resends of requests still running
    send_errors: int = 0  # datagrams not sent: a bad destination or an error from the socket
    bytes_sent: int = 0  # payload bytes of the datagrams sent (UDP/IP headers not included)
    bytes_received: int = 0  # ... of the datagrams that decoded

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _Peer:
    """What the endpoint knows of one peer it calls: where its socket sends to, the token the
    peer gave us, its round trips, and its window of calls in flight. One record, found by
    one lookup a call (four dicts cost a tuple hash and a lookup each, on every call)."""

    __slots__ = (
        "addr",
        "backoff",
        "cut_at",
        "heard",
        "inflight",
        "padded",
        "rto",
        "rttvar",
        "sampled",
        "sends",
        "srtt",
        "threshold",
        "to",
        "token",
        "waiters",
        "window",
    )

    def __init__(self, addr: AddrObj, to: AddrObj | str, config: RpcConfig) -> None:
        self.addr = addr
        self.to = to  # the address the socket sends to, or why it cannot (a str)
        self.token: bytes | None = None  # the peer's address token for us (PROTOCOL 6a.1)
        self.padded = 0  # requests padded for it (RpcEndpoint.call: PAD_CALLS at most)
        # Round trips: no estimate before the first answer to a first try.
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = config.initial_rto  # kept, not computed per call: every call reads it
        self.backoff = 1.0  # × the RTO while the peer answers slowly (_timed_out)
        self.heard = float("-inf")  # loop time of its last answer to any call
        # Calls sent to it so far, and how many had been when the last RTT sample came: only
        # a call sent after that gives the next sample (RpcEndpoint._on_response).
        self.sends = 0
        self.sampled = 0
        # The window: calls in flight, and those waiting for a turn.
        self.inflight = 0
        self.window = float(config.window)
        self.threshold = float(config.max_window)  # below it: +1 per answer (slow start)
        self.cut_at = float("-inf")  # when the window was last halved
        self.waiters: deque[asyncio.Future[None]] | None = None  # made when first needed

    def idle(self, config: RpcConfig) -> None:
        """No call in flight or waiting: the next one starts at the first window again."""
        self.window = float(config.window)
        self.threshold = float(config.max_window)
        self.cut_at = float("-inf")

    def sample(self, rtt: float, config: RpcConfig) -> None:
        """A round trip measured (RFC 6298: Jacobson/Karels; ``backoff`` starts over)."""
        self.sampled = self.sends
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            diff = self.srtt - rtt
            self.rttvar = 0.75 * self.rttvar + 0.25 * (diff if diff >= 0 else -diff)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.backoff = 1.0
        self.set_rto(config)

    def set_rto(self, config: RpcConfig) -> None:
        assert self.srtt is not None
        self.rto = min(
            max(self.srtt + 4 * self.rttvar, config.min_rto) * self.backoff, config.max_rto
        )


T = TypeVar("T")

TICK = 0.01  # seconds: the timer wheel's slot; a timeout fires at most this late
_PER_TICK = 1 / TICK


def _slot_after(when: float) -> int:
    """The timer wheel's slot that a timeout at loop time ``when`` fires in (the first slot
    boundary at or past it)."""
    return ceil(when * _PER_TICK)


#: The refusal of a request whose ``to`` names another node (RpcEndpoint.identity), with code
#: NOT_RESPONSIBLE: the caller's write or read goes to the key's holders by a new lookup, as
#: for any node that says a key is not its own (an error of its own failed the user's put at
#: once, while the ring had not yet noticed that the node called was gone: a new user's trial).
NOT_CALLED = "not the node called: it is gone from this address"

#: A cached answer: (the peer that asked, the answer, times it was sent again).
_Cached = tuple[AddrObj, bytes, int]

#: The argument in which a ``told`` handler learns whether its request's source address is
#: proven by a token (RpcEndpoint.register).
PROVEN = ".proven"

#: Seconds of CPU that the one token a datagram takes from the rate limits stands for: a
#: datagram that takes longer to decode and handle is charged the rest (RpcEndpoint._charge).
COST_UNIT = 60e-6


class _Transaction:
    """One call: resends on a doubling timeout until a reply or the last try.

    Its timeouts live in the endpoint's timer wheel under its request id (one armed timer per
    endpoint, not one per call); when it ends, only its id (an int) stays there, until its slot.

    RpcEndpoint.call fills one in field by field: calling a Python ``__init__`` cost more than
    the stores themselves (0.1 us on every call). The two fields that only a resend or a
    peer's answer changes are class attributes until then.
    """

    __slots__ = (
        "__dict__",  # (token_retries and working_at, once set)
        "args",
        "attempt",
        "data",
        "future",
        "method",
        "pad",
        "peer",
        "rid",
        "rto",
        "sent_at",
        "seq",
        "slot",
        "started",
        "tries",
    )

    rid: int
    peer: _Peer  # the peer called, its window ours while we are in flight
    method: str
    args: dict[str, Any]  # kept to send the request again with a token
    data: bytes
    tries: int
    rto: float
    attempt: int  # sends so far (RpcEndpoint.call makes the first one)
    slot: int  # the timer wheel's slot our current send times out in (0: none)
    pad: bool  # whether the caller asked for padding (RpcEndpoint.call)
    future: asyncio.Future[Any]
    started: float
    sent_at: float
    seq: int  # its peer's count of calls when it was sent (_Peer.sends)
    token_retries = 0  # sends again with a token the peer asked for
    working_at = -1.0  # when the peer last said it is still running the call

    def send(self, ep: RpcEndpoint, now: float) -> None:
        self.attempt += 1
        self.sent_at = now
        token = self.peer.token
        if token is not None and not self.token_retries:
            # A token that came since our first send (a peer's offer, _on_retry): sent along.
            self.data = wire.encode_request(self.rid, self.method, self.args, token)
        reason = ep._send(self.data, self.peer.addr)
        if reason is not None:
            self.future.set_exception(SendFailed(self.peer.addr, self.method, reason))
            return
        ep._schedule(self, _slot_after(now + self.rto * (1.0 + ep.config.jitter * ep._random())))

    def expired(self, ep: RpcEndpoint) -> None:
        if self.working_at < self.sent_at:  # (a WORKING answer to this send is an answer)
            ep._timed_out(self)
        if self.attempt >= self.tries and not self._still_working(ep):
            ep.stats.timeouts += 1
            elapsed = ep._time() - self.started
            self.future.set_exception(
                RpcTimeout(self.peer.addr, self.method, self.attempt, elapsed)
            )
            return
        ep.stats.retries += 1
        # Doubled, or the peer's backed-off RTO if that is longer (it is slow, see _timed_out).
        self.rto = min(max(self.rto * 2, self.peer.rto), ep.config.max_rto)
        self.send(ep, ep._time())

    def _still_working(self, ep: RpcEndpoint) -> bool:
        """The peer answered our last send with WORKING, and not for too long: keep waiting
        (resending on the capped timeout, as a probe that it is still alive)."""
        return self.working_at >= self.sent_at and ep._time() - self.started < ep.config.max_working

    def retry_with(self, ep: RpcEndpoint, token: bytes) -> None:
        """The peer asks us to prove our address: send the same request with its token."""
        if self.future.done() or self.token_retries >= 2:  # a peer that keeps asking: time out
            return
        self.token_retries += 1
        self.data = wire.encode_request(self.rid, self.method, self.args, token)
        self.sent_at = ep._time()  # the RTT sample, if any, starts here
        reason = ep._send(self.data, self.peer.addr)
        if reason is not None:
            self.future.set_exception(SendFailed(self.peer.addr, self.method, reason))


class RpcEndpoint(asyncio.DatagramProtocol):
    """A datagram endpoint that both serves handlers and makes calls."""

    # A deadline that fires this late (seconds) means the loop itself stalled.
    STALL: ClassVar[float] = 0.25

    def __init__(self, *, config: RpcConfig | None = None, rng: random.Random | None = None):
        self.config = config or RpcConfig()
        loop = self._loop = asyncio.get_running_loop()
        # The stock asyncio loop's time() and create_future() are Python methods around
        # time.monotonic() and Future(loop=...): called directly, they save a frame each on
        # every call. Any other loop (uvloop's, the simulator's virtual clock) keeps its own.
        self._time: Callable[[], float] = loop_clock(loop)
        self._new_future: Callable[[], asyncio.Future[Any]] = loop.create_future
        if type(loop).create_future is asyncio.BaseEventLoop.create_future:
            self._new_future = functools.partial(asyncio.Future, loop=loop)
        # Request ids guard against forged replies, so they come from the OS: a peer we call
        # sees hundreds of our ids, enough to predict a Mersenne Twister's next ones and forge
        # another peer's reply. The simulator passes a seeded Random so that runs repeat
        # exactly (ids, jitter and the token secret); jitter needs no secrecy.
        self._rng: random.Random = rng or random.Random()
        self._random = self._rng.random  # (for the jitter of each wait)
        self._rid: Callable[[], int] = self._seeded_rid if rng is not None else self._os_rid
        self._rids: list[int] = []  # unused ids from the OS, drawn 256 at a time
        self._secret = os.urandom(32) if rng is None else self._rng.randbytes(32)
        self.stats = RpcStats()
        # method -> (handler, is a coroutine, idempotent, proven, told): see register
        self._handlers: dict[str, tuple[Handler, bool, bool, bool, bool]] = {}
        # slot -> ids of the calls that time out in it (and of calls that ended since)
        self._wheel: dict[int, list[int]] = {}
        self._slots: list[int] = []  # a heap of the wheel's slots
        # Ids of the calls sent since the last tick: the next one puts those still running in
        # the wheel (_stage). Most calls end first, and never cost a slot.
        self._sent: list[int] = []
        self._ticker = _ticker(loop)  # the loop's timer, shared by its endpoints
        self._armed: int | None = None  # the slot the ticker calls us at next
        self._pending: dict[int, _Transaction] = {}
        # rid -> (peer, the answer of its finished request, times sent again): a request's
        # answer is its id's only if it came from the same peer (ids are 64-bit and random, so
        # an int key, hashed for free, stands in for the pair; running ones: _running); in two
        # generations: new answers go into _replies, which becomes _replies_old when it holds
        # half of a bound or when the ager fires; the old one is then dropped whole. Plain
        # dicts, nothing evicted per answer (an OrderedDict's insert and eviction of the oldest
        # cost ~0.5 us an answer).
        self._replies: dict[int, _Cached] = {}
        self._replies_old: dict[int, _Cached] = {}
        self._reply_bytes = 0  # of _replies
        self._reply_bytes_old = 0
        # A generation is at most half of each bound.
        self._young_entries = self.config.reply_cache_entries // 2
        self._young_bytes = self.config.reply_cache_bytes / 2
        self._ager: asyncio.TimerHandle | None = None  # armed while anything is cached
        # A dropped generation, freed one entry per new answer: freeing 8,192 at once paused
        # the loop for 1-2 ms. (Not looked up; empty again before the next one is dropped.)
        self._dropped: dict[int, _Cached] = {}
        self._running: dict[int, tuple[AddrObj, float]] = {}  # rid -> (peer, when it started)
        # The peers we call (at most max_peers, the oldest idle one dropped to make room).
        self._peers: dict[AddrObj, _Peer] = {}
        self._waiting = 0  # calls waiting for a turn in their peer's window
        # destination -> the address the socket sends to, or why it cannot (a str)
        self._sendable: dict[AddrObj, AddrObj | str] = {}
        #: The largest answer (bytes) seen to each method called with ``pad`` (see call).
        self._answer_sizes: dict[str, int] = {}
        self._max_window = float(self.config.max_window)  # (read on every answer)
        cfg = self.config
        self._sources = Buckets(cfg.source_rate, cfg.source_burst, cfg.max_sources)
        # ... of the requests that prove their source (_admit): a share a spoofer cannot spend.
        self._proven_shares = Buckets(cfg.source_rate, cfg.source_burst, cfg.max_sources)
        self._offers = Buckets(self.OFFERS_PER_SOURCE, self.OFFERS_PER_SOURCE, cfg.max_sources)
        self._all_offers = TokenBucket(self.OFFERS, self._time())
        # address -> (period, its token then, its token the period before) (_expected_tokens)
        self._known_tokens: dict[AddrObj, tuple[int, bytes, bytes]] = {}
        self._burst = cfg.global_burst or 2 * cfg.global_rate  # of the overall bucket
        self._everyone = TokenBucket(self._burst, self._time())
        self._limited = bool(cfg.source_rate or cfg.global_rate)
        self._screened = self._limited or cfg.answers_only  # (told before decoding: see above)
        # Whether a datagram's CPU time is charged to its source (_charge): on real sockets
        # (the simulator's clock is virtual: real time would make its runs differ).
        self._timed = False
        #: Sources whose datagrams are never charged for their CPU time, and that still pass
        #: when everyone's budget is spent (the node sets it: the nodes of its leafset).
        self.exempt: Callable[[AddrObj], bool] | None = None
        # Answers up to this many times their request's size need no token (inf: no guard).
        self._amplification = cfg.amplification or math.inf
        self._handlers_running = 0
        self._handlers_from: dict[Hashable, int] = {}  # ... by source (those with any)
        self._log_budget = TokenBucket(10.0, 0.0)  # handler tracebacks: a few, not megabytes
        self._tasks: set[asyncio.Task[None]] = set()
        self._transport: asyncio.DatagramTransport | None = None
        # Whether the transport's socket is open (connection_made until connection_lost), and
        # what wait_closed waits on for the second (made only then: an Event per endpoint was
        # 2.5 % of a simulated node).
        self._socket_open = False
        self._lost: asyncio.Future[None] | None = None
        self._family_v6 = False
        self._v4_socket = False  # known to be an IPv4 socket (set by bind)
        #: Bound to ``::`` without IPV6_V6ONLY: IPv4 peers too, as ``::ffff:a.b.c.d`` on the
        #: socket; they are ``a.b.c.d`` everywhere else (ids, tables, rate limits).
        self._dual = False
        self.addr: AddrObj = ("", 0)
        #: Loop time of the last event-loop stall seen (a timeout that fired late).
        self.last_stall = float("-inf")
        #: Another protocol on this socket: gets each datagram whose first byte is 0x00 or
        #: 0x01 (rpcudp's, the `kademlia` package's; ours start with 0x9_), after the rate
        #: limits. ``kad.endpoint.KadEndpoint.host`` sends through :meth:`send_raw`.
        self.foreign: Callable[[bytes, AddrObj], None] | None = None
        #: The id of the node this endpoint serves (20 bytes; None: none). A request whose
        #: ``to`` names another id is refused (code 11, not responsible): it was meant for a
        #: node that is gone from this address (PROTOCOL.md 6a.4b).
        self.identity: bytes | None = None
        self._token_in: bytes | None = None  # the token of the request handled last (_charge)
        #: The last WORKING answer: (peer, method, loop time). A client shows it ("busy").
        self.last_working: tuple[AddrObj, str, float] | None = None

    @classmethod
    async def bind(
        cls,
        network: Network,
        addr: AddrObj,
        *,
        config: RpcConfig | None = None,
        rng: random.Random | None = None,
    ) -> RpcEndpoint:
        endpoint = cls(config=config, rng=rng)
        transport = await network.bind(addr, endpoint)
        sockname = transport.get_extra_info("sockname")
        endpoint.addr = (str(sockname[0]), int(sockname[1]))
        endpoint._family_v6 = ":" in endpoint.addr[0]
        sock = transport.get_extra_info("socket")
        endpoint._v4_socket = sock is not None and sock.family == socket.AF_INET
        endpoint._dual = endpoint.addr[0] == "::" and _dual_stack(transport)
        endpoint._timed = endpoint._limited and sock is not None
        return endpoint

    # --- serving -------------------------------------------------------------------------------

    def register(
        self,
        method: str,
        handler: Handler,
        *,
        idempotent: bool = False,
        proven: bool = False,
        told: bool = False,
    ) -> None:
        """Serve ``method`` with ``handler`` (a plain function or a coroutine function).

        Replies of an ``idempotent`` method are not cached: a retried request simply runs
        again, which costs less than remembering every answer of a read. A ``proven`` method
        runs only for a request that carries a token for its source address (one that showed
        it receives there, PROTOCOL.md 6a.1): any other gets a ``retry`` with the token, which
        the caller's RPC layer sends the request again with. For what a request says of its
        sender alone, by its address (``leaving``): a spoofed source never sees the token.
        A ``told`` method runs for any request, and its handler finds in ``args[PROVEN]``
        whether the request carried that token (True or False, set here: never the sender's
        word), for privileges a source's address alone must not earn.
        """
        if not 0 < len(method) <= wire.MAX_METHOD:
            raise ValueError(f"method name must be 1..{wire.MAX_METHOD} characters")
        self._handlers[method] = (
            handler,
            inspect.iscoroutinefunction(handler),
            idempotent,
            proven,
            told,
        )

    def _admit(self, addr: AddrObj, data: bytes) -> bool:
        """Whether datagram ``data`` from ``addr`` fits the rate limits (token buckets)."""
        cfg = self.config
        now = self._time()
        # The source's own bucket first: a flooding source over its share is dropped without
        # spending the budget everyone shares. That share can be spent by anyone in its name
        # (a source address is easily forged), so a request that carries its source's address
        # token draws on a share of its own: pings in a neighbour's name, past its share, had
        # its own requests dropped with theirs until its peer took it for dead (an attack on
        # real nodes; the neighbour's calls carry our token).
        source = source_of(addr) if cfg.source_rate else None
        if (
            source is not None
            and not self._sources.take(source, now)
            and not (self._carries_token(data, addr) and self._proven_shares.take(source, now))
        ):
            self._offer_token(data, addr)
            return False
        if not cfg.global_rate or self._everyone.take(cfg.global_rate, self._burst, now):
            return True
        # Everyone's budget is spent: a node of our leafset still passes (within its own
        # share). Strangers' costly requests from 50 sockets, each inside its share, drained
        # it, and the ring evicted a node whose neighbours' pings it dropped.
        return self.exempt is not None and self.exempt(addr)

    def _on_request(self, req: wire.Request, addr: AddrObj, size: int) -> None:
        self._token_in = req.token  # (for _charge, once it is handled)
        if self.identity is not None and "to" in req.args and req.args["to"] != self.identity:
            # Meant for the node that was here: a node of another ring on the port of one that
            # had crashed took its ring's writes and pushes (a new user's trial).
            self._answer(self._error(req, ErrorCode.NOT_RESPONSIBLE, NOT_CALLED), req, addr, size)
            return
        rid = req.rid
        entry = self._handlers.get(req.method)
        # An idempotent method's answers are never cached, nor its runs kept: nothing to look up.
        if entry is None or not entry[2]:
            cached = self._replies.get(rid)
            if cached is None and self._replies_old:
                cached = self._replies_old.get(rid)
            if cached is not None and cached[0] == addr:
                self._resend(rid, cached, req, addr, size)
                return
            if self._running:
                running = self._running.get(rid)
                if running is not None and running[0] == addr:
                    # Still running: say so. Smaller than any request, so no guard needs to hold
                    # it back; the caller stops asking when it gives up (max_working).
                    self.stats.duplicates += 1
                    self.stats.working_sent += 1
                    elapsed_ms = int(1000 * (self._time() - running[1]))
                    self._send(wire.encode_working(rid, elapsed_ms), addr)
                    return
            if entry is None:
                data = self._error(req, ErrorCode.UNKNOWN_METHOD, "unknown method")
                self._remember(rid, addr, data)
                self._answer(data, req, addr, size)
                return
        handler, is_coroutine, idempotent, proven, told = entry
        if told:
            req.args[PROVEN] = self._token_ok(addr, req.token)  # (whatever the sender put there)
        if proven and not self._token_fresh(addr, req.token):
            # Its source must show that it receives at that address first: a forged `leaving`
            # from a spoofed source dropped a live node from every neighbour, and planted dead
            # ones in its place (an attack on real nodes, both loops).
            self.stats.tokens_sent += 1
            self._send(wire.encode_retry(req.rid, self._expected_tokens(addr)[0]), addr)
            return
        if is_coroutine:
            if size > self.DENSE_FROM and wire.holds_more_than(req.args, self.MAX_HELD_VALUES):
                # It would hold its arguments while it runs: 64 KB of msgpack, empty maps,
                # is 4.5 MB of objects. A helper's audit: notifies of that, kept 1 s each
                # while their sender was checked, held 1 GB from 16 sockets (a bound on the
                # number of handlers alone). No waiting method takes so many values.
                msg = f"more than {self.MAX_HELD_VALUES} values in the arguments"
                self._answer(self._error(req, ErrorCode.BAD_REQUEST, msg), req, addr, size)
                return
            source = source_of(addr)
            mine = self._handlers_from.get(source, 0)
            if (
                self._handlers_running >= self.config.max_handlers
                or mine >= self.config.max_handlers_per_source
            ):
                # (One source alone may not hold every slot: a helper's audit, notifies from a
                # silent socket just before the node, each checked for a second, took them all,
                # and honest clients' gets were answered BUSY.)
                self.stats.busy += 1
                # Short: under load, best if it fits in 3x the request, needing no token.
                self._answer(self._error(req, ErrorCode.BUSY, "busy, try later"), req, addr, size)
                return
            self._handlers_from[source] = mine + 1
            if not idempotent:  # (bounded by max_handlers; never evicted while it runs)
                self._running[rid] = (addr, self._time())
            self._handlers_running += 1
            task = self._loop.create_task(self._serve_async(handler, req, addr, idempotent, size))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        try:
            result = handler(req.args, addr)
        except Exception as exc:
            data = self._error_from(req, exc)
        else:
            data = self._encode_result(req, result)
        if not idempotent:
            self._remember(rid, addr, data)
        if len(data) > self._amplification * size:  # (the common case needs no token check)
            self._answer(data, req, addr, size)
        else:  # (to the source of a datagram the socket took: no check of the address)
            self._send_to(data, addr if not self._dual or ":" in addr[0] else _mapped(addr))

    async def _serve_async(
        self,
        handler: Handler,
        req: wire.Request,
        addr: AddrObj,
        idempotent: bool,
        size: int,
    ) -> None:
        try:
            work = cast(Coroutine[Any, Any, Any], handler(req.args, addr))
            result = await self.charged(work, addr, req.token)
        except Exception as exc:
            data = self._error_from(req, exc)
        else:
            data = self._encode_result(req, result)
        finally:
            self._handlers_running -= 1
            self._running.pop(req.rid, None)
            source = source_of(addr)
            mine = self._handlers_from[source] - 1
            if mine:
                self._handlers_from[source] = mine
            else:
                del self._handlers_from[source]
        if not idempotent:
            self._remember(req.rid, addr, data)
        self._answer(data, req, addr, size)

    #: A request to a coroutine handler (one that may wait, holding its arguments) holds
    #: at most this many values, counted when it is over DENSE_FROM bytes (a smaller one
    #: cannot hold more): held, each is at most about 140 KB of objects, 72 MB for
    #: max_handlers of them.
    MAX_HELD_VALUES: ClassVar[int] = 1024
    DENSE_FROM: ClassVar[int] = 1024

    async def charged(
        self, work: Coroutine[Any, Any, T], addr: AddrObj, token: bytes | None = None
    ) -> T:
        """Await ``work``, a handler's for a request from ``addr``. On real sockets the CPU
        time of its steps (not the waits between) is charged to ``addr`` and to everyone's
        budget once it ends, past what its datagram paid (_charge): a stranger's gets of absent
        keys, each run as reads of every holder, 900 a second from one socket inside its share,
        took 59 % of a core here and 62 % of the rest of the ring's, uncharged; kademlia's
        find_value and store (kad/service.py), 3-4 times what ours cost (attacks on real
        nodes). ``token``: the request's address token (a leafset neighbour's work is free only
        with one, _charge)."""
        if not self._timed:
            return await work
        spent = [0.0]
        try:
            return await _timed_steps(work, spent)
        finally:
            if spent[0] > COST_UNIT:
                self._charge(addr, spent[0], paid=0.0, token=token)

    def _encode_result(self, req: wire.Request, result: Any) -> bytes:
        try:
            return wire.encode_reply(req.rid, result)
        except (MessageTooLarge, EncodeError) as exc:
            return self._encode_failed(req, exc)

    def _encode_failed(self, req: wire.Request, exc: MessageTooLarge | EncodeError) -> bytes:
        if isinstance(exc, MessageTooLarge):
            return self._error(req, ErrorCode.TOO_LARGE, str(exc))
        return self._error_from(req, exc)

    def _error_from(self, req: wire.Request, exc: Exception) -> bytes:
        if isinstance(exc, RemoteError):
            return self._error(req, exc.code, exc.message, exc.data)
        if isinstance(exc, TooManyPending):  # our own calls are saturated: a load, not a bug
            return self._error(req, ErrorCode.BUSY, f"busy: {exc}")
        self.stats.handler_failures += 1
        if self._log_budget.take(10 / 60, 10.0, self._time()):  # ten a minute at most
            log.error("handler for %r failed", req.method, exc_info=exc)
        return self._error(req, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _error(
        self, req: wire.Request, code: int, message: str, data: dict[str, Any] | None = None
    ) -> bytes:
        self.stats.errors_sent += 1
        return wire.encode_error(req.rid, code, f"{req.method}: {message}", data)

    def _answer(self, data: bytes, req: wire.Request, addr: AddrObj, size: int) -> None:
        """Send an answer, or a retry token in its place when it would amplify too much."""
        limit = self.config.amplification
        if limit and len(data) > limit * size and not self._token_ok(addr, req.token):
            data = wire.encode_retry(req.rid, self._expected_tokens(addr)[0])
            if len(data) > limit * size:
                return  # a request too small for even the retry: no client of ours sends one
            self.stats.tokens_sent += 1
        self._send(data, addr)

    # --- address tokens ------------------------------------------------------------------------

    def _period(self) -> int:
        return int(self._time() // self.config.token_period)

    def _token(self, addr: AddrObj, period: int) -> bytes:
        """The address token of ``addr`` for ``period`` (a MAC under our secret)."""
        text = f"{addr[0]}\x00{addr[1]}\x00{period}".encode()
        return hashlib.blake2b(text, key=self._secret, digest_size=16).digest()

    def _expected_tokens(self, addr: AddrObj) -> tuple[bytes, bytes]:
        """The tokens ``addr`` may show now: this period's and the last one's (remembered
        for the period: a flood in a source's name is checked at a lookup a datagram)."""
        period = self._period()
        known = self._known_tokens.get(addr)
        if known is not None and known[0] == period:
            return known[1], known[2]
        if len(self._known_tokens) >= self.config.max_sources:
            self._known_tokens.clear()
        tokens = self._token(addr, period), self._token(addr, period - 1)
        self._known_tokens[addr] = (period, *tokens)
        return tokens

    def _token_ok(self, addr: AddrObj, token: bytes | None) -> bool:
        """Whether ``token`` proves ``addr`` (one given out this period or the last)."""
        if token is None:
            return False
        now, last = self._expected_tokens(addr)
        return hmac.compare_digest(token, now) or hmac.compare_digest(token, last)

    def _token_fresh(self, addr: AddrObj, token: bytes | None) -> bool:
        """Whether ``token`` is this period's for ``addr``. A proven method asks for a fresh
        one with a retry when it is last period's: the caller's next requests then carry a
        token good for a period more (under a flood in its name, one that expired could not
        get it through to ask for another)."""
        return token is not None and hmac.compare_digest(token, self._expected_tokens(addr)[0])

    # Retries sent in place of dropped requests (_offer_token): per source, and in all.
    OFFERS_PER_SOURCE: ClassVar[float] = 2.0  # a second (a burst of as many)
    OFFERS: ClassVar[float] = 64.0  # a second from everyone (a burst of as many)

    def _offer_token(self, data: bytes, addr: AddrObj) -> None:
        """A request from ``addr`` was dropped, its source's share spent: now and then answer a
        ``retry`` with its source's token anyway, which the caller keeps (_on_retry) and its
        next sends carry. A node not yet joined holds no token: a flood in its name kept
        its every request out and it could not join (an attack on real nodes, both loops).
        Two a second per source at most, 64 in all: what a spoofer gets sent to the address
        it forges is that, 22 bytes each, whatever it sends."""
        if not (len(data) > 12 and data[1] == 1 and data[2] == 0 and data[3] == 0xCF):
            return
        now = self._time()
        if not self._offers.take(source_of(addr), now) or not self._all_offers.take(
            self.OFFERS, self.OFFERS, now
        ):
            return
        rid = int.from_bytes(data[4:12], "big")
        if self._send(wire.encode_retry(rid, self._expected_tokens(addr)[0]), addr) is None:
            self.stats.tokens_sent += 1

    def _carries_token(self, data: bytes, addr: AddrObj) -> bool:
        """Whether request ``data``, not yet decoded, ends with a token that proves ``addr``:
        ``[1, 0, rid, method, args, token]``, the token a bin8 of 16 bytes (_token)."""
        return (
            len(data) > 21
            and data[0] == 0x96
            and data[-18] == 0xC4
            and data[-17] == 16
            and self._token_ok(addr, data[-16:])
        )

    # --- timeouts ------------------------------------------------------------------------------

    def _schedule(self, tx: _Transaction, slot: int) -> None:
        """Put ``tx`` in the wheel's ``slot`` (_slot_after: the one its timeout falls in).

        Nothing takes it out again: a call that ends, or is sent again into a later slot,
        leaves its id behind, and the expiry skips ids whose call is gone or now waits on
        another slot (a 64-bit int, untracked by the garbage collector, kept until its slot
        fires, at most ``max_rto`` × 1.2 later; cheaper than removing it from every call).
        """
        tx.slot = slot
        bucket = self._wheel.get(slot)
        if bucket is None:
            self._wheel[slot] = [tx.rid]
            heapq.heappush(self._slots, slot)
            self._arm()
        else:
            bucket.append(tx.rid)

    def _stage_soon(self, now: float) -> None:
        """Have the ticker call us at the next slot: the calls sent until then that are still
        running go in the wheel then (_stage)."""
        slot = _slot_after(now) + 1
        if slot not in self._wheel:
            self._wheel[slot] = []
            heapq.heappush(self._slots, slot)
            self._arm()

    def _stage(self) -> None:
        """Put each call sent since the last tick that is still running in the wheel's slot
        of its first timeout (its send, plus its RTO stretched by the jitter)."""
        sent, self._sent = self._sent, []
        pending = self._pending
        jitter = self.config.jitter
        for rid in pending.keys() & sent:  # (in C: the few still running)
            tx = pending[rid]
            if not tx.slot and not tx.future.done():
                when = tx.sent_at + tx.rto * (1.0 + jitter * self._random())
                self._schedule(tx, _slot_after(when))

    def on_tick(self, slot: int) -> None:
        """The ticker's call for ``slot``: expire the calls whose slots are due. (A slot we
        were registered for before an earlier one came is called too, and skipped.)"""
        if slot != self._armed:
            return
        self._armed = None
        if self._sent:
            self._stage()  # (a timeout already past goes in a slot due now, below)
        slots, wheel, pending = self._slots, self._wheel, self._pending
        now = self._time()
        if slots and now - slots[0] * TICK > self.STALL:
            # We fired late: the event loop was busy, so a timeout now says little about the
            # peer. Nodes read last_stall before declaring a peer dead.
            self.last_stall = now
        tick = TICK
        while slots and slots[0] * tick <= now:  # as armed: no rounding of now / tick
            slot = heapq.heappop(slots)
            ids = wheel.pop(slot, None)
            # Most of these calls ended long ago: when all did (asked in C), nothing to walk.
            if ids is None or pending.keys().isdisjoint(ids):
                continue
            for rid in ids:
                tx = pending.get(rid)
                # (a call that ended, or whose resend waits on a later slot, is skipped)
                if tx is not None and tx.slot == slot and not tx.future.done():
                    tx.slot = 0
                    tx.expired(self)  # a resend goes into a later slot
        self._arm()

    def _arm(self) -> None:
        """Have the ticker call us at our earliest slot, unless it will at one as early."""
        slots = self._slots
        if slots and (self._armed is None or slots[0] < self._armed):
            self._armed = slots[0]
            self._ticker.arm(self, slots[0])

    def _remember(self, rid: int, addr: AddrObj, data: bytes) -> None:
        """Cache the answer to request ``rid`` from ``addr``.

        The young generation takes it; once it holds half of ``reply_cache_entries`` or of
        ``reply_cache_bytes`` it becomes the old one and the old one is dropped, so the cache
        never holds more than the bounds and always the newest half. Every ``reply_cache_ttl``
        the same happens by age (the ager), so an answer stays at least that long, at most
        twice that (unless the bounds push it out sooner). A dropped generation is freed one
        entry per new answer (see _dropped).
        """
        young = self._replies
        size = self._reply_bytes + len(data)
        if len(young) >= self._young_entries or size > self._young_bytes:
            self._age_replies()
            if self._reply_bytes_old + len(data) > self.config.reply_cache_bytes:  # (over half)
                self._age_replies()
            young, size = self._replies, len(data)
        young[rid] = (addr, data, 0)
        self._reply_bytes = size
        if self._dropped:
            self._dropped.popitem()
        if self._ager is None:
            self._ager = self._loop.call_later(self.config.reply_cache_ttl, self._on_ager)

    def _age_replies(self) -> None:
        """The young generation becomes the old one; the old one is dropped."""
        self._dropped = self._replies_old
        self._replies_old, self._reply_bytes_old = self._replies, self._reply_bytes
        self._replies, self._reply_bytes = {}, 0

    def _on_ager(self) -> None:
        idle = not self._replies  # no new answer for a while: no one waits on freeing at once
        self._age_replies()
        if idle:
            self._dropped = {}
        self._ager = (
            self._loop.call_later(self.config.reply_cache_ttl, self._on_ager)
            if self._replies_old
            else None
        )

    def _resend(
        self, rid: int, cached: _Cached, req: wire.Request, addr: AddrObj, size: int
    ) -> None:
        """A retransmission of a finished request: its cached answer again (max_resends)."""
        self.stats.duplicates += 1
        _, data, resends = cached
        if resends >= self.config.max_resends:
            self.stats.resends_refused += 1
            return
        # In the generation that holds it: it keeps its age.
        cache = self._replies if rid in self._replies else self._replies_old
        cache[rid] = (addr, data, resends + 1)
        self._answer(data, req, addr, size)

    def cached_replies(self) -> int:
        """How many answers the reply cache holds now (both generations)."""
        return len(self._replies) + len(self._replies_old)

    # --- calling -------------------------------------------------------------------------------

    async def call(
        self,
        addr: AddrObj,
        method: str,
        args: dict[str, Any] | None = None,
        *,
        tries: int | None = None,
        pad: bool = False,
    ) -> Any:
        """Send ``method(args)`` to ``addr`` and return the result.

        ``pad``: when we hold no token for ``addr``, pad the request (an argument ``pad`` the
        peer ignores) so that the largest answer seen so far to ``method`` fits in 3 times its
        size: the answer then comes at once instead of after a retry and a resend (PROTOCOL.md
        section 6a.1). A request is padded to MAX_PAD bytes at most; a larger answer takes the
        retry. Only the first PAD_CALLS requests to a peer are padded.

        Raises RpcTimeout after ``tries`` sends without a reply (SendFailed, a subclass, at once
        when the address cannot be sent to), a RemoteError subclass for an error reply,
        EncodeError / MessageTooLarge before sending when the request cannot go. ``addr`` must
        be an IP literal as the peer's socket reports it (see net.resolve).
        """
        if self._transport is None:
            raise DhtError("endpoint is closed")
        cfg = self.config
        pending = self._pending
        if len(pending) + self._waiting >= cfg.max_pending:
            raise TooManyPending(f"{len(pending)} calls already in flight")
        if args is None:
            args = {}
        peer = self._peers.get(addr)
        if peer is None:
            peer = self._new_peer(addr)
        if peer.inflight >= peer.window:
            await self._wait_turn(peer)
        peer.inflight += 1
        rids = self._rids  # (always empty with a seeded generator)
        rid = rids.pop() if rids else self._rid()
        while rid in pending:
            rid = self._rid()
        tx = None
        try:
            token = peer.token
            data = wire.encode_request(rid, method, args, token)
            if pad and token is None and peer.padded < self.PAD_CALLS:
                peer.padded += 1
                data = self._padded(rid, method, args, data)
            to = peer.to
            if type(to) is not tuple:
                self.stats.send_errors += 1
                raise SendFailed(addr, method, str(to))
            # The first send, as tx.send() does the later ones (inline: every call runs it).
            now = self._time()
            tx = _Transaction()
            tx.rid = rid
            tx.peer = peer
            tx.method = method
            tx.args = args
            tx.data = data
            tx.tries = tries or cfg.tries
            tx.rto = peer.rto
            tx.attempt = 1
            tx.slot = 0  # (until the next tick puts it in the wheel, if it is still running)
            tx.pad = pad
            tx.seq = peer.sends = peer.sends + 1
            tx.future = future = self._new_future()
            tx.started = tx.sent_at = now
            pending[rid] = tx
            transport = self._transport
            if transport is None:  # (closed while this call waited for its turn)
                raise DhtError("endpoint is closed")
            try:
                transport.sendto(data, to)
            except Exception as exc:  # uvloop raises here what asyncio hands to error_received
                self.stats.send_errors += 1
                raise SendFailed(addr, method, f"{type(exc).__name__}: {exc}") from None
            stats = self.stats
            stats.sent += 1
            stats.bytes_sent += len(data)
            sent = self._sent
            if not sent:
                self._stage_soon(now)
            sent.append(rid)
            return await future
        finally:
            if tx is not None:
                del pending[rid]  # (its id stays in _sent or the wheel until a tick reads it)
            peer.inflight -= 1
            if peer.waiters:
                self._next_turn(peer)
            elif not peer.inflight:
                peer.idle(cfg)

    def _new_peer(self, addr: AddrObj) -> _Peer:
        peers = self._peers
        if len(peers) >= self.config.max_peers:
            # The oldest peer with no call in flight or waiting makes room (by the bound
            # alone, more can have calls in flight: max_pending holds them).
            for old, known in peers.items():
                if not known.inflight and not known.waiters:
                    del peers[old]
                    break
        peer = peers[addr] = _Peer(addr, self._check_destination(addr), self.config)
        return peer

    # Requests padded for one peer at most (while we hold no token of its): padding saves the
    # first calls to a peer a retry's round trip, but padded every time, a coordinator's
    # reads of the same primaries were padded and encoded twice for good (a large answer to
    # an unpadded one draws the retry, and the token then spares the padding; a small one
    # needs neither).
    PAD_CALLS: ClassVar[int] = 8
    # A request padded to at most this: a find's or a neighbors' answer fits.
    MAX_PAD: ClassVar[int] = 320
    # The amplification factor a responder applies (PROTOCOL.md section 6a.1).
    PAD_FACTOR: ClassVar[int] = 3
    # Bytes an answer may grow past the largest seen without drawing a retry.
    PAD_SLACK: ClassVar[int] = 64

    def _padded(self, rid: int, method: str, args: dict[str, Any], data: bytes) -> bytes:
        """``data``, or the same request padded to a third of the answer to expect from
        ``method``: the largest seen plus PAD_SLACK, or MAX_PAD before any came; at most
        MAX_PAD bytes (see call). Answers grow as a ring fills in: padded to the largest seen
        alone, the calls of 1,000 joining nodes drew 6,200 retries (a round trip each), with
        this 2,100."""
        seen = self._answer_sizes.get(method)
        answer = self.PAD_FACTOR * self.MAX_PAD if seen is None else seen + self.PAD_SLACK
        need = min(-(-answer // self.PAD_FACTOR), self.MAX_PAD)
        short = need - len(data)
        if short <= 0 or "pad" in args:
            return data
        size = max(short - 6, 0)  # "pad" and a bin8 header add 6 bytes (7 past 255)
        for _ in range(2):
            padded = wire.encode_request(rid, method, {**args, "pad": bytes(size)})
            if len(padded) >= need:
                break
            size += need - len(padded)
        return padded

    async def _wait_turn(self, peer: _Peer) -> None:
        """Wait until ``peer`` has room in its window (woken by a call that ends)."""
        turn: asyncio.Future[None] = self._loop.create_future()
        if peer.waiters is None:
            peer.waiters = deque()
        peer.waiters.append(turn)
        self._waiting += 1
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # woken, then cancelled: pass the turn on
                self._next_turn(peer)
            elif turn in peer.waiters:
                peer.waiters.remove(turn)
            raise
        finally:
            self._waiting -= 1

    def _next_turn(self, peer: _Peer) -> None:
        waiters = peer.waiters
        while waiters and peer.inflight < peer.window:
            turn = waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return

    def _timed_out(self, tx: _Transaction) -> None:
        """A send of ``tx`` got no answer in time. If its peer answered others since, it is
        alive but slow: back its RTO off, and halve its window (once a round trip)."""
        now = self._time()
        peer = tx.peer
        if peer.srtt is None or peer.heard < tx.sent_at:
            return  # no sign of life: a loss, or a dead peer (found as fast as ever)
        peer.backoff = min(peer.backoff * 2, self.config.max_backoff)
        peer.set_rto(self.config)
        if now - peer.cut_at > peer.rto:
            peer.window = peer.threshold = max(peer.window / 2, self.config.min_window)
            peer.cut_at = now

    # Request ids have their top bit set, so that each is encoded as a uint64 (0xCF and 8
    # bytes), where datagram_received looks for an answer's before decoding it: an id under
    # 2^32 (one call in 4 billion) would be encoded shorter, and its answers taken for a
    # stranger's datagram (by a client's endpoint, dropped).
    _TOP_BIT: ClassVar[int] = 1 << 63

    def _os_rid(self) -> int:
        rids = self._rids
        if not rids:  # one system call per 256 ids
            top = self._TOP_BIT
            rids.extend(r | top for r in struct.unpack("<256Q", os.urandom(256 * 8)))
        return rids.pop()

    def _seeded_rid(self) -> int:
        return self._rng.getrandbits(64) | self._TOP_BIT

    def rto_for(self, addr: AddrObj) -> float:
        """The first timeout a call to ``addr`` would use now."""
        peer = self._peers.get(addr)
        return self.config.initial_rto if peer is None else peer.rto

    def token_for(self, addr: AddrObj) -> bytes | None:
        """The address token ``addr`` gave us, which our requests to it carry (if any)."""
        peer = self._peers.get(addr)
        return None if peer is None else peer.token

    def srtt(self, addr: AddrObj) -> float | None:
        """The smoothed round-trip time to ``addr``, if it ever answered a first try."""
        peer = self._peers.get(addr)
        return None if peer is None else peer.srtt

    def _on_response(
        self,
        msg: wire.Reply | wire.ErrorReply,
        addr: AddrObj,
        size: int,
        tx: _Transaction | None = None,
    ) -> None:
        """An answer to one of our calls; ``tx``: its call, when datagram_received found it
        (and its peer's address, ``addr``) before decoding."""
        if tx is None:
            tx = self._pending.get(msg.rid)
            if tx is None or tx.peer.addr != addr:
                self.stats.unexpected_replies += 1
                return
        future = tx.future
        if future.done():
            return
        # (Only sizes padding can cover: one huge answer must not turn padding off.)
        if tx.pad and self._answer_sizes.get(tx.method, 0) < size <= self.PAD_FACTOR * self.MAX_PAD:
            self._answer_sizes[tx.method] = size
        # Feed the RTT estimate and open the peer's window (by one below its threshold, else by
        # one per window). Inline: every answer. A sample comes only from a request sent once
        # (Karn) and after the last sample came: one a round trip, as TCP without timestamps
        # takes them (RFC 6298 section 3 asks for at least that), however many calls are in
        # flight; the estimate is then per round trip, as its gains (1/8, 1/4) assume. (Told
        # by a count of calls, not by the clock: uvloop's moves in whole milliseconds, and
        # calls sent in the same one as the last sample came took 69 % of the answers for
        # samples, 32 calls in flight, in bench/rpc.py.)
        now = self._time()
        peer = tx.peer
        if tx.attempt == 1:
            if tx.seq > peer.sampled:
                peer.sample(now - tx.sent_at, self.config)
        elif tx.working_at < 0:  # (WORKING: a slow handler, not a slow path)
            self._answered_late(peer, tx, now)
        peer.heard = now
        window = peer.window
        if window < self._max_window:
            window += 1.0 if window < peer.threshold else 1.0 / window
            peer.window = window if window < self._max_window else self._max_window
        if type(msg) is wire.Reply:
            future.set_result(msg.result)
        else:
            assert type(msg) is wire.ErrorReply
            future.set_exception(remote_error(msg.code, msg.message, msg.data))

    def _answered_late(self, peer: _Peer, tx: _Transaction, now: float) -> None:
        """``tx`` was answered only after it was sent again: no RTT sample (Karn). A peer with
        no estimate yet then takes half again the time the call took as its timeout, until a
        first try is answered and gives a sample (RFC 6298 5.7 keeps the backed-off timeout).
        One farther than the first timeout (0.3 s) was never sampled, and every call to it
        went out twice, for good (a helper's review: 20 calls, 40 datagrams, no estimate).
        A peer with an estimate is left to it: kept from every such answer, the backed-off
        timeout climbed to 2 s under random loss, and calls one at a time took up to 2.5 times
        as long (a second helper's review, of the first version of this)."""
        if peer.srtt is None:
            cfg = self.config
            ceiling = min(cfg.initial_rto * cfg.max_backoff, cfg.max_rto)
            peer.rto = max(peer.rto, min(1.5 * (now - tx.started), ceiling))

    def _on_retry(self, msg: wire.Retry, addr: AddrObj) -> None:
        tx = self._pending.get(msg.rid)
        if tx is None or tx.peer.addr != addr:
            self.stats.unexpected_replies += 1
            # A peer we are calling offers our token in place of a request it dropped
            # (_offer_token: under a flood in our name): kept, when we hold none, for our
            # next sends (the token is checked by the peer; a forged one is no token).
            peer = self._peers.get(addr)
            if peer is not None and peer.inflight and peer.token is None:
                peer.token = msg.token
            return
        tx.peer.token = msg.token
        tx.retry_with(self, msg.token)

    def _on_working(self, msg: wire.Working, addr: AddrObj) -> None:
        tx = self._pending.get(msg.rid)
        if tx is None or tx.peer.addr != addr:
            self.stats.unexpected_replies += 1
            return
        if self.config.max_working <= 0:
            return  # this endpoint's calls do not wait on WORKING
        now = self._time()
        tx.working_at = now
        self.last_working = (addr, tx.method, now)

    # --- the datagram protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport has the datagram methods but not the asyncio base class.
        self._transport = cast(asyncio.DatagramTransport, transport)
        self._socket_open = True
        fit_receive_size(transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        # IPv6 sockets report (host, port, flowinfo, scope_id); IPv4 ones never need the check.
        if not self._v4_socket and len(addr) != 2:
            addr = (addr[0], addr[1])
            if self._dual and addr[0].startswith("::ffff:"):  # an IPv4 peer of a dual socket
                addr = (addr[0][7:], addr[1])
        # Rate limits come first, before decoding: a flood over a source's share costs a dict
        # lookup per datagram. Every datagram counts but the answers to our own calls in
        # flight (told before decoding, below); on real sockets what one costs past its token
        # is charged after it is handled (_charge).
        start = 0.0  # when this datagram's CPU time is measured, to be charged to its source
        tx: _Transaction | None = None  # the call this answers (found before decoding)
        if self._screened and not (
            # an answer to a call of ours in flight, by its first bytes (as our encoder sends
            # answers: a fixarray of 4, 5 or 6 items, version 1, a kind from REPLY to WORKING),
            # its request id (a uint64 at a fixed place) and its source, the address called;
            # inline, and compared as ranges, not looked up: every datagram comes here
            len(data) > 11
            and data[1] == wire.VERSION
            and 0x94 <= data[0] <= 0x96
            and wire.REPLY <= data[2] <= wire.WORKING
            and data[3] == 0xCF
            and (tx := self._pending.get(int.from_bytes(data[4:12], "big"))) is not None
            and tx.peer.addr == addr
        ):
            # (Anything else counts, answers to no call of ours included: they used to pass by
            # their first bytes alone, 20,000 from one socket in 0.09 s, each decoded; and
            # from another address than the one called, with an id a node leaked by calling
            # the attacker: 64 KB answers at 1,000 a second, 95 % of a core.)
            tx = None  # (a call found by its id, from another address, is not answered here)
            if not self._limited:  # (answers_only: a client's endpoint)
                self.stats.unexpected_replies += 1
                return
            if not self._admit(addr, data):
                self.stats.rate_limited += 1
                return
            if self._timed:
                self._token_in = None
                start = time.perf_counter()
        # Decoded and handed on here, not in a method of its own: a call less on every one.
        if self.foreign is not None and data[:1] < b"\x02":  # rpcudp's first bytes (kad/codec.py)
            self.foreign(data, addr)
        else:
            try:
                msg = wire.decode(data)
            except DhtError:
                self.stats.dropped_malformed += 1
            else:
                size = len(data)
                stats = self.stats
                stats.received += 1
                stats.bytes_received += size
                if type(msg) is wire.Request:
                    self._on_request(msg, addr, size)
                elif type(msg) is wire.Reply or type(msg) is wire.ErrorReply:
                    self._on_response(msg, addr, size, tx)
                elif type(msg) is wire.Retry:
                    self._on_retry(msg, addr)
                elif type(msg) is wire.Working:
                    self._on_working(msg, addr)
        if start:
            spent = time.perf_counter() - start
            if spent > COST_UNIT:
                self._charge(addr, spent, token=self._token_in)

    def _charge(
        self, addr: AddrObj, spent: float, *, paid: float = 1.0, token: bytes | None = None
    ) -> None:
        """A datagram took ``spent`` seconds of CPU to decode and handle, more than the token
        it paid (COST_UNIT) stands for: its source's bucket, its proven share when it carried
        its ``token``, and the global bucket pay the rest. A node of our leafset that carried
        its token is exempt (hand-off and repair pages take milliseconds); without the token,
        its address may be spoofed. (Counted by datagrams alone, costly requests inside a
        source's share took a node's core: SECURITY.md row 7.)"""
        proven = self._token_ok(addr, token)
        if proven and self.exempt is not None and self.exempt(addr):
            return
        cost = spent / COST_UNIT - paid
        now = self._time()
        cfg = self.config
        if cfg.source_rate:
            source = source_of(addr)
            self._sources.charge(source, now, cost)
            if proven:
                # (The share its token draws on once its own is spent, _admit: else a token
                # bought uncharged CPU, SECURITY.md row 7.)
                self._proven_shares.charge(source, now, cost)
        if cfg.global_rate:
            self._everyone.charge(cfg.global_rate, self._burst, now, cost)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable...) carry no request id on an unconnected socket; the
        # call they concern will time out on its own. Never let them reach the event loop.
        log.debug("socket error on %s: %s", format_addr(self.addr), exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._socket_open = False
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def send_raw(self, data: bytes, addr: AddrObj) -> str | None:
        """Send a datagram built elsewhere (the ``foreign`` protocol's); None when it went,
        else why it could not."""
        return self._send(data, addr)

    def _send(self, data: bytes, addr: AddrObj) -> str | None:
        """Send one datagram; None when it went, else why it could not (counted)."""
        to = self._sendable.get(addr)
        if to is None:
            to = self._check_destination(addr)
        if type(to) is not tuple:
            self.stats.send_errors += 1
            return str(to)
        return self._send_to(data, to)

    def _send_to(self, data: bytes, to: AddrObj) -> str | None:
        """Send one datagram to ``to``, an address the socket takes as it is (checked, or
        the source of a datagram it received); None when it went, else why it could not."""
        transport = self._transport
        if transport is None:
            return "the endpoint is closed"
        try:
            transport.sendto(data, to)
        except Exception as exc:  # uvloop raises here what asyncio hands to error_received
            self.stats.send_errors += 1
            return f"{type(exc).__name__}: {exc}"
        stats = self.stats
        stats.sent += 1
        stats.bytes_sent += len(data)
        return None

    def _check_destination(self, addr: AddrObj) -> AddrObj | str:
        """Where the socket sends a datagram for ``addr`` (itself, or its IPv4-mapped form on
        a dual-stack socket), or why it cannot; remembered per destination."""
        to: AddrObj | str
        try:
            check_peer_addr(*addr)
        except (TypeError, ValueError) as exc:
            to = str(exc)
        else:
            v6 = ":" in addr[0]
            if v6 != self._family_v6 and not self._dual:
                to = "the address is not of this socket's family"
            else:
                to = (addr[0], addr[1]) if not self._dual or v6 else _mapped(addr)
        if len(self._sendable) >= self.config.max_peers:
            self._sendable.clear()
        self._sendable[addr] = to
        return to

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._transport is None

    def close(self) -> None:
        """Stop serving; pending calls fail, running handlers are cancelled."""
        transport, self._transport = self._transport, None
        self._armed = None  # (the ticker's calls for our slots find nothing to do)
        self._wheel.clear()
        self._slots.clear()
        self._sent.clear()
        if self._ager is not None:
            self._ager.cancel()
            self._ager = None
        for peer in self._peers.values():
            for turn in peer.waiters or ():
                if not turn.done():
                    turn.set_exception(DhtError("endpoint closed"))
        for tx in list(self._pending.values()):
            if not tx.future.done():
                tx.future.set_exception(DhtError("endpoint closed"))
        for task in list(self._tasks):
            task.cancel()
        if transport is not None:
            transport.close()

    async def wait_closed(self) -> None:
        """After close(): once the handlers have ended and the socket is closed (a transport
        closes it a loop iteration later: a node started again at once on the same port, as
        a start that failed is tried again, found it in use)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._socket_open:
            if self._lost is None:
                self._lost = self._loop.create_future()
            await self._lost


class _Ticker:
    """One loop timer for every endpoint on a loop: the endpoints register the earliest slot
    of their wheels, and the timer fires at the earliest slot of all and calls each endpoint
    registered for a slot that is due (RpcEndpoint.on_tick), which registers its next one.

    With 100 servers in one process (kademlia's test scripts, bench/ops.py) or thousands of
    nodes on the simulator, each endpoint's calls are few and far between, so a timer per
    endpoint was a timer (a handle pushed on and popped off the loop's heap, Python
    comparisons each way) per call. Now the loop holds one for the whole process.
    """

    __slots__ = ("_due", "_loop", "_slots", "_timer", "_timer_slot")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[int, list[RpcEndpoint]] = {}  # slot -> endpoints to call then
        self._slots: list[int] = []  # a heap of the slots in _due
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = 0

    def arm(self, endpoint: RpcEndpoint, slot: int) -> None:
        due = self._due.get(slot)
        if due is not None:
            due.append(endpoint)
            return
        self._due[slot] = [endpoint]
        heapq.heappush(self._slots, slot)
        if self._timer is None or slot < self._timer_slot:
            self._set(slot)

    def _set(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(slot * TICK, self._fire)
        self._timer_slot = slot

    def _fire(self) -> None:
        self._timer = None
        slots, due = self._slots, self._due
        now = self._loop.time()
        tick = TICK
        while slots and slots[0] * tick <= now:  # as armed: no rounding of now / tick
            slot = heapq.heappop(slots)
            for endpoint in due.pop(slot, ()):
                endpoint.on_tick(slot)  # (may arm later slots: pushed on the heap)
        if slots:
            self._keep(slots[0])

    def _keep(self, slot: int) -> None:
        """The timer set for ``slot`` (endpoints called above may have set it already)."""
        if self._timer is None or self._timer_slot != slot:
            self._set(slot)


_TICKER_ATTR = "_udpdht_ticker"  # the attribute of a loop that holds its ticker


@types.coroutine
def _timed_steps(coro: Coroutine[Any, Any, T], spent: list[float]) -> Generator[Any, Any, T]:
    """Await ``coro``, adding the time each of its steps takes to ``spent[0]`` (its own CPU,
    not the waits between: what a handler coroutine costs the node, for _charge)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        start = time.perf_counter()
        try:
            yielded = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as done:
            spent[0] += time.perf_counter() - start
            return cast(T, done.value)
        except BaseException:
            spent[0] += time.perf_counter() - start
            raise
        spent[0] += time.perf_counter() - start
        try:
            value, error = (yield yielded), None
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # (CancelledError: passed in, as a task would)
            value, error = None, exc


def _ticker(loop: asyncio.AbstractEventLoop) -> _Ticker:
    """The loop's ticker, kept on the loop itself: a registry beside the loops (even a weak
    one: the ticker, its timer and the endpoints it waits to call all hold the loop) kept
    every loop that ever had a call in flight alive, with its endpoints and their nodes."""
    ticker: _Ticker | None = getattr(loop, _TICKER_ATTR, None)
    if ticker is None:
        ticker = _Ticker(loop)
        setattr(loop, _TICKER_ATTR, ticker)
    return ticker


def _dual_stack(transport: asyncio.BaseTransport) -> bool:
    """Whether an IPv6 socket also carries IPv4 (IPV6_V6ONLY off, Linux's default)."""
    sock = transport.get_extra_info("socket")
    if sock is None:  # the simulator's transports
        return False
    try:
        return bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0)
    except OSError:
        return False


def _mapped(addr: AddrObj) -> AddrObj:
    """An IPv4 peer's address as a dual-stack IPv6 socket sends to it."""
    return f"::ffff:{addr[0]}", addr[1]
