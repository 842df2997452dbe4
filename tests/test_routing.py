"""Property tests of udpdht.routing: ordered runs, the leafset, the finger table, routing
candidates and the wire form of peers.

Every check compares against brute force over an explicit ring: a set of node ids, one of
which is ``own``. The true successor of a key is the node with the smallest clockwise distance
from the key (0 included); the true successor list of ``own`` is the other nodes sorted by
clockwise distance from ``own``, the predecessor list the same counter-clockwise. Ids are drawn
from the whole 160-bit range and also clustered at both ends of it, so that rings which wrap
past 0 and tiny gaps between nodes both come up.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpdht import ids
from udpdht.ids import MASK, RING, distance, in_interval
from udpdht.net import peer_host_ok
from udpdht.routing import (
    FingerTable,
    LeafSet,
    Peer,
    RingView,
    closest_preceding,
    next_hop,
    ordered_run,
    peers_from_wire,
)

# --- helpers -----------------------------------------------------------------------------------

EDGES = [0, 1, 2, RING // 2 - 1, RING // 2, RING // 2 + 1, MASK - 1, MASK]

any_id = st.one_of(
    st.integers(0, MASK),
    st.sampled_from(EDGES),
    st.integers(0, 64),
    st.integers(MASK - 64, MASK),
)

even_sizes = st.integers(1, 8).map(lambda h: 2 * h)


def peer(node_id: int) -> Peer:
    """A peer with a made-up but valid address derived from its id."""
    return Peer(node_id, (f"10.0.{node_id % 256}.1", 1 + node_id % 65535))


def true_successor(nodes: list[int], key: int) -> int:
    """The node at the smallest clockwise distance from ``key`` (the key itself if a node)."""
    return min(nodes, key=lambda n: distance(key, n))


def clockwise_from(own: int, nodes: list[int]) -> list[int]:
    """The other nodes, nearest successor first."""
    return sorted((n for n in nodes if n != own), key=lambda n: distance(own, n))


def counter_clockwise_from(own: int, nodes: list[int]) -> list[int]:
    """The other nodes, nearest predecessor first."""
    return sorted((n for n in nodes if n != own), key=lambda n: distance(n, own))


def next_on_ring(nodes: list[int], node: int) -> int:
    """The node that follows ``node`` clockwise (itself in a ring of one)."""
    others = clockwise_from(node, nodes)
    return others[0] if others else node


@st.composite
def rings(draw: st.DrawFn, min_size: int = 1, max_size: int = 40) -> tuple[list[int], int]:
    """A ring of distinct node ids, and one of them as ``own``."""
    nodes = sorted(draw(st.sets(any_id, min_size=min_size, max_size=max_size)))
    own = draw(st.sampled_from(nodes))
    return nodes, own


def true_leafset(nodes: list[int], own: int, size: int) -> LeafSet:
    """The leafset of ``own`` in the ideal state: fed the true neighbourhood."""
    ls = LeafSet(peer(own), size)
    ls.set_successors([peer(n) for n in clockwise_from(own, nodes)])
    ls.set_predecessors([peer(n) for n in counter_clockwise_from(own, nodes)])
    return ls


def keys_near(nodes: list[int], extra: list[int]) -> list[int]:
    """Interesting keys: the nodes themselves, their neighbours, and some arbitrary ones."""
    keys = set(extra)
    for n in nodes:
        keys.update({n, (n + 1) & MASK, (n - 1) & MASK})
    return sorted(keys)


# --- ordered_run -------------------------------------------------------------------------------


def reference_run(own: int, peers: list[Peer], limit: int, *, clockwise: bool) -> list[Peer]:
    """The spec, stated differently: drop ``own`` and every repeat of an id, then take the longest
    prefix whose distances from ``own`` strictly increase, then cut at ``limit``."""
    filtered: list[Peer] = []
    seen: set[int] = set()
    for p in peers:
        if p.id != own and p.id not in seen:
            seen.add(p.id)
            filtered.append(p)
    run: list[Peer] = []
    for p in filtered:
        d = distance(own, p.id) if clockwise else distance(p.id, own)
        if run:
            last = run[-1]
            if d <= (distance(own, last.id) if clockwise else distance(last.id, own)):
                break
        run.append(p)
    return run[:limit]


@st.composite
def run_inputs(draw: st.DrawFn) -> tuple[int, list[Peer]]:
    """``own`` and a list drawn from a small pool of ids (own included), so that repeats, own
    and out-of-order entries all come up."""
    pool = sorted(draw(st.sets(any_id, min_size=1, max_size=10)))
    own = draw(st.sampled_from(pool))
    items = draw(st.lists(st.sampled_from(pool), max_size=20))
    return own, [peer(i) for i in items]


@given(run_inputs(), st.integers(1, 12), st.booleans())
@settings(max_examples=400, deadline=None)
def test_ordered_run_properties(inp: tuple[int, list[Peer]], limit: int, clockwise: bool) -> None:
    own, peers = inp
    out = ordered_run(own, peers, limit, clockwise=clockwise)

    def dist(p: Peer) -> int:
        return distance(own, p.id) if clockwise else distance(p.id, own)

    ds = [dist(p) for p in out]
    assert all(a < b for a, b in itertools.pairwise(ds)), "strictly farther each time"
    assert own not in {p.id for p in out}
    assert len({p.id for p in out}) == len(out)
    assert len(out) <= limit
    # A subsequence of the input, order kept.
    it = iter(peers)
    assert all(any(q == p for q in it) for p in out)
    # And exactly the cut the docstring describes.
    assert out == reference_run(own, peers, limit, clockwise=clockwise)


def test_ordered_run_wrapping_list_is_cut_at_own() -> None:
    """A ring of three (own=10, 20, 30): a copied list wraps past us and is cut there."""
    a, b, c = peer(10), peer(20), peer(30)
    assert ordered_run(10, [b, c, a, b, c], 8, clockwise=True) == [b, c]
    # Wrapping without own in between: what follows are repeats, skipped; then the run ends.
    assert ordered_run(10, [b, c, b, c], 8, clockwise=True) == [b, c]
    assert ordered_run(10, [c, b, a, c, b], 8, clockwise=False) == [c, b]


def test_ordered_run_wraps_across_zero() -> None:
    """Clockwise order past the top of the id space: MASK-1, 0, 5 are increasing from MASK-2."""
    own = MASK - 2
    ps = [peer(MASK - 1), peer(0), peer(5), peer(MASK)]
    assert ordered_run(own, ps, 8, clockwise=True) == ps[:3]  # MASK comes back: cut
    assert ordered_run(own, [peer(5), peer(0)], 8, clockwise=False) == [peer(5), peer(0)]


def test_ordered_run_skips_duplicates_and_own_but_cuts_on_disorder() -> None:
    b, c, d = peer(20), peer(30), peer(40)
    assert ordered_run(10, [b, b, c, b, d], 8, clockwise=True) == [b, c, d]
    assert ordered_run(10, [peer(10), b, peer(10), c], 8, clockwise=True) == [b, c]
    assert ordered_run(10, [b, d, c], 8, clockwise=True) == [b, d]  # c is nearer than d: cut
    assert ordered_run(10, [b, d, c, peer(50)], 8, clockwise=True) == [b, d]  # and stays cut
    assert ordered_run(10, [b, c, d], 2, clockwise=True) == [b, c]
    assert ordered_run(10, [], 2, clockwise=True) == []
    assert ordered_run(10, [peer(10)], 2, clockwise=True) == []


def test_ordered_run_limit_zero_keeps_nothing() -> None:
    assert ordered_run(10, [peer(20), peer(30)], 0, clockwise=True) == []


@given(rings(min_size=2), even_sizes)
@settings(max_examples=200, deadline=None)
def test_successor_list_copy_gives_true_successors(ring: tuple[list[int], int], size: int) -> None:
    """Zave's join/stabilize: ``[s] + s's list`` cut by ordered_run is own's true list, also in
    rings smaller than the list, where s's list wraps round past own."""
    nodes, own = ring
    half = size // 2
    s = next_on_ring(nodes, own)
    s_list = clockwise_from(s, nodes)[:half]  # s's own true list (it contains own if near)
    ls = LeafSet(peer(own), size)
    ls.set_successors([peer(s), *(peer(n) for n in s_list)])
    assert [p.id for p in ls.successors] == clockwise_from(own, nodes)[:half]


