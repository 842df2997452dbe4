"""Client: attach to one node over UDP and use it. The shell and the CLI use only this."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import time
from types import TracebackType
from typing import Any

from . import ids, wire
from .admin import COOKIE_BYTES, parse_cookie, read_cookie, sign
from .errors import UNREADABLE, BadAnswer, DhtError, RemoteError, RpcTimeout, Unauthorized
from .limits import MAX_VALUE, key_bytes
from .lookup import Hop, Lookup
from .net import (
    Address,
    Network,
    UdpNetwork,
    check_peer_addr,
    format_addr,
    parse_addr,
    resolve,
    unless_refused,
)
from .routing import Peer, peers_from_wire
from .rpc import RpcConfig, RpcEndpoint
from .shortfall import Shortfall
from .text import printable
from .values import StoredValue

#: The latest time a node's answer may name (seconds since the epoch): the year 9999, the last a
#: date can show.
MAX_TIME = 253_402_300_799.0


def _answer(reply: Any, method: str) -> dict[str, Any]:
    """A node's answer to ``method``, which is a map; else BadAnswer."""
    if not isinstance(reply, dict):
        raise BadAnswer(f"the node answered {method} with {type(reply).__name__}, not a map")
    return reply


def _version(reply: dict[str, Any], method: str) -> tuple[int, bytes]:
    """A write's or a record's version in a node's answer: its stamp (milliseconds since the
    epoch) and writer (a node id); else BadAnswer. (A writer of an int N was bytes(N): a
    stranger's answer of 30 bytes made the client allocate gigabytes.)"""
    version = reply.get("version")
    if not (
        isinstance(version, list)
        and len(version) == 2
        and type(version[0]) is int
        and 0 <= version[0] <= MAX_TIME * 1000
        and type(version[1]) is bytes
        and len(version[1]) == ids.ID_BYTES
    ):
        raise BadAnswer(f"the node's answer to {method} has no valid version")
    return version[0], version[1]


MAX_LISTED = 1024  # peers a status may list in one of its lists


def checked_status(reply: Any) -> dict[str, Any]:
    """A node's status answer, once the fields everyone reads are there and of their types:
    ``id`` and ``addr`` (text), ``predecessor`` (a peer or None), ``successors``,
    ``predecessors`` and ``fingers`` (lists of peers), ``store`` (a map of ints); a peer
    being a map with ``id`` and ``addr`` as text. Else BadAnswer."""
    st = _answer(reply, "status")

    def text(x: Any) -> bool:
        return type(x) is str and 0 < len(x) <= 100

    def peer(p: Any) -> bool:
        return isinstance(p, dict) and text(p.get("id")) and text(p.get("addr"))

    store = st.get("store")
    ok = (
        text(st.get("id"))
        and text(st.get("addr"))
        and (st.get("predecessor") is None or peer(st.get("predecessor")))
        and all(
            isinstance(st.get(name), list)
            and len(st[name]) <= MAX_LISTED
            and all(peer(p) for p in st[name])
            for name in ("successors", "predecessors", "fingers")
        )
        and isinstance(store, dict)
        and all(type(store.get(name)) is int for name in ("primary", "replica"))
    )
    if not ok:
        raise BadAnswer("the node's status lacks a field, or has one of the wrong type")
    _printable(st)
    return st


def _printable(data: dict[str, Any]) -> None:
    """Show the control characters of every string in ``data`` (a status) as \\xNN
    (text.printable): what the CLI and the shell print of it cannot rewrite the terminal (a
    helper's audit: an address of ESC sequences cleared the screen and set the title)."""
    stack: list[Any] = [data]
    for _ in range(100_000):  # bounded: a status is a few hundred values
        if not stack:
            return
        item = stack.pop()
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for k, v in list(pairs):
            if type(v) is str:
                item[k] = printable(v)
            elif isinstance(v, (dict, list)):
                stack.append(v)
    raise BadAnswer("the node's status is too large")


