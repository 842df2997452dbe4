"""Iterative lookups: ask ever-closer nodes until one knows the owner of a key.

The asking node keeps the trace (each hop: the peer and its round trip). A hop that does not
answer is skipped for the next-best candidate; the routing decision at each node is the pure
:func:`~udpdht.routing.next_hop`.

An answer "done: the owner is O" is a claim, and a liar can make it about any key. It is taken
only when it is consistent with everything this lookup knows (:func:`plausible_owner`): the key
lies between the answering node and O, and no node we know of lies between the key and O
(such a node would own the key instead). With ``confirm`` the owner must also say so itself:
it is asked in turn, and the answer that ends the lookup is O's own, with O's own successors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container, Iterable
from typing import TYPE_CHECKING, NamedTuple

from . import ids
from .errors import RemoteError, RpcTimeout, Unavailable
from .net import Address
from .routing import Peer

if TYPE_CHECKING:
    from .node import Node

#: An answer that makes no sense (a malformed reply, a wrong id): its sender is no peer of ours.
MALFORMED = (ValueError, KeyError, TypeError, AttributeError)
#: Failures that mean "that peer is no use right now": no answer, an error, or nonsense.
PEER_FAILURES = (RpcTimeout, RemoteError, *MALFORMED)


class Hop(NamedTuple):
    peer: Peer
    rtt_s: float


class Lookup(NamedTuple):
    """Where a key lives: its owner, the hops taken to learn it, and the owner's successors."""

    owner: Peer
    hops: list[Hop]
    successors: list[Peer]


class LookupFailed(Unavailable):
    """Every candidate on the way to a key failed. ``cause``: when the lookup began at an
    address (a join) and that node failed before any hop, its error (RpcTimeout...), so that
    the user learns that the bootstrap is silent rather than that no route was found."""

    hops: int = 0
    cause: BaseException | None = None


def _not_of_our_ring(ring: str) -> str:
    """Why a node whose id does not match its address is not taken (a bootstrap, say)."""
    if ring:
        return (
            f"its id is not that of its address in the ring {ring!r}: a node of a ring with "
            "another name (--ring), one that advertises another address than this one (its "
            "--advertise), or not a udpdht node"
        )
    # (A seed left advertising the example's address was the likeliest cause in an
    # operator's trial, and the message did not name it.)
    return (
        "its id is not SHA-1 of its address: a node that advertises another address than "
        "this one (its --advertise), of a ring with a name (--ring NAME), or of one whose "
        "nodes chose their ids"
    )


def plausible_owner(key: int, answerer: Peer, owner: Peer, known: Iterable[Peer]) -> Peer | None:
    """Check a claim by ``answerer`` that ``owner`` owns ``key``.

    Returns None when the claim is consistent, else a known node that contradicts it: a node
    in ``[key, owner)`` (it would own the key). An honest answer always has the key in
    ``(answerer, owner]`` (the answerer's successor, or a node of its leafset past the key, or
    itself); a claim that breaks this gets ``owner`` itself back, to be asked directly.
    """
    if owner.id != answerer.id and not ids.in_interval(
        key, answerer.id, owner.id, right_open=False
    ):
        return owner
    span = ids.distance(key, owner.id)
    closer = [p for p in known if ids.distance(key, p.id) < span]
    return min(closer, key=lambda p: ids.distance(key, p.id), default=None)


