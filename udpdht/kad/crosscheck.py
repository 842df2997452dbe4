"""Which protocol answers at an address: udpdht's, kademlia's, both or neither.

A command sent in the wrong protocol meets silence, not an error: a kademlia node drops a
udpdht datagram ("received datagram too small"), a ``--no-kad`` udpdht node drops kademlia's.
:func:`speaks` sends one ping of each protocol from a socket of its own and says which came
back, so that the CLI and the shell can say "use kad://" (or "drop kad://") instead of "is a
node running there?". A udpdht node that answers kademlia answers both pings; a kademlia node
only its own; a udpdht node started with ``--no-kad`` only udpdht's.

:func:`wrong_protocol` is what the CLI runs beside a command, once the node has been silent
for a second: nothing is sent while the command is answered within that second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any, Literal

from .. import wire
from ..errors import DhtError
from ..net import Address, format_addr, resolve
from . import codec
from .identity import Identity, claim
from .target import KadAddr, kad_text

#: Seconds of silence before :func:`wrong_protocol` asks (a node of either kind answers a
#: ping in milliseconds).
CHECK_AFTER = 1.0
#: Seconds the pings are waited for.
CHECK_WAIT = 1.0
#: Once one ping is answered, how long the other still may take (at least).
OTHER_GRACE = 0.2

Verdict = Literal["udpdht", "kademlia", "both"]


class WrongProtocol(DhtError):
    """The address answers the other protocol: the message says which to use."""


async def speaks(addr: Address, *, wait: float = CHECK_WAIT) -> Verdict | None:
    """Which pings the node at ``addr`` answers within ``wait`` seconds; None: neither (or it
    cannot be reached)."""
    # A kademlia node adds whoever pings it to its routing table. A new id each time left a
    # new dead contact behind after each mistake, and lookups on that network waited for each
    # (a new user's trial: 406 ms instead of 9). The user's kademlia identity (identity.py),
    # from the port the kad:// commands use, leaves the one contact they keep anyway; a
    # command running beside one that holds it pings as a stranger, as before.
    identity = claim()
    try:
        return await _Pings(identity).run(addr, wait)
    finally:
        identity.release()  # (held while its port is in use)


class _Pings(asyncio.DatagramProtocol):
    """One ping of each protocol from one socket, and which answered."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.loop = asyncio.get_running_loop()
        self.kad_id = os.urandom(codec.ID_BYTES)
        self.rid = int.from_bytes(os.urandom(4), "big")
        self.heard: dict[str, float] = {}
        self.changed = asyncio.Event()
        self.closed = asyncio.Event()

    def datagram_received(self, data: bytes, src: tuple[Any, ...]) -> None:
        try:
            if codec.is_kad(data):
                msg = codec.decode(data)
                if type(msg) is codec.KadReply and msg.msg_id == self.kad_id:
                    self.heard.setdefault("kademlia", self.loop.time())
            elif getattr(wire.decode(data), "rid", None) == self.rid:
                self.heard.setdefault("udpdht", self.loop.time())  # a reply, an error, a retry
        except DhtError:
            return
        self.changed.set()

    def error_received(self, exc: Exception) -> None:
        self.heard.setdefault("closed", self.loop.time())
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    async def run(self, addr: Address, wait: float) -> Verdict | None:
        identity, heard, loop = self.identity, self.heard, self.loop
        sender = identity.id if identity.owner else os.urandom(codec.ID_BYTES)
        transport = await _probe_endpoint(loop, lambda: self, addr, identity)
        if transport is None:
            return None
        start = loop.time()
        try:
            transport.sendto(codec.encode_request(self.kad_id, "ping", [sender]))
            transport.sendto(wire.encode_request(self.rid, "ping", {}))
            while len(heard) < 2 and "closed" not in heard:
                left = start + wait - loop.time()
                if heard:  # one answered: the other has a little longer, then it is not coming
                    first = min(heard.values())
                    left = min(left, first + max(OTHER_GRACE, 5 * (first - start)) - loop.time())
                if left <= 0:
                    break
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), left)
                except TimeoutError:
                    break
        except OSError:  # (uvloop raises a refusal from sendto)
            return None
        finally:
            transport.close()
            # The port is the identity's: free it before its lock goes (the next command
            # binds it again at once).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), 1.0)
        if "udpdht" in heard and "kademlia" in heard:
            return "both"
        if "udpdht" in heard:
            return "udpdht"
        if "kademlia" in heard:
            return "kademlia"
        return None


async def _probe_endpoint(
    loop: asyncio.AbstractEventLoop,
    protocol: Callable[[], asyncio.DatagramProtocol],
    addr: Address,
    identity: Identity,
) -> asyncio.DatagramTransport | None:
    """A socket to ``addr``, from the identity's recorded port when it is ours and free (a
    fresh port is then recorded for it)."""
    if identity.owner and identity.port is not None:
        local = ("::" if ":" in addr[0] else "0.0.0.0", identity.port)
        with contextlib.suppress(OSError):
            transport, _ = await loop.create_datagram_endpoint(
                protocol, local_addr=local, remote_addr=addr
            )
            return transport
    try:
        transport, _ = await loop.create_datagram_endpoint(protocol, remote_addr=addr)
    except OSError:
        return None
    if identity.owner:
        identity.bound(transport.get_extra_info("sockname")[1])
    return transport


def wrong_words(addr: tuple[str, int], verdict: Verdict | None, *, shell: bool = False) -> str:
    """What to say when a command in the protocol of ``addr`` (a :class:`KadAddr`: kademlia's)
    met silence and ``verdict`` says what answers there; "" when that is no mistake of
    protocol."""
    shown = format_addr((addr[0], addr[1]))
    use = "'attach {}'" if shell else "--node {}"
    if isinstance(addr, KadAddr):
        if verdict != "udpdht":
            return ""
        return (
            f"{shown} is a udpdht node that does not answer kademlia (started with --no-kad?): "
            f"use {use.format(shown)}"
        )
    if verdict != "kademlia":
        return ""
    return (
        f"{shown} answers kademlia's protocol, not udpdht's: use "
        f"{use.format(kad_text((addr[0], addr[1])))}"
    )


async def wrong_protocol(
    addr: tuple[str, int], *, after: float = CHECK_AFTER, shell: bool = False
) -> WrongProtocol | None:
    """After ``after`` seconds, whether ``addr`` answers the other protocol only (see the
    module): the error to raise, or None."""
    if after > 0:
        await asyncio.sleep(after)
    try:
        host, port = await resolve((addr[0], addr[1]))
    except (OSError, ValueError):
        return None
    text = wrong_words(addr, await speaks((host, port)), shell=shell)
    return WrongProtocol(text) if text else None
