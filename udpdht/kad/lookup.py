"""Kademlia's iterative lookup and a client's routing table, with no sockets.

The lookup is the one of the Kademlia paper (Maymounkov and Mazières, 2002, §2.3) as the
`kademlia` package runs it: start from the k contacts nearest the target by XOR; each round ask
α of the k nearest not yet asked, in parallel; add what they return; when a round learns of
nothing nearer than the nearest seen before it, ask *all* of the k nearest not yet asked; stop
when the k nearest (those that did not fail) have all answered, or, for ``find_value``, when
one answers with the value. Unlike the package, every question is kept in a :class:`Trace`
(who, which round, what came back, how long it took), which is what ``lookup KEY`` shows.

:func:`iterative_lookup` takes the question as a function (``ask(contact) -> Answer``) so the
algorithm is tested without a network; :class:`udpdht.kad.client.KadClient` gives it the
real one.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..net import Address, format_addr
from . import codec

#: α: the questions a lookup round asks at once (kademlia's default).
ALPHA = 3
K = codec.K
ID_BITS = 8 * codec.ID_BYTES


@dataclass(frozen=True)
class Contact:
    """A kademlia node: its 20-byte id and its address."""

    id: bytes
    addr: Address

    @property
    def hex(self) -> str:
        return self.id.hex()

    def __str__(self) -> str:
        return f"{self.id.hex()[:8]} {format_addr(self.addr)}"

    def info(self) -> dict[str, Any]:
        return {"id": self.id.hex(), "addr": format_addr(self.addr)}


def bucket_of(own: bytes, other: bytes) -> int:
    """The bucket ``other`` falls in seen from ``own``: the length of their common prefix in
    bits (0: they differ in the first bit, the farthest half of the id space; 160: equal)."""
    return ID_BITS - codec.distance(own, other).bit_length()


# --- the answers and the trace -----------------------------------------------------------------

#: What a question returned: ``contacts``, ``value``, ``no answer`` (it timed out) or ``bad
#: answer`` (something that is neither a contact list nor {"value": v}).
Outcome = str


@dataclass(frozen=True)
class Answer:
    """One node's answer to find_node / find_value, as the lookup needs it."""

    outcome: Outcome
    contacts: tuple[Contact, ...] = ()
    value: Any = None
    rtt: float | None = None
    error: str | None = None  # why there was no (usable) answer


@dataclass(frozen=True)
class Query:
    """One question of a lookup: to whom, in which round, what came back and when."""

    peer: Contact
    round: int
    sent_at: float  # seconds after the lookup began
    answer: Answer
    new: int = 0  # contacts the lookup had not heard of before this answer
    nearer: bool = False  # whether this answer brought a contact nearer than any before

    def info(self) -> dict[str, Any]:
        a = self.answer
        out: dict[str, Any] = {
            **self.peer.info(),
            "round": self.round,
            "sent_at_s": round(self.sent_at, 6),
            "rtt_s": None if a.rtt is None else round(a.rtt, 6),
            "outcome": a.outcome,
        }
        if a.outcome == "contacts":
            out["contacts"] = [c.info() for c in a.contacts]
            out["new"] = self.new
        if a.error is not None:
            out["error"] = a.error
        return out


@dataclass
class Trace:
    """A whole lookup: the target, every question, and what it came to."""

    target: bytes
    method: str  # find_node or find_value
    queries: list[Query] = field(default_factory=list)
    nearest: list[Contact] = field(default_factory=list)  # answered, nearest first, at most k
    holders: list[Contact] = field(default_factory=list)  # answered with the value
    value: Any = None
    found: bool = False
    rounds: int = 0
    elapsed: float = 0.0
    stopped: str = ""  # why it stopped, in words

    @property
    def answered(self) -> int:
        return sum(q.answer.outcome in ("contacts", "value") for q in self.queries)

    @property
    def silent(self) -> list[Contact]:
        return [q.peer for q in self.queries if q.answer.outcome == "no answer"]

    def info(self) -> dict[str, Any]:
        return {
            "target": self.target.hex(),
            "method": self.method,
            "found": self.found,
            "rounds": self.rounds,
            "elapsed_s": round(self.elapsed, 6),
            "stopped": self.stopped,
            "queries": [q.info() for q in self.queries],
            "nearest": [c.info() for c in self.nearest],
            "holders": [c.info() for c in self.holders],
        }


Ask = Callable[[Contact], Awaitable[Answer]]