# --- LeafSet -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [-2, 0, 1, 3, 7])
def test_leafset_rejects_bad_sizes(size: int) -> None:
    with pytest.raises(ValueError):
        LeafSet(peer(1), size)


def test_leafset_empty() -> None:
    ls = LeafSet(peer(5), 4)
    assert ls.successor is None
    assert ls.predecessor is None
    assert ls.peers() == []
    assert not ls.covers(6)
    assert not ls.remove(6)


@given(rings(), even_sizes)
@settings(max_examples=200, deadline=None)
def test_leafset_from_true_neighbourhood(ring: tuple[list[int], int], size: int) -> None:
    nodes, own = ring
    half = size // 2
    ls = true_leafset(nodes, own, size)
    succs = clockwise_from(own, nodes)[:half]
    preds = counter_clockwise_from(own, nodes)[:half]
    assert [p.id for p in ls.successors] == succs
    assert [p.id for p in ls.predecessors] == preds
    assert ls.successor == (peer(succs[0]) if succs else None)
    assert ls.predecessor == (peer(preds[0]) if preds else None)
    if len(nodes) > 1:
        assert ls.successor is not None and ls.predecessor is not None
        assert ls.successor.id == next_on_ring(nodes, own)
        assert next_on_ring(nodes, ls.predecessor.id) == own
    got = [p.id for p in ls.peers()]
    assert len(got) == len(set(got))
    assert set(got) == set(succs) | set(preds)
    assert own not in got


