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
import os
from typing import Any, Literal

from .. import wire
from ..errors import DhtError
from ..net import Address, format_addr, resolve
from . import codec
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
    loop = asyncio.get_running_loop()
    kad_id = os.urandom(codec.ID_BYTES)
    rid = int.from_bytes(os.urandom(4), "big")
    heard: dict[str, float] = {}
    changed = asyncio.Event()

    class _Probe(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, src: tuple[Any, ...]) -> None:
            try:
                if codec.is_kad(data):
                    msg = codec.decode(data)
                    if type(msg) is codec.KadReply and msg.msg_id == kad_id:
                        heard.setdefault("kademlia", loop.time())
                elif getattr(wire.decode(data), "rid", None) == rid:
                    heard.setdefault("udpdht", loop.time())  # a reply, an error, a retry...
            except DhtError:
                return
            changed.set()

        def error_received(self, exc: Exception) -> None:
            heard.setdefault("closed", loop.time())
            changed.set()

    try:
        transport, _ = await loop.create_datagram_endpoint(_Probe, remote_addr=addr)
    except OSError:
        return None
    start = loop.time()
    try:
        transport.sendto(codec.encode_request(kad_id, "ping", [os.urandom(codec.ID_BYTES)]))
        transport.sendto(wire.encode_request(rid, "ping", {}))
        while len(heard) < 2 and "closed" not in heard:
            left = start + wait - loop.time()
            if heard:  # one answered: the other has a little longer, then it is not coming
                first = min(heard.values())
                left = min(left, first + max(OTHER_GRACE, 5 * (first - start)) - loop.time())
            if left <= 0:
                break
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), left)
            except TimeoutError:
                break
    except OSError:  # (uvloop raises a refusal from sendto)
        return None
    finally:
        transport.close()
    if "udpdht" in heard and "kademlia" in heard:
        return "both"
    if "udpdht" in heard:
        return "udpdht"
    if "kademlia" in heard:
        return "kademlia"
    return None


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