async def iterative_lookup(
    target: bytes,
    start: Iterable[Contact],
    ask: Ask,
    *,
    method: str = "find_node",
    own_id: bytes | None = None,
    k: int = K,
    alpha: int = ALPHA,
    stop_at_value: bool = True,
    clock: Callable[[], float] | None = None,
    max_rounds: int = 64,
) -> Trace:
    """Kademlia's iterative lookup of ``target`` from the ``start`` contacts (see the module's
    docstring). ``ask`` never raises: a silent node is an :class:`Answer` "no answer".

    ``stop_at_value`` False: a find_value lookup that goes on to the k nearest, noting every
    holder of the value on the way (``lookup KEY``), instead of stopping at the first one.
    """
    now = clock or asyncio.get_running_loop().time
    began = now()
    trace = Trace(target, method)
    known: dict[bytes, Contact] = {}
    addrs: set[Address] = set()  # each address asked once, whatever ids answers give it
    state: dict[bytes, str] = {}  # id -> asked, answered, failed

    def dist(c: Contact) -> int:
        return codec.distance(c.id, target)

    for c in start:
        if c.id != own_id and c.addr not in addrs:
            known.setdefault(c.id, c)
            addrs.add(c.addr)
    best: int | None = None  # the nearest distance seen before the round
    while True:
        shortlist = sorted((c for c in known.values() if state.get(c.id) != "failed"), key=dist)
        shortlist = shortlist[:k]
        if not shortlist:
            trace.stopped = "no contact to ask" if not known else "no node answered"
            break
        if all(state.get(c.id) == "answered" for c in shortlist):
            trace.stopped = f"the {len(shortlist)} nearest answered"
            break
        if trace.rounds >= max_rounds:
            trace.stopped = f"gave up after {max_rounds} rounds"
            break
        unasked = [c for c in shortlist if c.id not in state]
        nearest = dist(shortlist[0])
        improved = best is None or nearest < best
        best = nearest if best is None else min(best, nearest)
        batch = unasked[:alpha] if improved else unasked
        trace.rounds += 1
        sent = now() - began
        for c in batch:
            state[c.id] = "asked"
        answers = await asyncio.gather(*(ask(c) for c in batch))
        for peer, answer in zip(batch, answers, strict=True):
            new = 0
            nearer = False
            if answer.outcome == "no answer" or answer.outcome == "bad answer":
                state[peer.id] = "failed"
            else:
                state[peer.id] = "answered"
                if answer.outcome == "value":
                    trace.holders.append(peer)
                    if not trace.found:
                        trace.found, trace.value = True, answer.value
                for c in answer.contacts:
                    if c.id == own_id or c.id in known or c.addr in addrs:
                        continue
                    known[c.id] = c
                    addrs.add(c.addr)
                    new += 1
                    nearer = nearer or dist(c) < best
            trace.queries.append(Query(peer, trace.rounds, sent, answer, new, nearer))
        if trace.found and stop_at_value:
            trace.stopped = f"{trace.holders[0]} had the value"
            break
    answered = (c for c in known.values() if state.get(c.id) == "answered")
    trace.nearest = sorted(answered, key=dist)[:k]
    trace.elapsed = now() - began
    return trace


# --- the client's routing table ----------------------------------------------------------------


@dataclass
class Entry:
    contact: Contact
    rtt: float | None = None


class RoutingTable:
    """The contacts a client has heard from, in k-buckets by their common prefix with our id.

    A contact is added when it answers us or asks us something, moved to the end of its bucket
    each time it does, and dropped when it fails to answer. A full bucket (k contacts) drops
    its least recently seen contact for a new one: a client keeps no long-lived table, so it
    prefers what it heard last (a kademlia node pings the old one first instead).
    """

    def __init__(self, own_id: bytes, k: int = K) -> None:
        self.own_id = own_id
        self.k = k
        self.buckets: dict[int, OrderedDict[bytes, Entry]] = {}

    def __len__(self) -> int:
        return sum(len(b) for b in self.buckets.values())

    def __contains__(self, node_id: bytes) -> bool:
        return node_id in self.buckets.get(bucket_of(self.own_id, node_id), {})

    def seen(self, contact: Contact, rtt: float | None = None, *, evict: bool = True) -> None:
        """Note ``contact`` as heard from. A new one in a full bucket replaces the least
        recently seen contact, unless ``evict`` is False (a contact that only sent us a request
        under an id it chose: it may not push out contacts that answered us)."""
        if contact.id == self.own_id:
            return
        index = bucket_of(self.own_id, contact.id)
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = OrderedDict()
        elif contact.id not in bucket and len(bucket) >= self.k and not evict:
            return
        old = bucket.pop(contact.id, None)
        if old is None and len(bucket) >= self.k:
            bucket.popitem(last=False)
        entry = Entry(contact, rtt if rtt is not None else (old.rtt if old else None))
        bucket[contact.id] = entry

    def failed(self, node_id: bytes) -> None:
        index = bucket_of(self.own_id, node_id)
        bucket = self.buckets.get(index)
        if bucket is not None:
            bucket.pop(node_id, None)
            if not bucket:
                del self.buckets[index]

    def contacts(self) -> list[Contact]:
        return [e.contact for b in self.buckets.values() for e in b.values()]

    def nearest(
        self, target: bytes, count: int | None = None, exclude: Address | None = None
    ) -> list[Contact]:
        found = [c for c in self.contacts() if c.addr != exclude]
        found.sort(key=lambda c: codec.distance(c.id, target))
        return found[: count or self.k]

    def by_bucket(self) -> list[tuple[int, list[Entry]]]:
        """The buckets that hold contacts, nearest (longest common prefix) first."""
        return [(i, list(self.buckets[i].values())) for i in sorted(self.buckets, reverse=True)]
