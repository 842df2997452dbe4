"""An endpoint that speaks rpcudp (the `kademlia` package's transport): calls and answers.

It either owns a socket (:meth:`KadEndpoint.bind`, the shell attached to a kademlia network) or
is hosted by a udpdht node's socket, which hands it every datagram whose first byte says it is
rpcudp's (:meth:`KadEndpoint.host`, ``codec.is_kad``), so one port speaks both protocols.

Beyond rpcudp: a call is resent with the *same* message id on a doubling timeout until its
deadline (rpcudp sends once and waits 5 s), a reply counts only from the address called, and a
resent request is answered from a cache of recent replies instead of being run twice (while
the first run is still going, the resend is dropped; a cached reply goes out at most
``max_resends`` more times). Every reply passes :attr:`KadEndpoint.reply_gate` first, when one
is set: a node's guard against amplification (kad/service.py) holds large replies to addresses
that have not shown they receive.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from ..errors import DhtError, RpcTimeout, SendFailed
from ..net import Address, fit_receive_size, format_addr
from . import codec

log = logging.getLogger(__name__)

#: A handler gets the caller's address then the request's arguments; it returns the result, or
#: a coroutine of it. Raising :class:`Ignore` (or anything else) sends no reply, as rpcudp does
#: for what it cannot serve.
Handler = Callable[..., Any]
Send = Callable[[bytes, Address], "str | None"]


_REPLY = bytes([codec.REPLY])  # a reply's first byte


class Ignore(Exception):
    """Raised by a handler: send nothing back (the request was not acceptable)."""


@dataclass
class KadStats:
    received: int = 0
    sent: int = 0
    calls: int = 0
    resent: int = 0
    timeouts: int = 0
    answered: int = 0
    duplicates: int = 0
    resends_refused: int = 0  # a cached reply already sent max_resends more times
    dropped_malformed: int = 0
    unknown_method: int = 0
    refused: int = 0  # a handler raised: no reply
    busy: int = 0  # too many handlers running: dropped
    unexpected_replies: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class KadConfig:
    timeout: float = 5.0  # a call's whole deadline, as rpcudp's one wait
    rto: float = 0.5  # first resend after this, doubling
    tries: int = 4  # sends at most, the first included
    max_pending: int = 4096  # calls in flight
    max_running: int = 256  # async handlers running at once; requests past it are dropped
    reply_cache: int = 2048  # recent replies kept for resent requests
    reply_cache_bytes: int = 4 << 20  # ... and their bytes at most (a 60 KB value each: 70)
    reply_ttl: float = 30.0
    max_resends: int = 8  # times a cached reply is sent again (replayed requests cost little)


@dataclass
class _Call:
    addr: Address
    future: asyncio.Future[Any]
    sent_at: float = field(default_factory=time.monotonic)


class KadEndpoint:
    """Calls and answers rpcudp requests on one socket (its own, or a udpdht node's)."""

    def __init__(self, *, config: KadConfig | None = None) -> None:
        self.config = config or KadConfig()
        self.stats = KadStats()
        self._send: Send | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._handlers: dict[str, Handler] = {}
        self._pending: dict[bytes, _Call] = {}
        # (address, msg id) -> the reply sent (None while the handler still runs), when, and
        # how many times it was sent again
        self._recent: OrderedDict[tuple[Address, bytes], tuple[bytes | None, float, int]] = (
            OrderedDict()
        )
        self._recent_bytes = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.addr: Address | None = None
        #: Called with (address, method, args) for every well-formed request, before its
        #: handler: what a kademlia node does in ``welcome_if_new``.
        self.on_request: Callable[[Address, str, list[Any]], None] | None = None
        #: Called with (address, size of the request, reply datagram) before each reply goes
        #: out, a resent one included; False: not now (the gate sends it later with
        #: :meth:`transmit`, or drops it).
        self.reply_gate: Callable[[Address, int, bytes], bool] | None = None

    # --- wiring ---------------------------------------------------------------------------------

    def host(self, send: Send, addr: Address) -> None:
        """Use a host's socket: ``send(data, addr)`` sends (None when sent, else why not) and
        the host calls :meth:`feed` with each rpcudp datagram it receives."""
        self._send = send
        self.addr = addr

    async def bind(self, host: str, port: int = 0) -> Address:
        """Open a socket of its own (the shell's side); returns the bound address."""
        loop = asyncio.get_running_loop()
        endpoint = self

        class _Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
                endpoint.feed(data, (addr[0], addr[1]))

            def error_received(self, exc: Exception) -> None:  # ICMP: the call times out
                log.debug("socket error: %s", exc)

        transport, _ = await loop.create_datagram_endpoint(_Protocol, local_addr=(host, port))
        fit_receive_size(transport)
        self._transport = transport
        sock = transport.get_extra_info("sockname")
        self.addr = (sock[0], sock[1])
        self._send = self._send_own
        return self.addr

    def _send_own(self, data: bytes, addr: Address) -> str | None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return "the endpoint is closed"
        try:
            transport.sendto(data, addr)
        except Exception as exc:  # uvloop raises here what asyncio hands to error_received
            return f"{type(exc).__name__}: {exc}"
        return None

    def serve(self, method: str, handler: Handler) -> None:
        self._handlers[method] = handler

    def close(self) -> None:
        for call in self._pending.values():
            if not call.future.done():
                call.future.set_exception(DhtError("endpoint closed"))
        self._pending.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._send = None

    # --- receiving ------------------------------------------------------------------------------

    def feed(self, data: bytes, addr: Address) -> None:
        """One datagram from ``addr`` that :func:`codec.is_kad` accepted."""
        if data[:1] == _REPLY:
            # Told by its message id before it is decoded: a reply to no call of ours (or
            # from another address than the one called) is dropped undecoded. A request's body
            # is 8 KB at most (the codec says so first); a reply's can be 64 KB of empty maps.
            call = self._pending.get(data[1 : codec.HEADER])
            if call is None or call.addr != addr or call.future.done():
                self.stats.unexpected_replies += 1
                return
        try:
            msg = codec.decode(data)
        except DhtError:
            self.stats.dropped_malformed += 1
            return
        self.stats.received += 1
        if type(msg) is codec.KadReply:
            call = self._pending[msg.msg_id]  # (there: told above)
            del self._pending[msg.msg_id]
            call.future.set_result(msg.result)
            return
        self._on_request(cast(codec.KadRequest, msg), addr, len(data))

    def _on_request(self, req: codec.KadRequest, addr: Address, size: int) -> None:
        key = (addr, req.msg_id)
        now = asyncio.get_running_loop().time()
        seen = self._recent.get(key)
        if seen is not None and now - seen[1] < self.config.reply_ttl:
            self.stats.duplicates += 1
            data, when, resends = seen
            if data is not None:
                if resends >= self.config.max_resends:
                    self.stats.resends_refused += 1
                    return
                self._recent[key] = (data, when, resends + 1)
                self._send_reply(data, addr, size)
            return
        handler = self._handlers.get(req.method)
        if handler is None:
            self.stats.unknown_method += 1
            return
        if self.on_request is not None:
            self.on_request(addr, req.method, req.args)
        try:
            result = handler(addr, *req.args)
        except Exception as exc:
            self._refused(req, addr, exc)
            return
        if inspect.isawaitable(result):
            if len(self._tasks) >= self.config.max_running:
                self.stats.busy += 1
                if inspect.iscoroutine(result):
                    result.close()
                return
            self._remember(key, None, now)
            task = asyncio.ensure_future(self._finish(req, addr, size, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._reply(req, addr, size, result)

    async def _finish(
        self, req: codec.KadRequest, addr: Address, size: int, result: Awaitable[Any]
    ) -> None:
        try:
            value = await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._forget((addr, req.msg_id))
            self._refused(req, addr, exc)
            return
        self._reply(req, addr, size, value)

    def _refused(self, req: codec.KadRequest, addr: Address, exc: Exception) -> None:
        self.stats.refused += 1
        log.debug("no answer to %s from %s: %s", req.method, format_addr(addr), exc)

    def _reply(self, req: codec.KadRequest, addr: Address, size: int, result: Any) -> None:
        try:
            data = codec.encode_reply(req.msg_id, result)
        except DhtError as exc:
            self._forget((addr, req.msg_id))
            self._refused(req, addr, exc)
            return
        self._remember((addr, req.msg_id), data, asyncio.get_running_loop().time())
        if self._send_reply(data, addr, size):
            self.stats.answered += 1

    def _send_reply(self, data: bytes, addr: Address, size: int) -> bool:
        gate = self.reply_gate
        if gate is not None and not gate(addr, size, data):
            return False
        return self._transmit(data, addr)

    def _remember(self, key: tuple[Address, bytes], data: bytes | None, now: float) -> None:
        """Keep ``data`` (None: still running) for resends of the request; the cache is bounded
        in entries and in bytes, oldest out first."""
        self._forget(key)
        recent = self._recent
        recent[key] = (data, now, 0)
        self._recent_bytes += len(data or b"")
        cfg = self.config
        while len(recent) > cfg.reply_cache or self._recent_bytes > cfg.reply_cache_bytes:
            _, (old, _, _) = recent.popitem(last=False)
            self._recent_bytes -= len(old or b"")

    def _forget(self, key: tuple[Address, bytes]) -> None:
        entry = self._recent.pop(key, None)
        if entry is not None:
            self._recent_bytes -= len(entry[0] or b"")

    def transmit(self, data: bytes, addr: Address) -> bool:
        """Send a datagram as it is (a reply a gate held); whether it went."""
        return self._transmit(data, addr)

    def _transmit(self, data: bytes, addr: Address) -> bool:
        send = self._send
        if send is None:
            return False
        why = send(data, addr)
        if why is None:
            self.stats.sent += 1
            return True
        log.debug("cannot send to %s: %s", format_addr(addr), why)
        return False

    # --- calling --------------------------------------------------------------------------------

    async def call(
        self,
        addr: Address,
        method: str,
        *args: Any,
        deadline: float | None = None,
        tries: int | None = None,
    ) -> Any:
        """Call ``method`` at ``addr`` and return the reply's result. Resends with the same
        message id on a doubling timeout, at most ``tries`` sends; RpcTimeout after
        ``deadline`` seconds (default ``config.timeout``), SendFailed at once for an address
        the socket cannot send to."""
        if self._send is None:
            raise DhtError("endpoint closed")
        if len(self._pending) >= self.config.max_pending:
            raise DhtError("too many kademlia calls in flight")
        cfg = self.config
        deadline = cfg.timeout if deadline is None else deadline
        sends = cfg.tries if tries is None else max(1, tries)
        msg_id = os.urandom(codec.ID_BYTES)
        data = codec.encode_request(msg_id, method, list(args))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending[msg_id] = _Call(addr, future)
        self.stats.calls += 1
        start = loop.time()
        wait = cfg.rto
        try:
            for attempt in range(sends):
                why = self._send(data, addr) if self._send is not None else "the endpoint is closed"
                if why is not None:
                    raise SendFailed(addr, method, why)
                self.stats.sent += 1
                if attempt:
                    self.stats.resent += 1
                left = deadline - (loop.time() - start)
                if left <= 0:
                    break
                step = left if attempt == sends - 1 else min(wait, left)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), step)
                except TimeoutError:
                    wait *= 2
            self.stats.timeouts += 1
            raise RpcTimeout(addr, method, sends, loop.time() - start)
        finally:
            self._pending.pop(msg_id, None)
            if not future.done():
                future.cancel()