async def iterative_lookup(
    node: Node,
    key: int,
    *,
    start: Address | None = None,
    confirm: bool = True,
    via: Peer | None = None,
    strict: bool = False,
    near: Container[int] = (),
) -> Lookup:
    """Iterative lookup: ask ever-closer nodes until one knows the owner of ``key``.

    Each hop returns a few candidates; one that does not answer is dropped and the next-best
    asked. ``start`` begins at a node given by address (joining: we know no one yet).
    ``confirm``: the owner must confirm its ownership itself (one more call unless the last
    hop was the owner). ``via``: a node of our tables to ask first, before those our tables
    route to (a refresh of a finger asks the finger itself, which names a node that joined
    just before it from its own leafset: one hop instead of a lookup's several); an answer
    that does not end the lookup is one more source of candidates. ``strict``: every node
    asked (ourselves included) answers "done" only from its successor and predecessor
    pointers, not from its lists (routing.next_hop). ``near``: ids of our nearest neighbours
    (a loop check's, from ``start``: Maintenance._near), whose own lists name the key's owner:
    a hop past the first that leads to one of them ends there with our own tables' answer,
    which theirs would repeat, unless a node heard of on the way contradicts it (then the
    lookup goes on, and asks).
    """
    loop = asyncio.get_running_loop()
    tried: dict[Address, bool] = {node.addr: True}
    answered: set[Address] = set()  # the nodes that answered this lookup "done"
    known: dict[int, Peer] = {}  # every node this lookup heard of: the claims' touchstone
    ask: dict[str, object] = {"key": ids.to_bytes(key)}
    if strict:
        ask["strict"] = True
    if start is None:
        done, nodes = node.local_find(key, strict=strict)
        if done:
            return Lookup(nodes[0], [], nodes[1:])  # our own tables: no claim to check
        queue = nodes
        for p in [node.peer, *node.leafset.peers(), *node.fingers.distinct()]:
            known[p.id] = p
    else:
        queue = [Peer(-1, start)]  # id unknown until it answers; we are not in the ring yet
    # nodes to ask before the queue: owners to confirm, contradictions (and ``via``)
    first: list[Peer] = [via] if via is not None and start is None else []
    claim: Lookup | None = None  # the last claim not (yet) confirmed: better than nothing
    hops: list[Hop] = []
    failures: list[str] = []
    start_error: BaseException | None = None  # the start's own failure, if it failed first
    for _ in range(node.config.max_hops):
        peer = next((p for p in first if p.addr not in tried), None)
        if peer is None:
            peer = next((p for p in queue if p.addr not in tried), None)
        if peer is None and start is None and not hops:
            # Every first candidate failed; they are gone from our tables now, so our
            # tables may offer others (kept alive, the successors at worst).
            done, nodes = node.local_find(key, strict=strict)
            if done:
                return Lookup(nodes[0], hops, nodes[1:])
            queue = nodes
            peer = next((p for p in queue if p.addr not in tried), None)
        if peer is None:
            break
        if hops and peer.id in near:
            # Unless a node heard of on the way contradicts our own answer (one named as a
            # hop's nearest past the key, between us and our successor: a node of the other
            # loop, which the lookup goes on to ask, as our neighbour's answer would lead it).
            done, nodes = node.local_find(key, strict=strict)
            if done and plausible_owner(key, node.peer, nodes[0], known.values()) is None:
                return Lookup(nodes[0], hops, nodes[1:])
        tried[peer.addr] = True
        # Few tries when another candidate can take over; the full count for the last one.
        fallback = any(p.addr not in tried for p in [*first, *queue])
        tries = node.config.lookup_tries if fallback else 0
        sent = loop.time()
        try:
            reply = await node.call_peer(peer, "find", ask, tries=tries, pad=True)
            done, nodes = bool(reply["done"]), node.parse_peers(reply["nodes"])
            their_id = ids.from_bytes(reply["id"])
            if peer.id == -1:  # (else call_peer checked that it named the node called)
                peer = Peer(their_id, peer.addr)
                if node.config.verify_ids and not peer.id_matches(node.config.ring):
                    raise ValueError(_not_of_our_ring(node.config.ring))
        except PEER_FAILURES as exc:
            failures.append(f"{peer}: {type(exc).__name__}")
            if start is not None and peer.addr == start and not hops:
                start_error = exc
            known.pop(peer.id, None)  # not a touchstone any more
            if peer.id == -1:
                continue
            if tries and not isinstance(exc, MALFORMED):
                # A quick try failed: maybe dead, maybe just slow. Skip it here and drop the
                # finger, but leave the leafset to stabilize, which asks with full tries.
                node.fingers.remove(peer.id)
            else:
                node.peer_failed(peer, exc)
            continue
        now = loop.time()
        hops.append(Hop(peer, now - sent))
        if done:  # (one that answered "not done" said that it does not own the key)
            answered.add(peer.addr)
        known[peer.id] = peer
        for p in nodes:
            known.setdefault(p.id, p)
        node.heard_of(nodes, now)
        if done and nodes:
            owner = nodes[0]
            against = plausible_owner(key, peer, owner, known.values())
            if against is None and (not confirm or owner.id == peer.id or owner.addr in answered):
                return Lookup(owner, hops, nodes[1:])
            # Ask the owner itself (to confirm), or the node that contradicts the claim first.
            first = [p for p in (against, owner) if p is not None]
            claim = Lookup(owner, list(hops), nodes[1:])
        fresh = [p for p in nodes if p.addr not in tried]
        queue = sorted(fresh + queue, key=lambda p: ids.distance(p.id, key))
    if claim is not None:
        # Neither the owner nor whoever could contradict it answered: our knowledge may be
        # stale (nodes joining or gone). The claim is still the best guess; the owner checks
        # its own responsibility when it is sent a read or a write.
        return claim
    tried_text = "; ".join(failures[-4:]) or "no candidate"
    failed = LookupFailed(
        f"no live route to {ids.short(key)} after {len(hops)} hops ({tried_text})"
    )
    failed.hops = len(hops)
    failed.cause = start_error if not hops else None
    raise failed
