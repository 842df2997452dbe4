"""Property tests of udpdht.ids: interval membership, distance, hashing, id encodings.

``in_interval`` is checked two ways: exhaustively on a small ring embedded in the real one (a
point ``k`` of a ring of size ``N`` sits at ``offset + k * RING // N``, which keeps the cyclic
order, so the small ring's intervals are the big ring's), against a reference that literally
walks clockwise from ``a`` to ``b``; and with hypothesis over the full 160-bit range, edges
included, against properties derived from distances.
"""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from udpdht import ids
from udpdht.ids import RING, distance, in_interval

ENDS = [(lo, ro) for lo in (True, False) for ro in (True, False)]

EDGES = [0, 1, 2, RING // 2 - 1, RING // 2, RING // 2 + 1, RING - 2, RING - 1]

any_id = st.one_of(st.integers(0, RING - 1), st.sampled_from(EDGES))


def walk(x: int, a: int, b: int, size: int, *, left_open: bool, right_open: bool) -> bool:
    """The reference: step clockwise from a to b on a ring of ``size`` points.

    The walk always takes at least one step, so when ``a == b`` it goes once around the ring.
    """
    inside = set()
    p = (a + 1) % size
    while p != b:
        inside.add(p)
        p = (p + 1) % size
    if not left_open:
        inside.add(a)
    if not right_open:
        inside.add(b)
    return x in inside


@pytest.mark.parametrize("size", [1, 2, 3, 8, 13])
@pytest.mark.parametrize(
    "offset", [0, RING - 1, RING // 3, 12345], ids=["0", "RING-1", "RING/3", "12345"]
)
def test_in_interval_matches_walk_on_small_ring(size: int, offset: int) -> None:
    step = RING // size

    def big(k: int) -> int:
        return (offset + k * step) % RING

    for x, a, b in itertools.product(range(size), repeat=3):
        for lo, ro in ENDS:
            expected = walk(x, a, b, size, left_open=lo, right_open=ro)
            got = in_interval(big(x), big(a), big(b), left_open=lo, right_open=ro)
            assert got == expected, (x, a, b, lo, ro, size, offset)


@settings(max_examples=300)
@given(a=any_id, b=any_id, other=any_id)
@example(a=0, b=RING - 1, other=0)
@example(a=RING - 1, b=0, other=RING // 2)
@example(a=5, b=5, other=5)
def test_in_interval_full_range(a: int, b: int, other: int) -> None:
    near = [a, b, (a + 1) % RING, (a - 1) % RING, (b + 1) % RING, (b - 1) % RING, 0, RING - 1]
    for x in [other, *near]:
        open_ = in_interval(x, a, b)
        right_closed = in_interval(x, a, b, right_open=False)
        left_closed = in_interval(x, a, b, left_open=False)
        closed = in_interval(x, a, b, left_open=False, right_open=False)
        if a != b:
            # Open ends exclude the end points; a closed end brings exactly that point in.
            assert not in_interval(a, a, b) and not in_interval(b, a, b)
            assert right_closed == (open_ or x == b)
            assert left_closed == (open_ or x == a)
            assert closed == (open_ or x in (a, b))
            # Exactly one of: (a, b), (b, a), {a, b}.
            assert [open_, in_interval(x, b, a), x in (a, b)].count(True) == 1
            # The same thing said with clockwise distances.
            assert open_ == (0 < distance(a, x) < distance(a, b))
            assert right_closed == (0 < distance(a, x) <= distance(a, b))
        else:
            # One-node ring: (a, a) is everything but a; any closed end is the whole ring.
            assert open_ == (x != a)
            assert right_closed and left_closed and closed


@settings(max_examples=200)
@given(a=any_id, b=any_id)
def test_distance(a: int, b: int) -> None:
    d = distance(a, b)
    assert 0 <= d < RING
    assert (a + d) % RING == b
    if a == b:
        assert d == 0
    else:
        assert d + distance(b, a) == RING


def test_distance_edges() -> None:
    assert distance(RING - 1, 0) == 1
    assert distance(0, RING - 1) == RING - 1
    assert distance(7, 7) == 0


def test_interval_wraps_zero() -> None:
    a, b = RING - 10, 10
    assert in_interval(0, a, b)
    assert in_interval(RING - 1, a, b)
    assert not in_interval(11, a, b)
    assert not in_interval(RING // 2, a, b)
    assert in_interval(b, a, b, right_open=False)
    assert not in_interval(b, a, b)


@settings(max_examples=200)
@given(key=st.text())
def test_hash_key_str_is_its_utf8_bytes(key: str) -> None:
    raw = key.encode("utf-8")
    expected = int(hashlib.sha1(raw).hexdigest(), 16)
    assert ids.hash_key(key) == ids.hash_key(raw) == expected
    assert 0 <= ids.hash_key(key) < RING


@settings(max_examples=100)
@given(key=st.binary())
def test_hash_key_bytes(key: bytes) -> None:
    assert ids.hash_key(key) == int.from_bytes(hashlib.sha1(key).digest(), "big")


def test_hash_key_known_values() -> None:
    assert ids.hash_key("") == 0xDA39A3EE5E6B4B0D3255BFEF95601890AFD80709
    assert ids.hash_key("é") == ids.hash_key(b"\xc3\xa9")


def test_node_id_for() -> None:
    expected = int(hashlib.sha1(b"127.0.0.1:7000").hexdigest(), 16)
    assert ids.node_id_for("127.0.0.1", 7000) == expected
    assert ids.node_id_for("::1", 7000) == ids.hash_key("::1:7000")


@settings(max_examples=200)
@given(i=any_id)
def test_bytes_round_trip(i: int) -> None:
    b = ids.to_bytes(i)
    assert len(b) == ids.ID_BYTES == 20
    assert b == i.to_bytes(20, "big")
    assert ids.from_bytes(b) == i


@settings(max_examples=200)
@given(i=any_id)
def test_hex_round_trip(i: int) -> None:
    h = ids.to_hex(i)
    assert len(h) == 40
    assert h == h.lower()
    assert ids.from_hex(h) == i
    assert ids.from_hex(h.upper()) == i
    assert ids.short(i) == h[:8]


def test_id_encoding_edges() -> None:
    assert ids.to_bytes(0) == bytes(20)
    assert ids.to_bytes(RING - 1) == b"\xff" * 20
    assert ids.to_hex(0) == "0" * 40
    assert ids.to_hex(RING - 1) == "f" * 40


@pytest.mark.parametrize("n", [0, 1, 19, 21, 40])
def test_from_bytes_wrong_length(n: int) -> None:
    with pytest.raises(ValueError):
        ids.from_bytes(b"\x01" * n)


@pytest.mark.parametrize("n", [0, 1, 20, 39, 41, 42])
def test_from_hex_wrong_length(n: int) -> None:
    with pytest.raises(ValueError):
        ids.from_hex("a" * n)


def test_from_hex_not_hex() -> None:
    with pytest.raises(ValueError):
        ids.from_hex("g" * 40)


@pytest.mark.parametrize(
    "text",
    ["-" + "f" * 39, "+" + "f" * 39, "0x" + "f" * 38, " " + "f" * 39, "\u0660" * 40],
    ids=["minus", "plus", "0x", "space", "arabic-indic-digits"],
)
def test_from_hex_rejects_non_hex_of_right_length(text: str) -> None:
    with pytest.raises(ValueError):
        ids.from_hex(text)


@pytest.mark.parametrize("i", [-1, RING])
def test_to_bytes_out_of_range(i: int) -> None:
    with pytest.raises(OverflowError):
        ids.to_bytes(i)