def _after(key: bytes, cursor: bytes | None) -> bool:
    """Whether ``key`` comes after ``cursor`` in a scan's order: ring order of the key ids,
    then the keys' bytes (replication's _cursor)."""
    return cursor is None or (ids.hash_key(key), key) > (ids.hash_key(cursor), cursor)


def _value(reply: dict[str, Any]) -> Any:
    """The value in a node's answer to get, decoded; BadAnswer if it is not one."""
    data = reply.get("value")
    if type(data) is not bytes:
        raise BadAnswer("the node's answer to get has no value")
    try:
        value = wire.unpack_value(data)
    except DhtError as exc:
        raise BadAnswer(
            f"the node's answer to get has a value that does not decode: {exc}"
        ) from None
    if wire.too_deep(value):  # (stored by another client: shown, it fails every reader)
        raise BadAnswer(
            f"the value nests lists and maps over {wire.MAX_NESTING} levels deep: this client "
            "does not show it"
        )
    return value


def _addr(addr: Address | str) -> Address:
    return parse_addr(addr) if isinstance(addr, str) else addr


def _cookie(cookie: bytes | str | os.PathLike[str] | None) -> bytes | None:
    """A node's cookie as the 32 bytes that sign: from the bytes, the cookie file's contents
    (64 hex digits: read as bytes, they were taken for the secret, and the node answered "the
    signature does not match"), or a path to the file or the data dir that holds it."""
    if cookie is None:
        return None
    if not isinstance(cookie, bytes):
        return read_cookie(cookie)
    if len(cookie) == COOKIE_BYTES:
        return cookie
    raw = parse_cookie(cookie)
    if raw is None:
        raise ValueError(
            f"a cookie is {COOKIE_BYTES} bytes, or the contents of a cookie file "
            f"({2 * COOKIE_BYTES} hex digits), or its path: got {len(cookie)} bytes"
        )
    return raw


def _retrieved(done: asyncio.Future[Any]) -> None:
    """(A future whose every waiter may be gone: its exception is taken, not left to be
    reported as never retrieved.)"""
    if not done.cancelled():
        done.exception()


#: A client's calls: more tries than a node's, and a node that answers a retry "working" (it
#: is still running the request, PROTOCOL.md §6) is waited for, up to 30 s. A client serves
#: nothing: what is not an answer to one of its calls is dropped undecoded (answers_only).
CLIENT_RPC = RpcConfig(tries=6, max_working=30.0, answers_only=True)


