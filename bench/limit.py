"""The limit for bench/ops.py: a set or a get that is one datagram each way, and nothing else.

``LimitServer`` has the Server API that bench/ops.py drives (``listen``, ``bootstrap``, ``set``,
``get``, ``stop``) and does the least a DHT of N nodes in one process could: every server knows
every other from a directory shared in memory (global knowledge, no routing); a key's one and
only holder is ``sha1(key) mod N``; ``set`` sends it the value, ``get`` asks it, each one
request and one reply on the udpdht codec (:mod:`udpdht.wire`), as ``bench/rpc.py``'s echo does.
No replicas, versions, retries, timeouts, rate limits, checks or maintenance; a key whose
holder is the asking server itself is read from its own dict.

No real DHT can do less per operation; what it costs beside kademlia bounds the ratio any
design with a round trip per operation could reach on this machine.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, cast

from udpdht import wire
from udpdht.errors import DhtError
from udpdht.net import Address, fit_receive_size


class LimitServer(asyncio.DatagramProtocol):
    """One server of the limit (see the module's doc); ``directory`` is shared by all."""

    def __init__(self, directory: list[Address]) -> None:
        self.directory = directory
        self.data: dict[bytes, Any] = {}
        self.port = 0
        self._addr: Address | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_rid = 1 << 63  # ids encode to 9 bytes, as RpcEndpoint's 64-bit ones

    # --- the Server API that bench/ops.py uses -----------------------------------------------

    async def listen(self, port: int, interface: str = "127.0.0.1") -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(interface, port))
        assert self._transport is not None
        self.port = int(self._transport.get_extra_info("sockname")[1])
        self._addr = (interface, self.port)
        self.directory.append(self._addr)

    async def bootstrap(self, addrs: list[Address]) -> list[Address]:
        return list(addrs)  # nothing to learn: the directory is global knowledge

    async def set(self, key: object, value: Any) -> bool:
        dkey = _digest(key)
        return bool(await self._call(dkey, "store", {"k": dkey, "v": value}))

    async def get(self, key: object) -> Any:
        dkey = _digest(key)
        return await self._call(dkey, "load", {"k": dkey})

    def stop(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._transport is not None:
            self._transport.close()

    # --- the one round trip ------------------------------------------------------------------

    async def _call(self, dkey: bytes, method: str, args: dict[str, Any]) -> Any:
        holder = self.directory[int.from_bytes(dkey, "big") % len(self.directory)]
        if holder == self._addr:
            return self._serve(method, args)
        assert self._transport is not None
        rid = self._next_rid
        self._next_rid += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self._transport.sendto(wire.encode_request(rid, method, args), holder)
        return await future

    def _serve(self, method: str, args: dict[str, Any]) -> Any:
        if method == "store":
            self.data[args["k"]] = args["v"]
            return True
        return self.data.get(args["k"])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        fit_receive_size(transport)  # as udpdht's endpoints: the limit pays no cost they avoid

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            msg = wire.decode(data)
        except DhtError:
            return
        if type(msg) is wire.Request and self._transport is not None:
            reply = wire.encode_reply(msg.rid, self._serve(msg.method, msg.args))
            self._transport.sendto(reply, addr)
        elif type(msg) is wire.Reply:
            future = self._pending.pop(msg.rid, None)
            if future is not None and not future.done():
                future.set_result(msg.result)


def _digest(key: object) -> bytes:
    """SHA-1 of the key as kademlia's and udpdht's Servers take it (bytes as they are)."""
    raw = key if isinstance(key, bytes) else str(key).encode()
    return hashlib.sha1(raw).digest()
