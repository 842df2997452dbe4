"""Routing state of one node: the leafset and the finger table. Pure: no I/O, no clock.

The leafset holds the node's L/2 nearest successors and L/2 nearest predecessors, nearest
first. Its successor half is the Chord successor list, and it is only ever *replaced* the way
Zave's corrected Chord prescribes (``[s] + s's list``, cut at ourselves), never blended with
guesses, because the ring's correctness rests on every list being ordered and made of nodes
that were alive when copied.

The finger table keeps ``finger[i] = successor(id + 2**i)`` for the 160 ``i``; most entries
repeat (all the small ``i`` land on the first successor), so it also keeps the distinct
entries, which is what routing and status use.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any, ClassVar, NamedTuple

from . import ids
from .errors import BadRequest
from .net import Address, AddrObj, check_peer_addr, format_addr


class Peer(NamedTuple):
    id: int
    addr: Address

    def to_wire(self) -> list[Any]:
        """``[id20, host, port]``, made once per peer (shared: never to be changed; every
        answer of the ring's maintenance names up to 16 peers)."""
        wire = _WIRED.get(self)
        if wire is None:
            if len(_WIRED) >= 16_384:  # bounded (the peers of our tables are far fewer)
                _WIRED.clear()
            wire = _WIRED[self] = [ids.to_bytes(self.id), self.addr[0], self.addr[1]]
        return wire

    @classmethod
    def from_wire(cls, item: Any) -> Peer:
        """Parse ``[id20, host, port]``; ValueError for anything else.

        The host must be a canonical unicast IP literal (net.check_peer_addr): whatever a peer
        names here may end up in ``sendto``.
        """
        if type(item) is not list or len(item) != 3:
            raise ValueError("a peer is [id, host, port]")
        raw, host, port = item
        if type(raw) is not bytes or len(raw) != ids.ID_BYTES:
            raise ValueError(f"a peer's id is {ids.ID_BYTES} bytes")
        if type(host) is str and type(port) is int:  # hashable: the same entries come back
            key = (raw, host, port)
            hit = _PARSED.get(key)
            if hit is None:
                peer = cls(ids.from_bytes(raw), check_peer_addr(host, port))
                if len(_PARSED) >= 16_384:  # bounded: strangers may send many
                    _PARSED.clear()
                hit = _PARSED[key] = (peer, peer.id_matches_addr)
            return hit[0]
        return cls(ids.from_bytes(raw), check_peer_addr(host, port))

    @property
    def id_matches_addr(self) -> bool:
        """Whether the id is SHA-1 of the address (the default id, which a receiver can check)
        in the ring with no name."""
        return self.id == ids.node_id_for(*self.addr)

    def id_matches(self, ring: str) -> bool:
        """Whether the id is the default id of its address in the ring named ``ring``."""
        return self.id == ids.node_id_for(self.addr[0], self.addr[1], ring)

    def info(self) -> dict[str, str]:
        """The peer as status JSON shows it."""
        return {"id": ids.to_hex(self.id), "addr": format_addr(self.addr)}

    def __str__(self) -> str:
        ident = ids.short(self.id) if self.id >= 0 else "?"  # -1: not known yet (a bootstrap)
        return f"{ident}@{format_addr(self.addr)}"


def arg_id(args: dict[str, Any], name: str) -> int:
    """A request's id argument ``name`` (20 bytes); BadRequest otherwise."""
    raw = args.get(name)
    if not isinstance(raw, bytes) or len(raw) != ids.ID_BYTES:
        raise BadRequest(f"argument {name!r} must be a {ids.ID_BYTES}-byte id")
    return ids.from_bytes(raw)


#: Checked peer entries by their wire form, each with whether its id is SHA-1 of its address.
_PARSED: dict[tuple[bytes, str, int], tuple[Peer, bool]] = {}
#: Peers' wire forms (Peer.to_wire).
_WIRED: dict[Peer, list[Any]] = {}


def peers_from_wire(
    items: Any, limit: int = 64, *, verify_ids: bool = False, ring: str = ""
) -> list[Peer]:
    """Parse a peer list of at most ``limit`` entries; ValueError if it or any entry is malformed.

    With ``verify_ids``, entries whose id is not SHA-1 of their address (in the ring named
    ``ring``) are left out: the sender may have been fooled by a node at a chosen id, and the
    rest of its list is still good.
    """
    if type(items) is not list or len(items) > limit:
        raise ValueError(f"expected a list of at most {limit} peers")
    peers: list[Peer] = []
    for item in items:
        # An entry seen before (the usual case: the same neighbours come back every round) is
        # found with its id check done; anything else takes the full parse.
        hit = None
        if type(item) is list and len(item) == 3:
            raw, host, port = item
            if type(raw) is bytes and type(host) is str and type(port) is int:
                hit = _PARSED.get((raw, host, port))
        if hit is None:
            peer = Peer.from_wire(item)
            if not verify_ids or peer.id_matches(ring):
                peers.append(peer)
        elif not verify_ids or (hit[0].id_matches(ring) if ring else hit[1]):
            peers.append(hit[0])
    return peers


def ordered_run(own: int, peers: Iterable[Peer], limit: int, *, clockwise: bool) -> list[Peer]:
    """Take ``peers`` in the order given while each lies strictly farther from ``own`` than the
    one before (clockwise, or counter-clockwise), skipping duplicates and ``own``; stop at the
    first that does not, and after ``limit``.

    This is how a copied successor list is cut: in a ring smaller than the list, the list wraps
    round past us, and what follows ourselves are nodes already listed.
    """
    out: list[Peer] = []
    if limit <= 0:
        return out
    last = 0
    for peer in peers:
        d = ids.distance(own, peer.id) if clockwise else ids.distance(peer.id, own)
        if d == 0 or d <= last:
            if d == 0 or any(p.id == peer.id for p in out):
                continue  # ourselves, or a duplicate: skip, the order may still go on
            break
        out.append(peer)
        last = d
        if len(out) == limit:
            break
    return out


class LeafSet:
    """L/2 successors and L/2 predecessors of ``own``, nearest first."""

    def __init__(self, own: Peer, size: int = 16) -> None:
        if size < 2 or size % 2:
            raise ValueError("the leafset size L must be an even number >= 2")
        self.own = own
        self.half = size // 2
        self.successors: list[Peer] = []
        self.predecessors: list[Peer] = []
        # peers() of the two lists it was made from: they are replaced, never changed in place
        self._peers: tuple[list[Peer], list[Peer], list[Peer]] = ([], [], [])
        # has_addr()'s set of addresses, with the two lists it was made from
        self._addrs: tuple[list[Peer], list[Peer], frozenset[Address]] = ([], [], frozenset())
        # owner()'s index: the known nodes sorted by distance from own, those distances, and
        # the two lists it was made from
        self._ring: tuple[list[Peer], list[Peer], list[int], list[Peer]] = ([], [], [], [])
        # wire()'s lists, each with the list it was made from
        self._wire: tuple[list[Peer], list[Any], list[Peer], list[Any]] = ([], [], [], [])

    # successor half: replaced from a live successor's list (Zave)

    def set_successors(self, peers: Sequence[Peer]) -> None:
        self.successors = ordered_run(self.own.id, peers, self.half, clockwise=True)

    def set_predecessors(self, peers: Sequence[Peer]) -> None:
        self.predecessors = ordered_run(self.own.id, peers, self.half, clockwise=False)

    def remove(self, node_id: int) -> bool:
        """Forget a failed or departed node. Returns whether it was there."""
        before = len(self.successors) + len(self.predecessors)
        self.successors = [p for p in self.successors if p.id != node_id]
        self.predecessors = [p for p in self.predecessors if p.id != node_id]
        return before != len(self.successors) + len(self.predecessors)

    @property
    def successor(self) -> Peer | None:
        return self.successors[0] if self.successors else None

    @property
    def predecessor(self) -> Peer | None:
        """The predecessor is simply the nearest entry of the predecessor half."""
        return self.predecessors[0] if self.predecessors else None

    def peers(self) -> list[Peer]:
        """Every distinct node in the leafset."""
        succs, preds, peers = self._peers
        if succs is not self.successors or preds is not self.predecessors:
            seen: dict[int, Peer] = {}
            for p in self.successors + self.predecessors:
                seen.setdefault(p.id, p)
            peers = list(seen.values())
            self._peers = (self.successors, self.predecessors, peers)
        return list(peers)  # a copy: callers may change theirs

    def has_addr(self, addr: AddrObj) -> bool:
        """Whether a node of the leafset is at ``addr`` (a set made once a change: a replica
        asks it for every record pushed to it, rpc for every datagram whose handling costs
        more than a token; a scan of the list was 6 % of a coordinator's CPU per set)."""
        succs, preds, addrs = self._addrs
        if succs is not self.successors or preds is not self.predecessors:
            addrs = frozenset(p.addr for p in self.successors + self.predecessors)
            self._addrs = (self.successors, self.predecessors, addrs)
        return addr in addrs

    def wire(self) -> tuple[list[Any], list[Any]]:
        """The successor and the predecessor lists as sent (Peer.to_wire), made once a change:
        every ``neighbors`` answer and every notify carries them (a ring of 3,000 simulated
        nodes forming: 4 % of its CPU time went to making them again)."""
        succs, succs_wire, preds, preds_wire = self._wire
        if succs is not self.successors:
            succs, succs_wire = self.successors, [p.to_wire() for p in self.successors]
        if preds is not self.predecessors:
            preds, preds_wire = self.predecessors, [p.to_wire() for p in self.predecessors]
        self._wire = (succs, succs_wire, preds, preds_wire)
        return succs_wire, preds_wire

    def covers(self, key: int) -> bool:
        """Whether the successor of ``key`` is known for sure from the leafset alone.

        True when the key lies between the farthest predecessor (exclusive) and the farthest
        successor (inclusive): its owner is then one of the leafset's nodes or ourselves.
        """
        if not self.successors:
            return False
        low = self.predecessors[-1].id if self.predecessors else self.own.id
        return ids.in_interval(key, low, self.successors[-1].id, right_open=False)

    def successor_gap(self) -> int:
        """The mean gap between consecutive nodes from us to our farthest successor (0 with no
        successor): the distance a node's worth of the ring spans near us."""
        succs = self.successors
        return ids.distance(self.own.id, succs[-1].id) // len(succs) if succs else 0

    def ring_size(self) -> int:
        """The number of nodes in the ring as the leafset suggests: all of them when the ring
        is smaller than the leafset, else its nodes over the share of the circle they span.
        (Lists that overlap, in a ring of L/2 + 2 to L nodes, name all of them: their span
        then ends past its start, a sliver of the circle, and the estimate was 10^49.)"""
        succs, preds = self.successors, self.predecessors
        known = {p.id for p in self.peers()}
        if len(succs) < self.half or len(preds) < self.half or len(known) < len(succs) + len(preds):
            return 1 + len(known)
        span = ids.distance(preds[-1].id, succs[-1].id) or 1
        return max(1, (len(succs) + len(preds)) * ids.RING // span)

    def owner(self, key: int) -> list[Peer]:
        """For a covered key: its owner first, then the nodes after it (fallbacks).

        The known nodes ranked clockwise from the key: in a ring smaller than the leafset the
        two halves list the same nodes, and ranking a set keeps each node once.
        """
        # Sorted once by distance from own (until the lists change), the ranking from any key
        # is a rotation of that order.
        succs, preds, dists, ring = self._ring
        if succs is not self.successors or preds is not self.predecessors:
            own, mask = self.own.id, ids.MASK
            known = {p.id: p for p in [*self.predecessors, self.own, *self.successors]}
            ring = sorted(known.values(), key=lambda p: (p.id - own) & mask)
            dists = [(p.id - own) & mask for p in ring]
            self._ring = (self.successors, self.predecessors, dists, ring)
        own, mask = self.own.id, ids.MASK
        start = bisect.bisect_left(dists, (key - own) & mask)
        if len(self.successors) < self.half:
            return ring[start:] + ring[:start]  # a ring smaller than the leafset: all of it
        # Past the farthest successor come nodes we do not know to be adjacent: stop there.
        last = bisect.bisect_left(dists, (self.successors[-1].id - own) & mask)
        if last >= start:
            return ring[start : last + 1]
        return ring[start:] + ring[: last + 1]


class FingerTable:
    """``finger[i] = successor(own + 2**i)`` for i in 0..159, with the distinct entries."""

    def __init__(self, own: int) -> None:
        self.own = own
        self.entries: list[Peer | None] = [None] * ids.BITS
        self._distinct: list[Peer] = []
        #: next_hop's candidates (fingers, then the leafset), each id once, sorted by distance
        #: from own, with those distances; and the three lists they were made from.
        self._routes: tuple[list[Peer], list[Peer], list[Peer], list[int], list[Peer]] = (
            [],
            [],
            [],
            [],
            [],
        )

    def start(self, i: int) -> int:
        return (self.own + (1 << i)) & ids.MASK

    def set(self, i: int, peer: Peer) -> int:
        """Set finger ``i`` and every later finger whose start ``peer`` also succeeds.

        Returns the index of the next finger that still needs a lookup (160 when none).
        """
        entries = self.entries
        changed = entries[i] != peer
        entries[i] = peer  # even when it wraps past the start: a valid candidate still
        span = ids.distance(self.own, peer.id)
        j = i + 1
        while j < ids.BITS and (1 << j) <= span:  # start(j) is own + 2**j
            changed = changed or entries[j] != peer
            entries[j] = peer
            j += 1
        if changed:  # (else distinct() stays the same list: next_hop's index stays valid)
            self._refresh()
        return j

    def remove(self, node_id: int) -> bool:
        hit = False
        for i, p in enumerate(self.entries):
            if p is not None and p.id == node_id:
                self.entries[i] = None
                hit = True
        if hit:
            self._refresh()
        return hit

    def _refresh(self) -> None:
        # Fingers come in runs of one peer (set() gives a run the same object): a run is
        # passed over by identity, not a dict operation per entry (5 us instead of 20 for 160
        # entries; every finger a maintenance round moves calls this).
        seen: dict[int, Peer] = {}
        last = None
        for p in self.entries:
            if p is last or p is None:
                continue
            last = p
            if p.id not in seen:
                seen[p.id] = p
        self._distinct = list(seen.values())

    def distinct(self) -> list[Peer]:
        """Distinct fingers in finger order (nearest first while they are accurate)."""
        return self._distinct


def closest_preceding(own: int, key: int, candidates: Iterable[Peer], count: int) -> list[Peer]:
    """Up to ``count`` candidates strictly between ``own`` and ``key``, closest to ``key`` first.

    These are the nodes that make progress towards the key: each lies past ``own`` but not past
    the key, so following them never overshoots the key's owner.
    """
    # ids.in_interval(p.id, own, key) and ids.distance(p.id, key), inlined (the hot loop of
    # every routing step): with d = distance(own, p.id) and span = distance(own, key), or the
    # whole ring when key == own, p lies in (own, key) iff 0 < d < span, at span - d from key.
    mask = ids.MASK
    span = ((key - own) & mask) or ids.RING
    seen: dict[int, tuple[int, Peer]] = {}
    for p in candidates:
        pid = p.id
        if pid not in seen:
            d = (pid - own) & mask
            if 0 < d < span:
                seen[pid] = (span - d, p)
    return [p for _, p in sorted(seen.values(), key=itemgetter(0))[:count]]


def _closest_known(
    ls: LeafSet, fingers: FingerTable, key: int, count: int
) -> tuple[list[Peer], Peer | None]:
    """``closest_preceding(own, key, [*fingers.distinct(), *ls.peers()], count)``, and the
    first of those candidates at or past ``key`` (None if none is), from a sorted index of them
    kept until the fingers or the leafset change: a bisection instead of a pass over some
    thirty candidates at every routing step."""
    own = ls.own.id
    distinct, succs, preds, dists, peers = fingers._routes
    if (
        distinct is not fingers._distinct
        or succs is not ls.successors
        or preds is not ls.predecessors
    ):
        mask = ids.MASK
        seen: dict[int, tuple[int, Peer]] = {}
        for p in [*fingers._distinct, *ls.successors, *ls.predecessors]:
            if p.id not in seen:  # the first of an id, as closest_preceding keeps
                d = (p.id - own) & mask
                if d:
                    seen[p.id] = (d, p)
        ranked = sorted(seen.values(), key=itemgetter(0))
        dists, peers = [d for d, _ in ranked], [p for _, p in ranked]
        fingers._routes = (fingers._distinct, ls.successors, ls.predecessors, dists, peers)
    # The candidates in (own, key) are those at a distance below key's: nearest to key first.
    end = bisect.bisect_left(dists, ((key - own) & ids.MASK) or ids.RING)
    past = peers[end] if end < len(peers) else None
    return (peers[end - 1 :: -1][:count] if end else []), past


def next_hop(
    ls: LeafSet,
    fingers: FingerTable,
    key: int,
    *,
    width: int,
    min_owners: int,
    strict: bool = False,
) -> tuple[bool, list[Peer]]:
    """One routing step at a node: ``(True, [owner, ...])`` when its tables know the owner of
    ``key`` (with ``min_owners`` - 1 nodes after it where it can), else ``(False, candidates)``:
    up to ``width`` nodes closer to the key, best first, plus one successor as a last resort.
    ``strict``: only the node whose successor or predecessor pointer brackets the key knows
    its owner (not one whose successor list spans it: while a ring forms, the far entries of
    the lists lag behind the joins, while the pointers are right within a round trip).
    """
    own = ls.own
    succ, pred = ls.successor, ls.predecessor
    if succ is None:
        if pred is None or ids.in_interval(key, pred.id, own.id, right_open=False):
            return True, [own]  # alone, or the key falls to us
        return True, [pred, own]  # a ring of two whose successor is not set yet
    if ids.in_interval(key, own.id, succ.id, right_open=False):
        return True, ls.successors
    if pred is not None and ids.in_interval(key, pred.id, own.id, right_open=False):
        return True, [own, *ls.successors]
    if not strict and ls.covers(key):
        # Answer only with the owner's r-1 successors too (a read or write needs them when
        # the owner is dead); near the leafset's far end, one more hop knows them.
        owners = ls.owner(key)
        if len(owners) >= min_owners or len(ls.successors) < ls.half:
            return True, owners
    candidates, past = _closest_known(ls, fingers, key, width)
    if not candidates:
        return True, ls.successors
    # Fingers go stale when nodes leave; successors are kept alive by stabilization. The
    # nearest successor before the key is always among the candidates, as a last resort.
    walk = closest_preceding(own.id, key, ls.successors, 1)
    if walk and walk[0] not in candidates:
        candidates.append(walk[0])
    # And the nearest node we know past the key: evidence against a claim that a node further
    # on owns it (lookup.plausible_owner), which is then asked first. While a ring forms, the
    # nodes before a few that joined a moment ago still name the node after them; asked to
    # confirm, that node knows the joiners (they notified it) but not the nodes before them,
    # so it named none, and the lookup wandered its 64 hops (360 finds and 0.15-0.74 s for one
    # set right after 100 servers joined, in about one build of five). (It lies past the key,
    # so it is none of the candidates before it.)
    if past is not None:
        candidates.append(past)
    return False, candidates


class RingView:
    """Nodes heard of lately, sorted by id: a guess at a key's holders with no lookup.

    In a ring of a few thousand nodes a node soon has heard of most of them (lookups,
    fingers, repair), so the first of them at or after a key is usually its primary: a read
    or a write goes there directly, one round trip instead of a lookup's several. A guess is
    only a guess: the node asked checks its own responsibility and names the right holders
    when it knows them (NOT_RESPONSIBLE), and the caller drops a node that fails a call at
    once (and looks up instead). The node adds the peers that answered its calls, and those
    that nodes of the ring named in lookup answers (checked like any peer list, and not while
    the failure detector suspects them: a liar that names a node that does not exist costs a
    coordinator one failed call, tests/test_defenses_sim.py). ``holders`` skips nodes not
    heard of since a time the caller gives, so a crashed node is not guessed for long. When
    full, a node picked by the new one's id makes room (no order to exploit).
    """

    MAX_STALE: ClassVar[int] = 64  # stale entries a guess skips at most before it gives up
    #: Seconds: a node not heard from for longer is not guessed as a key's holder, nor named
    #: to others (hellos, find_node answers). The ``since`` callers give.
    TRUSTED_FOR: ClassVar[float] = 60.0

    def __init__(self, own: Peer, limit: int = 4096) -> None:
        self.own = own
        self.limit = limit
        self._ids: list[int] = [own.id]
        self._peers: dict[int, tuple[Peer, float]] = {own.id: (own, float("inf"))}

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, peer: Peer, now: float) -> None:
        """``peer`` answered us at loop time ``now``."""
        if peer.id in self._peers:
            if peer.id != self.own.id:
                self._peers[peer.id] = (peer, now)
            return
        if len(self._ids) >= self.limit:
            victim = self._ids[peer.id % len(self._ids)]
            if victim == self.own.id:
                return
            self.remove(victim)
        bisect.insort(self._ids, peer.id)
        self._peers[peer.id] = (peer, now)

    def remove(self, peer_id: int) -> None:
        if peer_id == self.own.id or self._peers.pop(peer_id, None) is None:
            return
        del self._ids[bisect.bisect_left(self._ids, peer_id)]

    def heard_since(self, since: float) -> set[int]:
        """The ids of the nodes, ourselves included, heard from since loop time ``since`` (the
        nodes a guess may name; O(n): for status)."""
        return {peer_id for peer_id, (_, heard) in self._peers.items() if heard >= since}

    def get(self, peer_id: int) -> Peer | None:
        """The peer of that id, if the view holds it."""
        entry = self._peers.get(peer_id)
        return entry[0] if entry is not None else None

    def holders(self, key: int, count: int, since: float) -> list[Peer]:
        """The first ``count`` nodes at or after ``key`` clockwise (the key's primary first, by
        this view) among those heard from since loop time ``since``, ourselves included."""
        n = len(self._ids)
        i = bisect.bisect_left(self._ids, key)
        out: list[Peer] = []
        for k in range(min(n, count + self.MAX_STALE)):  # bounded: no scan of a stale view
            peer, heard = self._peers[self._ids[(i + k) % n]]
            if heard >= since:
                out.append(peer)
                if len(out) == count:
                    break
        return out

    def page(self, after: int, count: int, since: float) -> list[Peer]:
        """Up to ``count`` nodes after the id ``after``, in id order to the end of the id
        space (no wrap), among those heard from since loop time ``since``, ourselves
        included: ``holders`` from just after ``after``, cut where it wraps."""
        out = self.holders(after + 1, count, since)
        wrapped = next((i for i, p in enumerate(out) if p.id <= after), len(out))
        return out[:wrapped]

    def preceding(self, key: int, since: float) -> Peer | None:
        """The nearest node strictly before ``key`` (counter-clockwise) among those heard from
        since loop time ``since``, ourselves included; None if the view has none."""
        ids_ = self._ids
        n = len(ids_)
        i = bisect.bisect_left(ids_, key)
        for k in range(1, min(n, self.MAX_STALE) + 1):  # bounded: no scan of a stale view
            peer, heard = self._peers[ids_[(i - k) % n]]
            if heard >= since:
                return peer
        return None

    def xor_nearest(self, key: int, count: int, since: float) -> list[Peer]:
        """The ``count`` nodes nearest to ``key`` by XOR (Kademlia's distance), nearest first,
        among those heard from since loop time ``since``, ourselves included.

        The ids are sorted, so the nodes that share a prefix with ``key`` are one slice of
        them: a descent that takes, at each bit, the half on ``key``'s side before the other
        visits the slices in order of distance and stops once it has enough, without a scan
        of the whole view (at most MAX_STALE stale entries are stepped over).
        """
        ids_ = self._ids
        out: list[Peer] = []
        stale = 0
        # (first index, end index, lowest id of the slice, the bit that splits it)
        stack = [(0, len(ids_), 0, ids.BITS - 1)]
        while stack and len(out) < count and stale <= self.MAX_STALE:
            lo, hi, base, bit = stack.pop()
            if lo >= hi:
                continue
            if bit < 0 or hi - lo <= count - len(out):
                # The whole slice is nearer than anything left on the stack.
                for i in sorted(range(lo, hi), key=lambda i: ids_[i] ^ key):
                    peer, heard = self._peers[ids_[i]]
                    if heard >= since:
                        out.append(peer)
                    else:
                        stale += 1
                continue
            split = base | (1 << bit)
            mid = bisect.bisect_left(ids_, split, lo, hi)
            low, high = (lo, mid, base, bit - 1), (mid, hi, split, bit - 1)
            # The half whose bit agrees with key's is nearer: popped first.
            stack += [high, low] if not key >> bit & 1 else [low, high]
        return out[:count]
