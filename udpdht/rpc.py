"""Request/response over datagrams: one endpoint per node, on any :class:`~udpdht.net.Network`.

A call is a *transaction* (after aioice's ``stun.Transaction``): it sends the request, sets a
deadline, resends on each expiry with a doubled timeout plus jitter, and fails with
:class:`~udpdht.errors.RpcTimeout` after the last try. Its pending entry is removed in
``finally``, so a cancelled call leaks nothing; deadlines sit in one heap per endpoint with a
single armed timer (a per-call timer handle cost more than the rest of the call's bookkeeping).
A reply is accepted only for a pending request id and only from the address the request went
to.

The first timeout of a call comes from a per-peer estimate (Jacobson/Karels, RFC 6298:
``RTO = SRTT + 4·RTTVAR``, clamped), fed only by replies to requests sent once (Karn's rule).

The serving side remembers the encoded reply to each (peer, request id) for a while, so a
retried request is answered again instead of executed twice; a request whose handler is still
running is dropped as a duplicate. A handler that raises produces an error reply, never a dead
task: the caller gets :class:`~udpdht.errors.RemoteError` at once instead of a timeout.

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
import hashlib
import heapq
import hmac
import inspect
import itertools
import logging
import os
import random
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, cast

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
from .net import Address, Network, check_peer_addr, format_addr
from .ratelimit import Buckets, TokenBucket, source_of

log = logging.getLogger("udpdht.rpc")

#: A handler gets the request's arguments and the caller's address; it returns the result,
#: directly or as a coroutine. Raising a RemoteError subclass sends that code back.
Handler = Callable[[dict[str, Any], Address], Any]


@dataclass(frozen=True)
class RpcConfig:
    tries: int = 4  # sends per call, the first included
    initial_rto: float = 0.3  # first timeout for a peer with no RTT sample yet
    min_rto: float = 0.1  # floor: loopback RTTs are microseconds, event-loop stalls are not
    max_rto: float = 2.0  # ceiling for any single wait
    jitter: float = 0.2  # each wait is stretched by up to this fraction, at random
    max_pending: int = 10_000  # calls in flight at once
    reply_cache_entries: int = 8192
    reply_cache_bytes: int = 8 << 20
    reply_cache_ttl: float = 30.0  # longer than any caller keeps retrying
    max_resends: int = 8  # times one cached answer is sent again (retransmissions of a call)
    max_peers: int = 8192  # RTT estimates (and address tokens) kept
    max_handlers: int = 512  # coroutine handlers running at once; past that, BUSY
    amplification: float = 3.0  # largest answer to an unproven address, × its request (0: off)
    token_period: float = 300.0  # a token is good for one to two of these (seconds)
    source_rate: float = 0.0  # requests per second from one source (0: no limit)
    source_burst: float = 0.0  # a source's bucket (0: twice its rate)
    global_rate: float = 0.0  # requests per second from everyone (0: no limit)
    global_burst: float = 0.0  # (0: twice the rate)
    max_sources: int = 16_384  # sources whose buckets are kept


#: What a node runs with unless told otherwise: rate limits at OpenDHT's figures.
NODE_RPC = RpcConfig(source_rate=1024.0, global_rate=8192.0)


@dataclass
class RpcStats:
    sent: int = 0  # datagrams sent: requests, resends, replies
    received: int = 0  # datagrams that decoded
    retries: int = 0  # resends of a request after a timeout
    timeouts: int = 0  # calls that failed with RpcTimeout
    dropped_malformed: int = 0  # datagrams that did not decode
    duplicates: int = 0  # retried requests answered from the cache (or dropped while running)
    unexpected_replies: int = 0  # replies for no pending call, or from the wrong address
    errors_sent: int = 0  # error replies sent
    handler_failures: int = 0  # handlers that raised something other than a RemoteError
    rate_limited: int = 0  # datagrams (all but answers) dropped by the rate limits
    busy: int = 0  # requests answered BUSY because max_handlers were running
    tokens_sent: int = 0  # answers replaced by a retry token (unproven address, large answer)
    resends_refused: int = 0  # retransmissions not answered again (max_resends reached)
    send_errors: int = 0  # datagrams not sent: a bad destination or an error from the socket

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _Rtt:
    __slots__ = ("rttvar", "srtt")

    def __init__(self, sample: float) -> None:
        self.srtt = sample
        self.rttvar = sample / 2

    def update(self, sample: float) -> None:
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
        self.srtt = 0.875 * self.srtt + 0.125 * sample


_IN_PROGRESS = b""  # reply-cache marker: the handler has not answered yet
# First bytes of the answers our encoder sends: fixarray of 4, 5 or 6 (an error with data),
# version 1, kind 1..3.
_ANSWER_ARRAYS = frozenset({0x94, 0x95, 0x96})
_ANSWERS = frozenset({wire.REPLY, wire.ERROR, wire.RETRY})


def _looks_like_answer(data: bytes) -> bool:
    return len(data) > 3 and data[1] == 1 and data[0] in _ANSWER_ARRAYS and data[2] in _ANSWERS


class _Transaction:
    """One call: resends on a doubling timeout until a reply or the last try.

    Its timeouts live in the endpoint's deadline heap (one armed timer per endpoint, not one per
    call): a finished transaction's entry is simply skipped when its time comes.
    """

    __slots__ = (
        "addr",
        "args",
        "attempt",
        "data",
        "deadline",
        "endpoint",
        "future",
        "method",
        "rid",
        "rto",
        "sent_at",
        "started",
        "token_retries",
        "tries",
    )

    def __init__(
        self,
        endpoint: RpcEndpoint,
        rid: int,
        addr: Address,
        method: str,
        args: dict[str, Any],
        data: bytes,
        tries: int,
        rto: float,
    ) -> None:
        self.endpoint = endpoint
        self.rid = rid
        self.addr = addr
        self.method = method
        self.args = args  # kept to send the request again with a token
        self.data = data
        self.tries = tries
        self.rto = rto
        self.attempt = 0
        self.token_retries = 0
        self.future: asyncio.Future[Any] = endpoint._loop.create_future()
        self.started = self.sent_at = self.deadline = endpoint._loop.time()

    def send(self) -> None:
        ep = self.endpoint
        self.attempt += 1
        now = self.sent_at = ep._loop.time()
        reason = ep._send(self.data, self.addr)
        if reason is not None:
            self.future.set_exception(SendFailed(self.addr, self.method, reason))
            return
        ep._schedule(self, now + self.rto * (1.0 + ep.config.jitter * ep._rng.random()))

    def expired(self) -> None:
        ep = self.endpoint
        if self.attempt >= self.tries:
            ep.stats.timeouts += 1
            elapsed = ep._loop.time() - self.started
            self.future.set_exception(RpcTimeout(self.addr, self.method, self.attempt, elapsed))
            return
        ep.stats.retries += 1
        self.rto = min(self.rto * 2, ep.config.max_rto)
        self.send()

    def resolve(self, msg: wire.Reply | wire.ErrorReply) -> None:
        if self.future.done():
            return
        if self.attempt == 1:  # Karn: a reply to a resent request says nothing about the RTT
            self.endpoint._rtt_sample(self.addr, self.endpoint._loop.time() - self.sent_at)
        if type(msg) is wire.Reply:
            self.future.set_result(msg.result)
        else:
            assert isinstance(msg, wire.ErrorReply)
            self.future.set_exception(remote_error(msg.code, msg.message, msg.data))

    def retry_with(self, token: bytes) -> None:
        """The peer asks us to prove our address: send the same request with its token."""
        if self.future.done() or self.token_retries >= 2:  # a peer that keeps asking: time out
            return
        self.token_retries += 1
        self.data = wire.encode_request(self.rid, self.method, self.args, token)
        self.sent_at = self.endpoint._loop.time()  # the RTT sample, if any, starts here
        reason = self.endpoint._send(self.data, self.addr)
        if reason is not None:
            self.future.set_exception(SendFailed(self.addr, self.method, reason))


class RpcEndpoint(asyncio.DatagramProtocol):
    """A datagram endpoint that both serves handlers and makes calls."""

    STALL = 0.25  # a deadline that fires this late (seconds) means the loop itself stalled

    def __init__(self, *, config: RpcConfig | None = None, rng: random.Random | None = None):
        self.config = config or RpcConfig()
        self._loop = asyncio.get_running_loop()
        # Request ids guard against forged replies, so they come from the OS: a peer we call
        # sees hundreds of our ids, enough to predict a Mersenne Twister's next ones and forge
        # another peer's reply. The simulator passes a seeded Random so that runs repeat
        # exactly (ids, jitter and the token secret); jitter needs no secrecy.
        self._rng: random.Random = rng or random.Random()
        self._rid: Callable[[int], int] = rng.getrandbits if rng is not None else secrets.randbits
        self._secret = os.urandom(32) if rng is None else self._rng.randbytes(32)
        self.stats = RpcStats()
        self._handlers: dict[str, tuple[Handler, bool, bool]] = {}
        self._deadlines: list[tuple[float, int, _Transaction]] = []  # a heap
        self._deadline_seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._pending: dict[int, _Transaction] = {}
        # (peer, rid) -> [answer, expiry, resends]; answer is _IN_PROGRESS while running
        self._replies: OrderedDict[tuple[Address, int], list[Any]] = OrderedDict()
        self._reply_bytes = 0
        self._next_purge = 0.0
        self._rtts: dict[Address, _Rtt] = {}
        self._tokens: dict[Address, bytes] = {}  # tokens peers gave us, sent with each request
        self._sendable: dict[Address, str | None] = {}  # destination -> why not (None: fine)
        cfg = self.config
        self._sources = Buckets(cfg.source_rate, cfg.source_burst, cfg.max_sources)
        self._everyone = TokenBucket(cfg.global_burst or 2 * cfg.global_rate, self._loop.time())
        self._limited = bool(cfg.source_rate or cfg.global_rate)
        self._handlers_running = 0
        self._log_budget = TokenBucket(10.0, 0.0)  # handler tracebacks: a few, not megabytes
        self._tasks: set[asyncio.Task[None]] = set()
        self._transport: asyncio.DatagramTransport | None = None
        self._family_v6 = False
        self.addr: Address = ("", 0)
        #: Loop time of the last event-loop stall seen (a timeout that fired late).
        self.last_stall = float("-inf")

    @classmethod
    async def bind(
        cls,
        network: Network,
        addr: Address,
        *,
        config: RpcConfig | None = None,
        rng: random.Random | None = None,
    ) -> RpcEndpoint:
        endpoint = cls(config=config, rng=rng)
        transport = await network.bind(addr, endpoint)
        sockname = transport.get_extra_info("sockname")
        endpoint.addr = (str(sockname[0]), int(sockname[1]))
        endpoint._family_v6 = ":" in endpoint.addr[0]
        return endpoint

    # --- serving -------------------------------------------------------------------------------

    def register(self, method: str, handler: Handler, *, idempotent: bool = False) -> None:
        """Serve ``method`` with ``handler`` (a plain function or a coroutine function).

        Replies of an ``idempotent`` method are not cached: a retried request simply runs
        again, which costs less than remembering every answer of a read.
        """
        if not 0 < len(method) <= wire.MAX_METHOD:
            raise ValueError(f"method name must be 1..{wire.MAX_METHOD} characters")
        self._handlers[method] = (handler, inspect.iscoroutinefunction(handler), idempotent)

    def _admit(self, addr: Address) -> bool:
        """Whether a datagram from ``addr`` fits the rate limits (token buckets)."""
        cfg = self.config
        now = self._loop.time()
        # The source's own bucket first: a flooding source over its share is dropped without
        # spending the budget everyone shares.
        if cfg.source_rate and not self._sources.take(source_of(addr), now):
            return False
        burst = cfg.global_burst or 2 * cfg.global_rate
        return not cfg.global_rate or self._everyone.take(cfg.global_rate, burst, now)

    def _on_request(self, req: wire.Request, addr: Address, size: int) -> None:
        key = (addr, req.rid)
        cached = self._replies.get(key)
        if cached is not None:
            self.stats.duplicates += 1
            if cached[0] is not _IN_PROGRESS:
                if cached[2] >= self.config.max_resends:
                    self.stats.resends_refused += 1
                    return
                cached[2] += 1
                self._answer(cached[0], req, addr, size)
            return
        entry = self._handlers.get(req.method)
        if entry is None:
            data = self._error(req, ErrorCode.UNKNOWN_METHOD, "unknown method")
            self._remember(key, data)
            self._answer(data, req, addr, size)
            return
        handler, is_coroutine, idempotent = entry
        if is_coroutine:
            if self._handlers_running >= self.config.max_handlers:
                self.stats.busy += 1
                # Short: under load, best if it fits in 3x the request, needing no token.
                self._answer(self._error(req, ErrorCode.BUSY, "busy, try later"), req, addr, size)
                return
            if not idempotent:
                self._remember(key, _IN_PROGRESS)
            self._handlers_running += 1
            task = self._loop.create_task(
                self._serve_async(handler, req, addr, key, idempotent, size)
            )
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
            self._remember(key, data)
        self._answer(data, req, addr, size)

    async def _serve_async(
        self,
        handler: Handler,
        req: wire.Request,
        addr: Address,
        key: tuple[Address, int],
        idempotent: bool,
        size: int,
    ) -> None:
        try:
            result = await handler(req.args, addr)
        except asyncio.CancelledError:
            self._forget(key)
            raise
        except Exception as exc:
            data = self._error_from(req, exc)
        else:
            data = self._encode_result(req, result)
        finally:
            self._handlers_running -= 1
        if not idempotent:
            self._forget(key)
            self._remember(key, data)
        self._answer(data, req, addr, size)

    def _encode_result(self, req: wire.Request, result: Any) -> bytes:
        try:
            return wire.encode_reply(req.rid, result)
        except MessageTooLarge as exc:
            return self._error(req, ErrorCode.TOO_LARGE, str(exc))
        except EncodeError as exc:
            return self._error_from(req, exc)

    def _error_from(self, req: wire.Request, exc: Exception) -> bytes:
        if isinstance(exc, RemoteError):
            return self._error(req, exc.code, exc.message, exc.data)
        if isinstance(exc, TooManyPending):  # our own calls are saturated: a load, not a bug
            return self._error(req, ErrorCode.BUSY, f"busy: {exc}")
        self.stats.handler_failures += 1
        if self._log_budget.take(10 / 60, 10.0, self._loop.time()):  # ten a minute at most
            log.error("handler for %r failed", req.method, exc_info=exc)
        return self._error(req, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _error(
        self, req: wire.Request, code: int, message: str, data: dict[str, Any] | None = None
    ) -> bytes:
        self.stats.errors_sent += 1
        return wire.encode_error(req.rid, code, f"{req.method}: {message}", data)

    def _answer(self, data: bytes, req: wire.Request, addr: Address, size: int) -> None:
        """Send an answer, or a retry token in its place when it would amplify too much."""
        limit = self.config.amplification
        if limit and len(data) > limit * size and not self._token_ok(addr, req.token):
            data = wire.encode_retry(req.rid, self._token(addr, self._period()))
            if len(data) > limit * size:
                return  # a request too small for even the retry: no client of ours sends one
            self.stats.tokens_sent += 1
        self._send(data, addr)

    # --- address tokens ------------------------------------------------------------------------

    def _period(self) -> int:
        return int(self._loop.time() // self.config.token_period)

    def _token(self, addr: Address, period: int) -> bytes:
        text = f"{addr[0]}\x00{addr[1]}\x00{period}".encode()
        return hashlib.blake2b(text, key=self._secret, digest_size=16).digest()

    def _token_ok(self, addr: Address, token: bytes | None) -> bool:
        if token is None:
            return False
        period = self._period()
        return hmac.compare_digest(token, self._token(addr, period)) or hmac.compare_digest(
            token, self._token(addr, period - 1)
        )

    # --- timeouts ------------------------------------------------------------------------------

    def _schedule(self, tx: _Transaction, when: float) -> None:
        tx.deadline = when
        heapq.heappush(self._deadlines, (when, next(self._deadline_seq), tx))
        self._arm()

    def _arm(self) -> None:
        """Keep the one timer armed for the earliest deadline."""
        heap = self._deadlines
        if heap and (self._timer is None or heap[0][0] < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(heap[0][0], self._on_deadline)
            self._timer_at = heap[0][0]

    def _on_deadline(self) -> None:
        self._timer = None
        heap = self._deadlines
        now = self._loop.time()
        if heap and now - heap[0][0] > self.STALL:
            # We fired late: the event loop was busy, so a timeout now says little about the
            # peer. Nodes read last_stall before declaring a peer dead.
            self.last_stall = now
        while heap and heap[0][0] <= now:
            when, _, tx = heapq.heappop(heap)
            # Skip entries of finished calls, and old entries of calls sent again since.
            if not tx.future.done() and tx.deadline == when:
                tx.expired()
        while heap and heap[0][2].future.done():
            heapq.heappop(heap)
        # A resend above armed the timer for its own deadline, which may come after an entry
        # already in the heap: arm for the earliest, or that one would fire late.
        self._arm()

    def _remember(self, key: tuple[Address, int], data: bytes) -> None:
        cache = self._replies
        cfg = self.config
        now = self._loop.time()
        cache[key] = [data, now + cfg.reply_cache_ttl, 0]
        self._reply_bytes += len(data)
        if len(cache) > cfg.reply_cache_entries or self._reply_bytes > cfg.reply_cache_bytes:
            while cache and (
                len(cache) > cfg.reply_cache_entries or self._reply_bytes > cfg.reply_cache_bytes
            ):
                self._reply_bytes -= len(cache.popitem(last=False)[1][0])
        if now >= self._next_purge:  # age out at most once a second: off the per-call path
            self._next_purge = now + 1.0
            while cache and next(iter(cache.values()))[1] < now:
                self._reply_bytes -= len(cache.popitem(last=False)[1][0])

    def _forget(self, key: tuple[Address, int]) -> None:
        entry = self._replies.pop(key, None)
        if entry is not None:
            self._reply_bytes -= len(entry[0])

    # --- calling -------------------------------------------------------------------------------

    async def call(
        self,
        addr: Address,
        method: str,
        args: dict[str, Any] | None = None,
        *,
        tries: int | None = None,
    ) -> Any:
        """Send ``method(args)`` to ``addr`` and return the result.

        Raises RpcTimeout after ``tries`` sends without a reply (SendFailed, a subclass, at once
        when the address cannot be sent to), a RemoteError subclass for an error reply,
        EncodeError / MessageTooLarge before sending when the request cannot go. ``addr`` must
        be an IP literal as the peer's socket reports it (see net.resolve).
        """
        if self._transport is None:
            raise DhtError("endpoint is closed")
        if len(self._pending) >= self.config.max_pending:
            raise TooManyPending(f"{len(self._pending)} calls already in flight")
        rid = self._rid(64)
        while rid in self._pending:
            rid = self._rid(64)
        if args is None:
            args = {}
        data = wire.encode_request(rid, method, args, self._tokens.get(addr))
        tx = _Transaction(
            self, rid, addr, method, args, data, tries or self.config.tries, self.rto_for(addr)
        )
        self._pending[rid] = tx
        try:
            tx.send()
            return await tx.future
        finally:
            del self._pending[rid]

    def rto_for(self, addr: Address) -> float:
        """The first timeout a call to ``addr`` would use now."""
        cfg = self.config
        est = self._rtts.get(addr)
        if est is None:
            return cfg.initial_rto
        return min(max(est.srtt + 4 * est.rttvar, cfg.min_rto), cfg.max_rto)

    def srtt(self, addr: Address) -> float | None:
        """The smoothed round-trip time to ``addr``, if it ever answered a first try."""
        est = self._rtts.get(addr)
        return None if est is None else est.srtt

    def _rtt_sample(self, addr: Address, sample: float) -> None:
        est = self._rtts.get(addr)
        if est is not None:
            est.update(sample)
            return
        if len(self._rtts) >= self.config.max_peers:
            del self._rtts[next(iter(self._rtts))]
        self._rtts[addr] = _Rtt(sample)

    def _on_response(self, msg: wire.Reply | wire.ErrorReply, addr: Address) -> None:
        tx = self._pending.get(msg.rid)
        if tx is None or tx.addr != addr:
            self.stats.unexpected_replies += 1
            return
        tx.resolve(msg)

    def _on_retry(self, msg: wire.Retry, addr: Address) -> None:
        tx = self._pending.get(msg.rid)
        if tx is None or tx.addr != addr:
            self.stats.unexpected_replies += 1
            return
        if len(self._tokens) >= self.config.max_peers and addr not in self._tokens:
            del self._tokens[next(iter(self._tokens))]
        self._tokens[addr] = msg.token
        tx.retry_with(msg.token)

    # --- the datagram protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport has the datagram methods but not the asyncio base class.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if len(addr) != 2:  # IPv6 sockets report (host, port, flowinfo, scope_id)
            addr = (addr[0], addr[1])
        # Rate limits come first, before decoding: a flood over a source's share costs a dict
        # lookup per datagram. Every datagram counts but the answers to our own calls, told
        # by their first bytes (one that merely looks like an answer is matched against our
        # calls in flight and dropped, which is as cheap).
        if self._limited and not _looks_like_answer(data) and not self._admit(addr):
            self.stats.rate_limited += 1
            return
        try:
            msg = wire.decode(data)
        except DhtError:
            self.stats.dropped_malformed += 1
            return
        self.stats.received += 1
        kind = type(msg)
        if kind is wire.Request:
            self._on_request(cast(wire.Request, msg), addr, len(data))
        elif kind is wire.Retry:
            self._on_retry(cast(wire.Retry, msg), addr)
        else:
            self._on_response(cast(wire.Reply | wire.ErrorReply, msg), addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable...) carry no request id on an unconnected socket; the
        # call they concern will time out on its own. Never let them reach the event loop.
        log.debug("socket error on %s: %s", format_addr(self.addr), exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def _send(self, data: bytes, addr: Address) -> str | None:
        """Send one datagram; None when it went, else why it could not (counted)."""
        transport = self._transport
        if transport is None:
            return "the endpoint is closed"
        why = self._sendable.get(addr, "?")
        if why == "?":
            why = self._check_destination(addr)
        if why is None:
            try:
                transport.sendto(data, addr)
            except Exception as exc:  # uvloop raises here what asyncio hands to error_received
                why = f"{type(exc).__name__}: {exc}"
            else:
                self.stats.sent += 1
                return None
        self.stats.send_errors += 1
        return why

    def _check_destination(self, addr: Address) -> str | None:
        try:
            check_peer_addr(*addr)
        except (TypeError, ValueError) as exc:
            why: str | None = str(exc)
        else:
            v6 = ":" in addr[0]
            why = None if v6 == self._family_v6 else "the address is not of this socket's family"
        if len(self._sendable) >= self.config.max_peers:
            self._sendable.clear()
        self._sendable[addr] = why
        return why

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._transport is None

    def close(self) -> None:
        """Stop serving; pending calls fail, running handlers are cancelled."""
        transport, self._transport = self._transport, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
        for tx in list(self._pending.values()):
            if not tx.future.done():
                tx.future.set_exception(DhtError("endpoint closed"))
        for task in list(self._tasks):
            task.cancel()
        if transport is not None:
            transport.close()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
