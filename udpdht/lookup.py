"""Iterative lookups: ask ever-closer nodes until one knows the owner of a key.

The asking node keeps the trace (each hop: the peer and its round trip). A hop that does not
answer is skipped for the next-best candidate; the routing decision at each node is the pure
:func:`~udpdht.routing.next_hop`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, NamedTuple

from . import ids
from .errors import RemoteError, RpcTimeout, Unavailable
from .net import Address
from .routing import Peer, peers_from_wire

if TYPE_CHECKING:
    from .node import Node

#: Failures that mean "that peer is no use right now": no answer, an error, or nonsense.
PEER_FAILURES = (RpcTimeout, RemoteError, ValueError, KeyError, TypeError, AttributeError)


class Hop(NamedTuple):
    peer: Peer
    rtt_s: float


class Lookup(NamedTuple):
    """Where a key lives: its owner, the hops taken to learn it, and the owner's successors."""

    owner: Peer
    hops: list[Hop]
    successors: list[Peer]


class LookupFailed(Unavailable):
    """Every candidate on the way to a key failed."""


async def iterative_lookup(node: Node, key: int, *, start: Address | None = None) -> Lookup:
    """Iterative lookup: ask ever-closer nodes until one knows the owner of ``key``.

    Each hop returns a few candidates; one that does not answer is dropped and the next-best
    asked. ``start`` begins at a node given by address (joining: we know no one yet).
    """
    loop = asyncio.get_running_loop()
    tried: dict[Address, bool] = {node.addr: True}
    if start is None:
        done, nodes = node.local_find(key)
        if done:
            return Lookup(nodes[0], [], nodes[1:])
        queue = nodes
    else:
        queue = [Peer(-1, start)]  # id unknown until it answers
    hops: list[Hop] = []
    failures: list[str] = []
    for _ in range(node.config.max_hops):
        peer = next((p for p in queue if p.addr not in tried), None)
        if peer is None and start is None and not hops:
            # Every first candidate failed; they are gone from our tables now, so our
            # tables may offer others (kept alive, the successors at worst).
            done, nodes = node.local_find(key)
            if done:
                return Lookup(nodes[0], hops, nodes[1:])
            queue = nodes
            peer = next((p for p in queue if p.addr not in tried), None)
        if peer is None:
            break
        tried[peer.addr] = True
        # Few tries when another candidate can take over; the full count for the last one.
        fallback = any(p.addr not in tried for p in queue)
        tries = node.config.lookup_tries if fallback else 0
        sent = loop.time()
        try:
            reply = await node._call(peer, "find", {"key": ids.to_bytes(key)}, tries=tries)
            done, nodes = bool(reply["done"]), peers_from_wire(reply["nodes"])
            if reply.get("id") is not None and peer.id == -1:
                peer = Peer(ids.from_bytes(reply["id"]), peer.addr)
        except PEER_FAILURES as exc:
            failures.append(f"{peer}: {type(exc).__name__}")
            if peer.id == -1:
                continue
            if tries:
                # A quick try failed: maybe dead, maybe just slow. Skip it here and drop the
                # finger, but leave the leafset to stabilize, which asks with full tries.
                node.fingers.remove(peer.id)
            else:
                node._peer_failed(peer)
            continue
        hops.append(Hop(peer, loop.time() - sent))
        if done and nodes:
            return Lookup(nodes[0], hops, nodes[1:])
        fresh = [p for p in nodes if p.addr not in tried]
        queue = sorted(fresh + queue, key=lambda p: ids.distance(p.id, key))
    tried_text = "; ".join(failures[-4:]) or "no candidate"
    raise LookupFailed(f"no live route to {ids.short(key)} after {len(hops)} hops ({tried_text})")