@given(st.integers(2, 8), st.integers(1, 8), any_id)
@settings(max_examples=100, deadline=None)
def test_leafset_small_ring_nodes_on_both_sides(n: int, half: int, offset: int) -> None:
    """When n - 1 <= L/2 both halves hold every other node, in opposite orders."""
    if n - 1 > half:
        half = n - 1
    nodes = sorted({(offset + k * (RING // n)) & MASK for k in range(n)})
    own = nodes[0]
    ls = true_leafset(nodes, own, 2 * half)
    others = clockwise_from(own, nodes)
    assert [p.id for p in ls.successors] == others
    assert [p.id for p in ls.predecessors] == others[::-1]
    assert {p.id for p in ls.peers()} == set(others)
    assert len(ls.peers()) == n - 1
    if n == 2:
        assert ls.successor == ls.predecessor


@given(rings(min_size=2), even_sizes, st.data())
@settings(max_examples=200, deadline=None)
def test_leafset_remove(ring: tuple[list[int], int], size: int, data: st.DataObject) -> None:
    nodes, own = ring
    ls = true_leafset(nodes, own, size)
    succs, preds = list(ls.successors), list(ls.predecessors)
    victim = data.draw(st.sampled_from(nodes), label="victim")
    member = victim in {p.id for p in ls.peers()}
    assert all(ls.has_addr(p.addr) for p in ls.peers())
    victim_addr = peer(victim).addr
    assert ls.remove(victim) is member
    # has_addr follows the lists it was made from (replaced on every change)
    assert ls.has_addr(victim_addr) is any(p.addr == victim_addr for p in ls.peers())
    assert ls.successors == [p for p in succs if p.id != victim]
    assert ls.predecessors == [p for p in preds if p.id != victim]
    assert victim not in {p.id for p in ls.peers()}
    assert ls.remove(victim) is False  # a second time: already gone
    if member and succs and succs[0].id == victim:
        assert ls.successor == (succs[1] if len(succs) > 1 else None)


@given(rings(), even_sizes, st.lists(any_id, max_size=20))
@settings(max_examples=300, deadline=None)
def test_leafset_covers_and_owner(ring: tuple[list[int], int], size: int, extra: list[int]) -> None:
    nodes, own = ring
    ls = true_leafset(nodes, own, size)
    low = ls.predecessors[-1].id if ls.predecessors else own
    for key in keys_near(nodes, extra):
        if ls.successors and in_interval(key, low, ls.successors[-1].id, right_open=False):
            assert ls.covers(key), "(farthest pred, farthest succ] is covered"
        if not ls.covers(key):
            continue
        owners = ls.owner(key)
        assert owners[0].id == true_successor(nodes, key)
        # The fallbacks follow the ring from the owner, node after node.
        for a, b in itertools.pairwise(owners):
            assert b.id == next_on_ring(nodes, a.id)


@given(rings(min_size=2), even_sizes, st.lists(any_id, max_size=20))
@settings(max_examples=200, deadline=None)
def test_leafset_covers_with_successors_only(
    ring: tuple[list[int], int], size: int, extra: list[int]
) -> None:
    """Just joined: no predecessors yet, so the covered range is (own, farthest successor]."""
    nodes, own = ring
    ls = LeafSet(peer(own), size)
    ls.set_successors([peer(n) for n in clockwise_from(own, nodes)])
    far = ls.successors[-1].id
    for key in keys_near(nodes, extra):
        assert ls.covers(key) == in_interval(key, own, far, right_open=False)
        if ls.covers(key):
            assert ls.owner(key)[0].id == true_successor(nodes, key)


def test_leafset_two_node_ring_covers_everything() -> None:
    ls = true_leafset([100, 200], 100, 16)
    for key in (0, 99, 100, 101, 150, 199, 200, 201, MASK):
        assert ls.covers(key)
        assert ls.owner(key)[0].id == true_successor([100, 200], key)


def test_leafset_owner_fallbacks_distinct_in_small_ring() -> None:
    # Ring 10, 20, 30 seen from 10 with L = 16: succs [20, 30], preds [30, 20].
    ls = true_leafset([10, 20, 30], 10, 16)
    owners = ls.owner(25)  # covered: (20, 30]; owner 30, whose successors are 10, 20
    assert owners[0].id == 30
    assert [p.id for p in owners] == [30, 10, 20]  # each node once, in ring order


# --- FingerTable -------------------------------------------------------------------------------


def fill_fingers(nodes: list[int], own: int) -> tuple[FingerTable, int]:
    """Fill a table the way fix_fingers does, with true successors. Returns it and the number
    of ``set`` calls made."""
    ft = FingerTable(own)
    calls = 0
    j = 0
    while j < ids.BITS:
        owner = true_successor(nodes, ft.start(j))
        if owner != own:
            nxt = ft.set(j, peer(owner))
            calls += 1
            assert j < nxt <= ids.BITS
            j = nxt
        else:
            j += 1
    return ft, calls


@given(any_id, st.integers(0, ids.BITS - 1))
def test_finger_start(own: int, i: int) -> None:
    ft = FingerTable(own)
    assert ft.start(i) == (own + 2**i) % RING
    assert distance(own, ft.start(i)) == 2**i


@given(rings())
@settings(max_examples=150, deadline=None)
def test_finger_table_true_successors(ring: tuple[list[int], int]) -> None:
    nodes, own = ring
    ft, calls = fill_fingers(nodes, own)
    for i in range(ids.BITS):
        succ = true_successor(nodes, ft.start(i))
        if succ == own:
            assert ft.entries[i] is None
        else:
            assert ft.entries[i] == peer(succ), i
    distinct = ft.distinct()
    dids = [p.id for p in distinct]
    assert len(dids) == len(set(dids))
    unique_entries: list[Peer] = []
    for p in ft.entries:
        if p is not None and p not in unique_entries:
            unique_entries.append(p)
    assert distinct == unique_entries
    assert dids == sorted(dids, key=lambda n: distance(own, n)), "nearest first"
    assert calls == len(distinct), "each set() lands on a new node"
    assert own not in dids


@given(rings(min_size=2), st.data())
@settings(max_examples=150, deadline=None)
def test_finger_table_remove(ring: tuple[list[int], int], data: st.DataObject) -> None:
    nodes, own = ring
    ft, _ = fill_fingers(nodes, own)
    before = list(ft.entries)
    victim = data.draw(st.sampled_from(nodes), label="victim")
    present = any(p is not None and p.id == victim for p in before)
    assert ft.remove(victim) is present
    assert all(p is None or p.id != victim for p in ft.entries)
    assert victim not in {p.id for p in ft.distinct()}
    # Every other entry untouched.
    assert ft.entries == [None if p is not None and p.id == victim else p for p in before]
    assert ft.distinct() == [p for p in dict.fromkeys(ft.entries) if p is not None]
    assert ft.remove(victim) is False


def test_finger_table_small_example() -> None:
    """own = 0 in a ring {0, 3, 100}: fingers 0, 1 -> 3; 2..6 -> 100; the rest wrap to own."""
    ft, calls = fill_fingers([0, 3, 100], 0)
    assert [p.id if p else None for p in ft.entries[:8]] == [3, 3, 100, 100, 100, 100, 100, None]
    assert all(p is None for p in ft.entries[7:])
    assert ft.distinct() == [peer(3), peer(100)]
    assert calls == 2
    assert ft.remove(3) and ft.distinct() == [peer(100)]
    assert ft.entries[0] is None and ft.entries[1] is None


# --- closest_preceding -------------------------------------------------------------------------


@given(any_id, any_id, st.lists(any_id, max_size=30), st.integers(0, 10), st.data())
@settings(max_examples=400, deadline=None)
def test_closest_preceding(
    own: int, key: int, cand_ids: list[int], count: int, data: st.DataObject
) -> None:
    # Make own and key, and repeats, show up among the candidates now and then.
    extra = data.draw(st.lists(st.sampled_from([own, key, *cand_ids]), max_size=5), label="extra")
    candidates = [peer(c) for c in cand_ids + extra]
    out = closest_preceding(own, key, candidates, count)
    out_ids = [p.id for p in out]

    if own != key:
        span = distance(own, key)
        assert all(0 < distance(own, p) < span for p in out_ids), "strictly in (own, key)"
    else:
        assert own not in out_ids  # (own, own) is the whole ring but own
    dk = [distance(p, key) for p in out_ids]
    assert dk == sorted(dk)
    assert len(set(out_ids)) == len(out_ids)
    assert len(out) <= count
    # Brute force: all valid distinct candidates, best (nearest the key) first.
    if own != key:
        valid = {c for c in cand_ids + extra if 0 < distance(own, c) < distance(own, key)}
    else:
        valid = {c for c in cand_ids + extra if c != own}
    best = sorted(valid, key=lambda c: distance(c, key))[:count]
    assert out_ids == best
    assert all(p in candidates for p in out)


def test_closest_preceding_example() -> None:
    cands = [peer(i) for i in (5, 50, 20, 90, 20, 10, 0)]
    assert [p.id for p in closest_preceding(10, 60, cands, 8)] == [50, 20]
    assert [p.id for p in closest_preceding(10, 60, cands, 1)] == [50]
    # Wrapping: (90, 10) holds 0 and 5, not 90 or 10.
    assert [p.id for p in closest_preceding(90, 10, cands, 8)] == [5, 0]
    assert closest_preceding(10, 60, cands, 0) == []


# --- wire form ---------------------------------------------------------------------------------

# Hosts a peer may name: canonical unicast IP literals (anything else never reaches sendto).
hosts = st.ip_addresses().map(str).filter(peer_host_ok)
peers_st = st.builds(Peer, any_id, st.tuples(hosts, st.integers(1, 65535)))


@given(peers_st)
def test_peer_wire_round_trip(p: Peer) -> None:
    w = p.to_wire()
    assert isinstance(w[0], bytes) and len(w[0]) == ids.ID_BYTES
    assert Peer.from_wire(w) == p


GOOD_ID = bytes(20)

MALFORMED: list[Any] = [
    None,
    "peer",
    b"x" * 20,
    (GOOD_ID, "10.0.0.1", 1),  # a tuple, not a list
    {"id": GOOD_ID},
    [],
    [GOOD_ID, "10.0.0.1"],
    [GOOD_ID, "10.0.0.1", 1, 2],
    ["00" * 20, "10.0.0.1", 1],  # hex text, not bytes
    [bytearray(20), "10.0.0.1", 1],
    [bytes(19), "10.0.0.1", 1],
    [bytes(21), "10.0.0.1", 1],
    [b"", "10.0.0.1", 1],
    [GOOD_ID, b"10.0.0.1", 1],
    [GOOD_ID, None, 1],
    [GOOD_ID, "10.0.0.1", "1"],
    [GOOD_ID, "10.0.0.1", 1.0],
    [GOOD_ID, "10.0.0.1", True],
    [GOOD_ID, "10.0.0.1", None],
    [GOOD_ID, "10.0.0.1", 0],
    [GOOD_ID, "10.0.0.1", -1],
    [GOOD_ID, "10.0.0.1", 65536],
    [GOOD_ID, "10.0.0.1", 70000],
    # Hosts that are not a canonical unicast IP literal: each could hurt if sent to.
    [GOOD_ID, "127.0.0.1\x00", 1],  # a NUL: sendto raises inside an asyncio transport
    [GOOD_ID, "localhost", 1],  # a name: sendto would block the loop on DNS
    [GOOD_ID, "", 1],
    [GOOD_ID, "0.0.0.0", 1],  # unspecified: ourselves
    [GOOD_ID, "::", 1],
    [GOOD_ID, "255.255.255.255", 1],  # broadcast
    [GOOD_ID, "224.0.0.1", 1],  # multicast
    [GOOD_ID, "ff02::1", 1],
    [GOOD_ID, "::ffff:127.0.0.1", 1],  # a second spelling of an IPv4 address
    [GOOD_ID, "127.000.0.1", 1],
    [GOOD_ID, "FE80::1", 1],  # not canonical (upper case), and link-local
    [GOOD_ID, "fe80::1%eth0", 1],  # a zone id
    [GOOD_ID, " 10.0.0.1", 1],
    [GOOD_ID, "10.0.0.1" * 100, 1],
]


@pytest.mark.parametrize("item", MALFORMED, ids=repr)
def test_peer_from_wire_rejects(item: Any) -> None:
    with pytest.raises(ValueError):
        Peer.from_wire(item)


@pytest.mark.parametrize("port", [1, 65535])
def test_peer_from_wire_port_bounds(port: int) -> None:
    assert Peer.from_wire([GOOD_ID, "10.0.0.1", port]) == Peer(0, ("10.0.0.1", port))


@given(st.lists(peers_st, max_size=64))
@settings(max_examples=50, deadline=None)
def test_peers_from_wire_round_trip(ps: list[Peer]) -> None:
    assert peers_from_wire([p.to_wire() for p in ps]) == ps


@pytest.mark.parametrize("items", [None, (), {}, "x", b"x", 3, ([GOOD_ID, "h", 1],)], ids=repr)
def test_peers_from_wire_rejects_non_lists(items: Any) -> None:
    with pytest.raises(ValueError):
        peers_from_wire(items)


def test_peers_from_wire_limit() -> None:
    item = [GOOD_ID, "10.0.0.1", 1]
    assert len(peers_from_wire([item] * 64)) == 64
    with pytest.raises(ValueError):
        peers_from_wire([item] * 65)
    assert len(peers_from_wire([item] * 3, limit=3)) == 3
    with pytest.raises(ValueError):
        peers_from_wire([item] * 4, limit=3)
    assert peers_from_wire([], limit=0) == []


def test_peers_from_wire_rejects_a_bad_item() -> None:
    with pytest.raises(ValueError):
        peers_from_wire([[GOOD_ID, "h", 1], [GOOD_ID, "h", 0]])


def test_peer_info_and_str() -> None:
    p = Peer(0xAB << 152, ("10.0.0.1", 4000))
    assert p.info() == {"id": "ab" + "0" * 38, "addr": "10.0.0.1:4000"}
    assert str(p) == "ab000000@10.0.0.1:4000"


def test_peers_from_wire_drops_entries_whose_id_is_not_their_address() -> None:
    honest = Peer(ids.node_id_for("10.0.0.1", 7000), ("10.0.0.1", 7000))
    chosen = Peer(honest.id - 1, ("10.0.0.2", 7000))  # an id picked to sit just before it
    items = [honest.to_wire(), chosen.to_wire()]
    assert peers_from_wire(items, verify_ids=True) == [honest]
    assert peers_from_wire(items) == [honest, chosen]  # a ring of chosen ids turns it off


def test_ring_view_guesses_the_holders_from_the_nodes_heard_lately() -> None:
    own = Peer(500, ("10.0.0.1", 1))
    view = RingView(own, limit=4)
    for i, node_id in enumerate((100, 300, 700)):
        view.add(Peer(node_id, ("10.0.0.2", 10 + i)), now=float(i))
    assert [p.id for p in view.holders(250, 3, since=0.0)] == [300, 500, 700]
    assert [p.id for p in view.holders(800, 2, since=0.0)] == [100, 300]  # wraps
    assert [p.id for p in view.holders(50, 2, since=1.0)] == [300, 500]  # 100: heard too long ago
    view.remove(300)
    assert [p.id for p in view.holders(250, 1, since=0.0)] == [500]
    view.remove(500)  # never ourselves
    assert len(view) == 3
    for node_id in (900, 950, 990):  # bounded: the oldest ids do not pile up
        view.add(Peer(node_id, ("10.0.0.3", node_id)), now=5.0)
    assert len(view) <= 4 and 500 in [p.id for p in view.holders(0, 4, since=0.0)]


def test_ring_view_names_the_nearest_node_before_a_key() -> None:
    own = Peer(500, ("10.0.0.1", 1))
    view = RingView(own)

    def before(key: int, since: float) -> int | None:
        found = view.preceding(key, since)
        return None if found is None else found.id

    assert before(300, since=0.0) == 500  # alone: ourselves
    for i, node_id in enumerate((100, 300, 700)):
        view.add(Peer(node_id, ("10.0.0.2", 10 + i)), now=float(i))
    assert before(650, since=0.0) == 500
    assert before(300, since=0.0) == 100  # strictly before
    assert before(50, since=0.0) == 700  # wraps
    assert before(200, since=1.0) == 700  # 100 heard too long ago


def test_a_strict_step_answers_from_the_pointers_only() -> None:
    # A node at 100 whose successor list (200, 300, 400, 500) spans key 350: from its lists it
    # knows the owner (400). A strict step does not: its successor pointer does not bracket
    # the key, so it names 300, the listed node nearest before it, as the next hop. (While a
    # ring forms the lists lag behind joins: a node that joined at 360 is not in them yet.)
    ls = LeafSet(peer(100), 8)
    ls.set_successors([peer(i) for i in (200, 300, 400, 500)])
    ls.set_predecessors([peer(i) for i in (90, 80, 70, 60)])
    fingers = FingerTable(100)
    assert next_hop(ls, fingers, 350, width=3, min_owners=2) == (True, [peer(400), peer(500)])
    done, nodes = next_hop(ls, fingers, 350, width=3, min_owners=2, strict=True)
    assert not done and nodes[0] == peer(300)
    # The pointers still answer: the key just after us, or just before us.
    assert next_hop(ls, fingers, 150, width=3, min_owners=2, strict=True) == (True, ls.successors)
    done, nodes = next_hop(ls, fingers, 95, width=3, min_owners=2, strict=True)
    assert done and nodes[0] == peer(100)


@pytest.mark.parametrize("n", [5, 10, 16, 17, 100, 1000])
def test_a_leafset_of_an_evenly_spaced_ring_tells_its_size(n: int) -> None:
    # (maintenance's walk of a small ring asks it: rings above WALK_MAX are not walked. With
    # 10 or 16 nodes, the two lists of 8 overlap: they name the whole ring)
    nodes = [i * (ids.RING // n) for i in range(n)]
    ls = true_leafset(nodes, nodes[n // 2], 16)
    assert ls.ring_size() == n