class Client:
    """``async with Client(("127.0.0.1", 7000)) as c: await c.status()``."""

    def __init__(
        self,
        addr: Address | str,
        *,
        cookie: bytes | str | os.PathLike[str] | None = None,
        network: Network | None = None,
        rpc_config: RpcConfig | None = None,
        rng: random.Random | None = None,
        probe_every_call: bool = False,
    ) -> None:
        """``addr``: the node, ``(host, port)`` or ``"HOST:PORT"`` (ValueError if it is neither).

        ``cookie``: the node's admin cookie, for ``join``, ``leave`` and ``shutdown``: the path
        of its cookie file or of its data dir (a ``str`` or a path), the file's contents, or
        the 32 bytes themselves (``admin.read_cookie``). ValueError if it is none of them.

        ``probe_every_call``: when a call finds no answer, ask the node's host whether its
        port is closed on every call, not only until the node first answered (a long-lived
        client, such as the shell: a node killed under it is said to be gone in half a second,
        not after ~6 s of tries; each call then costs two tasks more)."""
        self.addr = _addr(addr)
        self.cookie = _cookie(cookie)
        self._network = network or UdpNetwork()
        # The attached node coordinates each request with other nodes (a lookup, the primary,
        # its replicas), which can take longer than one peer's round trip: wait longer than a
        # node waits for a peer before calling the node dead.
        self._rpc_config = rpc_config or CLIENT_RPC
        self._rng = rng
        self._endpoint: RpcEndpoint | None = None
        self._node_id: int | None = None  # the attached node's id, once learnt (admin signs it)
        self._last_working: tuple[Address, str, float] | None = None
        self._heard: set[Address] = set()  # addresses that answered: no refusal probe there
        self._probe_every_call = probe_every_call
        # Sockets on every interface, by IP version, for nodes the loopback socket cannot
        # reach (a ring walk from a node attached on the loopback); made when first needed,
        # once however many calls need one at a time (their binding, shared).
        self._on_loopback = False  # whether our own socket is on the loopback (open)
        self._wide: dict[int, asyncio.Future[RpcEndpoint]] = {}

    async def open(self) -> None:
        if isinstance(self._network, UdpNetwork):
            self.addr = await resolve(self.addr)
            ip = ipaddress.ip_address(self.addr[0])
            # A node on this machine's loopback is answered on the loopback only: the client's
            # socket is not open on every interface for nothing.
            if ip.version == 6:
                local_host = "::1" if ip.is_loopback else "::"
            else:
                local_host = "127.0.0.1" if ip.is_loopback else "0.0.0.0"
        else:
            local_host = self.addr[0]
        self._endpoint = await RpcEndpoint.bind(
            self._network, (local_host, 0), config=self._rpc_config, rng=self._rng
        )
        self._on_loopback = local_host in ("127.0.0.1", "::1")

    def busy(self, within: float = 3.0) -> bool:
        """Whether the attached node said, in the last ``within`` seconds, that it is still
        working on one of our requests (it is alive and slow, not gone: PROTOCOL.md §6)."""
        ep = self._endpoint
        seen = ep.last_working if ep is not None else self._last_working
        if seen is None or seen[0] != self.addr:
            return False
        return asyncio.get_running_loop().time() - seen[2] < within

    async def close(self) -> None:
        ep, self._endpoint = self._endpoint, None
        made, self._wide = list(self._wide.values()), {}
        endpoints = [] if ep is None else [ep]
        if ep is not None:
            self._last_working = ep.last_working  # busy() still answers after the close
        for binding in made:  # (one still binding closes itself: _bind_wide)
            if binding.done() and not binding.cancelled() and binding.exception() is None:
                endpoints.append(binding.result())
        for each in endpoints:  # all closed before any wait: a cancelled close leaves none
            each.close()
        await asyncio.gather(*(each.wait_closed() for each in endpoints))

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def endpoint(self) -> RpcEndpoint:
        if self._endpoint is None:
            raise RuntimeError("client is not open: use 'async with Client(...)'")
        return self._endpoint

    async def call(self, method: str, args: dict[str, Any] | None = None) -> Any:
        """A raw call to the attached node (for tools; prefer the named methods)."""
        return await self.call_at(self.addr, method, args)

    async def call_at(
        self, addr: Address, method: str, args: dict[str, Any] | None = None, **kw: Any
    ) -> Any:
        """``endpoint.call``, failing with Refused at once when the address's host says that
        nothing listens there (real sockets only)."""
        ep = self.endpoint
        if not isinstance(self._network, UdpNetwork):
            return await ep.call(addr, method, args, **kw)
        ep = await self._endpoint_for(addr, ep)
        if addr in self._heard and not self._probe_every_call:
            try:
                return await ep.call(addr, method, args, **kw)
            except RpcTimeout:  # it went silent: probe it again next time (a long shell)
                self._heard.discard(addr)
                raise
        try:
            result = await unless_refused(
                ep.call(addr, method, args, **kw), addr, method, wire.PING_PROBE
            )
        except RemoteError:
            self._heard.add(addr)
            raise
        self._heard.add(addr)
        return result

    async def _endpoint_for(self, addr: Address, ep: RpcEndpoint) -> RpcEndpoint:
        """``ep``, or a socket on every interface when ``ep`` is on the loopback and ``addr``
        is not: from the loopback, a ring walk through a node attached as 127.0.0.1 (the
        Docker image's default) found every other node silent (an operator's trial)."""
        if not self._on_loopback:
            return ep
        try:
            theirs = ipaddress.ip_address(addr[0])
        except ValueError:
            return ep
        if theirs.is_loopback:
            return ep
        binding = self._wide.get(theirs.version)
        if binding is None:
            binding = asyncio.ensure_future(self._bind_wide(theirs.version))
            binding.add_done_callback(_retrieved)
            self._wide[theirs.version] = binding
        try:
            return await asyncio.shield(binding)
        except OSError as exc:
            if self._wide.get(theirs.version) is binding:
                del self._wide[theirs.version]  # (tried again by the next call)
            raise DhtError(f"cannot open a socket to reach {format_addr(addr)}: {exc}") from None

    async def _bind_wide(self, version: int) -> RpcEndpoint:
        anywhere = "::" if version == 6 else "0.0.0.0"
        wide = await RpcEndpoint.bind(
            self._network, (anywhere, 0), config=self._rpc_config, rng=self._rng
        )
        if self._endpoint is None:  # closed while this bound: close() did not see it
            wide.close()
            await wide.wait_closed()
            raise DhtError("the client is closed")
        return wide

    async def ping(self, addr: Address | str | None = None) -> tuple[int, float]:
        """Ping the attached node (or ``addr``, ``(host, port)`` or ``"HOST:PORT"``); returns
        (node id, round-trip seconds)."""
        target = self.addr if addr is None else await resolve(_addr(addr))
        loop = asyncio.get_running_loop()
        start = loop.time()
        reply = await self.call_at(target, "ping")
        return ids.from_bytes(reply["id"]), loop.time() - start

    async def ping_info(self) -> dict[str, Any]:
        """Ping the attached node: ``{"id": hex, "addr": "H:P", "rtt_s": s, "isolated": bool,
        "started_s_ago": s}`` (``addr``: the address the node names itself by;
        ``started_s_ago``, whole seconds, when it is isolated because it is rejoining its ring
        right after its start, else None)."""
        start = time.perf_counter()  # uvloop's loop.time() counts whole milliseconds
        reply = await self.call_at(self.addr, "ping", {"addr": True})
        rtt = time.perf_counter() - start
        named = reply.get("addr")
        try:
            # (Checked: a stranger named itself '[::1::1::1]:x', or in ESC sequences.)
            addr = format_addr(check_peer_addr(named[0], named[1]))
        except (TypeError, ValueError, IndexError, KeyError):
            addr = format_addr(self.addr)
        return {
            "id": ids.to_hex(ids.from_bytes(reply["id"])),
            "addr": addr,
            "rtt_s": rtt,
            "isolated": bool(reply.get("isolated", False)),
            "started_s_ago": up if type(up := reply.get("up")) is int and up >= 0 else None,
        }

    async def status(self) -> dict[str, Any]:
        """The node's status (PROTOCOL.md section 8); BadAnswer when its fields that the
        shell, the CLI and the ring walk read are missing or of the wrong type."""
        return checked_status(await self.call("status"))

    async def lookup(self, key: str | bytes) -> Lookup:
        """The owner of ``key`` and the hops the attached node took to find it."""
        reply = _answer(await self.call("lookup", {"key": key}), "lookup")
        try:
            hops = [Hop(Peer.from_wire(peer), float(rtt)) for peer, rtt in reply["hops"]]
            owner, after = Peer.from_wire(reply["owner"]), peers_from_wire(reply["successors"])
        except ValueError as exc:  # (the others are unreadable answers to every caller)
            # (A ValueError reached the CLI as a usage error, exit 2; a maintainer's review.)
            raise BadAnswer(f"cannot read the node's answer (ValueError: {exc})") from None
        return Lookup(owner, hops, after)

    async def put(
        self, key: str | bytes, value: Any, *, ttl: float | None = None
    ) -> Shortfall | None:
        """Store ``value`` (any msgpack value) under ``key``, on r replicas before returning.

        ``ttl``: seconds until the value expires (None: never). Raises ValueTooLarge, before
        sending anything, for a value over 60,000 encoded bytes or a key over 1 KiB. Returns
        None when every replica took the value, else how many copies were made (Shortfall:
        a replica did not answer, or its store is full).
        """
        data = wire.pack_value(value, MAX_VALUE)
        args: dict[str, Any] = {"key": key_bytes(key), "value": data, "ttl": ttl}
        reply = _answer(await self.call("put", args), "put")
        _version(reply, "put")  # (the write's version: a node that did not write has none)
        return Shortfall.from_reply(reply)

    async def get(self, key: str | bytes) -> Any:
        """The value stored under ``key``; raises KeyNotFound when there is none."""
        reply = _answer(await self.call("get", {"key": key_bytes(key)}), "get")
        return _value(reply)

    async def get_record(self, key: str | bytes) -> StoredValue:
        """The value stored under ``key`` with its version, writer and expiry (``get --meta``);
        raises KeyNotFound when there is none."""
        reply = _answer(await self.call("get", {"key": key_bytes(key)}), "get")
        stamp, writer = _version(reply, "get")
        expires = reply.get("expires")
        if expires is not None and not (type(expires) in (int, float) and 0 <= expires <= MAX_TIME):
            raise BadAnswer(f"the node's answer to get has an expiry of {expires!r:.40}")
        return StoredValue(
            value=_value(reply),
            stamp=stamp,
            writer=writer.hex(),
            expires=None if expires is None else float(expires),
        )

    async def delete(self, key: str | bytes) -> bool:
        """Delete ``key``; returns whether it had a value."""
        existed, _ = await self.delete_checked(key)
        return existed

    async def delete_checked(self, key: str | bytes) -> tuple[bool, Shortfall | None]:
        """Delete ``key``; returns whether it had a value, and None when every replica took
        the deletion, else how many did (Shortfall, as ``put``: the others get it by repair)."""
        reply = _answer(await self.call("delete", {"key": key_bytes(key)}), "delete")
        existed = reply.get("existed")
        if type(existed) is not bool:
            raise BadAnswer("the node's answer to delete does not say whether the key existed")
        return existed, Shortfall.from_reply(reply)

    async def keys(
        self, limit: int = 100, *, after: str | bytes | None = None, max_pages: int = 10_000
    ) -> tuple[list[dict[str, Any]], bytes | None]:
        """The keys the attached node holds (as primary or replica), ``limit`` at most, in ring
        order of their ids from 0, after key ``after``; and the key to continue after (None: no
        more). Each entry: ``{"key": bytes, "key_id": hex, "bytes": value size, "expires_at":
        wall-clock seconds or None}``; deleted keys (tombstones) are left out.

        Uses the read-only ``store_scan`` method (PROTOCOL.md section 10.4), one page at a time.
        """
        zero = ids.to_bytes(0)
        cursor = None if after is None else key_bytes(after)
        out: list[dict[str, Any]] = []
        for _ in range(max_pages):
            args = {"lo": zero, "hi": zero, "after": cursor, "values": True}
            reply = _answer(await self.call("store_scan", args), "store_scan")
            items, nxt = reply.get("items"), reply.get("next")
            if not isinstance(items, list) or not (
                nxt is None or (type(nxt) is bytes and _after(nxt, cursor))
            ):
                # (A page that does not move the scan on: 10,000 of them, slowly, kept 'keys'
                # going for half an hour; a helper's audit.)
                raise BadAnswer("the node's page of keys does not move the scan on")
            for item in items:
                try:
                    key, value, _stamp, _writer, expires = item
                    size = None if value is None else len(value)
                    key_id = ids.to_hex(ids.hash_key(key))
                except (ValueError, *UNREADABLE):
                    raise BadAnswer(
                        "the node's page of keys holds an item that is not one"
                    ) from None
                if size is None:
                    continue
                if len(out) >= limit:  # one more is there: continue after the last one listed
                    return out, out[-1]["key"] if out else cursor
                out.append({"key": key, "key_id": key_id, "bytes": size, "expires_at": expires})
            if nxt is None:
                return out, None
            cursor = nxt
        return out, cursor

    # --- admin: needs the node's cookie -------------------------------------------------------

    async def _admin(self, method: str, args: dict[str, Any]) -> Any:
        if self.cookie is None:
            raise Unauthorized(
                f"{method.removeprefix('admin_')} needs the node's cookie "
                "(the file 'cookie' in its data dir: Client(addr, cookie=PATH))"
            )
        if self._node_id is None:  # a signature names the node it is for: learn its id
            self._node_id, _ = await self.ping()
        signed = sign(self.cookie, method, args, time.time(), ids.to_bytes(self._node_id))
        try:
            return await self.call(method, signed)
        except RemoteError as exc:  # "admin_join: ..." -> "join: ..."
            text = exc.message.removeprefix(f"{method}: ")
            raise type(exc)(f"{method.removeprefix('admin_')}: {text}", exc.code) from None

    async def join(self, addr: Address | str) -> Peer | None:
        """Make the attached node join the ring that ``addr`` (``(host, port)`` or
        ``"HOST:PORT"``) belongs to; its new successor."""
        target = await resolve(_addr(addr))
        reply = await self._admin("admin_join", {"addr": [target[0], target[1]]})
        succ = reply.get("successor")
        return Peer.from_wire(succ) if succ is not None else None

    async def leave(self) -> None:
        """Make the attached node leave gracefully (hand-off); its process then exits."""
        await self._admin("admin_leave", {})

    async def shutdown(self) -> None:
        """Stop the attached node at once, without hand-off."""
        await self._admin("admin_shutdown", {})

    # --- walking the ring ---------------------------------------------------------------------

    async def node_status(self, addr: Address, *, tries: int | None = None) -> dict[str, Any]:
        """The status of any node, through this client's socket (checked: checked_status).
        A node that keeps answering "working" is given WALK_PATIENCE seconds, not a client's
        30 (a walk of 64 such nodes took half an hour: a helper's audit)."""
        try:
            reply = await asyncio.wait_for(
                self.call_at(addr, "status", tries=tries), self.WALK_PATIENCE
            )
        except TimeoutError:
            raise RpcTimeout(addr, "status", tries or 0, self.WALK_PATIENCE) from None
        return checked_status(reply)

    WALK_PATIENCE = 3.0  # seconds a ring walk waits for one node's status, at most

    async def ring(self, limit: int = 64, *, tries: int = 2) -> list[dict[str, Any]]:
        """Status of each node round the ring from the attached one, following successors.

        The attached node is asked as every request of this client is (its tries; its
        failure raises, as ``status`` does; a malformed status of its raises BadAnswer). Any
        other node that does not answer within ``tries`` sends, or answers a malformed status
        (any node of the ring answers the walk: a stranger's must not end it), is listed as
        ``{"addr": ..., "error": ...}`` and the walk goes on from the previous node's next
        successor, so a ring under repair shows where it is broken.
        Stops when the walk comes back to a node already seen, or after ``limit`` entries.
        """
        first = await self.status()
        succs = _successors(first)
        out: list[dict[str, Any]] = [first]
        seen: set[str] = {first["id"]}
        dead: set[Address] = set()
        if not succs:
            return out
        addr, fallbacks = succs[0], succs[1:]
        while len(out) < limit:
            try:
                st = await self.node_status(addr, tries=tries)
                succs = _successors(st)
            except DhtError as exc:
                out.append({"addr": format_addr(addr), "error": str(exc)})
                dead.add(addr)
                fallbacks = [a for a in fallbacks if a not in dead]
                if not fallbacks:
                    break
                addr = fallbacks.pop(0)
                continue
            if st["id"] in seen:
                break
            seen.add(st["id"])
            out.append(st)
            succs = [a for a in succs if a not in dead]
            if not succs:
                break
            addr, fallbacks = succs[0], succs[1:]
        return out


def _successors(st: dict[str, Any]) -> list[Address]:
    """The addresses of the successors a checked status names (checked_status); BadAnswer for
    one that is not an address."""
    try:
        return [parse_addr(p["addr"]) for p in st["successors"]]
    except ValueError as exc:
        raise BadAnswer(f"the node's status names a successor at no address: {exc}") from None
