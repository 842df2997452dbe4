"""The picture of the ring (udpdht/ringdraw.py, `udpdht ring --draw`, the shell's `ring`)."""

from __future__ import annotations

import itertools
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import node_process, udpdht

from udpdht import ids
from udpdht.ringdraw import ATTACHED, NODE, Layout, RingNode, draw_svg, draw_text, from_statuses

QUARTER = ids.RING // 4
SVG = "{http://www.w3.org/2000/svg}"


def _ring() -> tuple[list[RingNode], list[int]]:
    """Four nodes at the quarters; the one at id 0 attached, its fingers the other three."""
    nodes = [
        RingNode(0, "127.0.0.1:7000", 3, attached=True),
        RingNode(QUARTER, "127.0.0.1:7001", 5),
        RingNode(2 * QUARTER, "127.0.0.1:7002", 0),
        RingNode(3 * QUARTER, "127.0.0.1:7003", None),
    ]
    return nodes, [QUARTER, 2 * QUARTER, 3 * QUARTER]


def _find(lines: list[str], ch: str) -> list[tuple[int, int]]:
    """Where ``ch`` is in the picture (the lines above the legend)."""
    end = next(i for i, line in enumerate(lines) if " nodes shown" in line)
    return [
        (col, row) for row, line in enumerate(lines[:end]) for col, c in enumerate(line) if c == ch
    ]


def test_id_zero_is_at_the_top_and_ids_increase_clockwise() -> None:
    lay = Layout(80)
    top, right, bottom, left = (lay.cell(k * QUARTER) for k in range(4))
    cx, cy = lay.centre
    assert top[0] == round(cx) and top[1] < cy  # above the centre
    assert right[1] == round(cy) and right[0] > cx  # a quarter round: to the right
    assert bottom[0] == round(cx) and bottom[1] > cy
    assert left[1] == round(cy) and left[0] < cx
    # An eighth of the way round lies between the top and the right, up and to the right.
    col, row = lay.cell(QUARTER // 2)
    assert top[0] < col < right[0] and top[1] < row < right[1]


def test_text_picture_shows_every_node_the_attached_one_and_chords() -> None:
    nodes, fingers = _ring()
    lines = draw_text(nodes, fingers)
    text = "\n".join(lines)
    assert all(len(line) <= 80 for line in lines)
    # Every node has its label: id prefix and keys ('?' when it did not say).
    for label in ("000000 3", "400000 5", "800000 0", "c00000 ?"):
        assert label in text
    # One attached marker, on the top row of the circle; the others are plain markers.
    (att,) = _find(lines, ATTACHED)
    assert att[1] == min(row for _, row in [*_find(lines, "."), att])
    assert len(_find(lines, NODE)) == 3
    (right,) = [(c, r) for c, r in _find(lines, NODE) if c > att[0] + 10]
    (bottom,) = [(c, r) for c, r in _find(lines, NODE) if r > right[1] + 3]
    assert bottom[0] == att[0]  # straight down from id 0
    # The chord to the opposite node is a vertical line between them.
    assert all(lines[r][att[0]] == "|" for r in range(att[1] + 2, bottom[1] - 1))
    assert "\\" in text and "/" in text  # the chords to the right and left quarters
    assert "4 nodes shown, 8 keys held by 3 ('?': 1 did not say)" in text
    assert "attached node 000000 (127.0.0.1:7000)" in text
    assert "3 fingers of the attached node" in text


@pytest.mark.parametrize("width", [40, 61, 80, 120])
def test_text_picture_fits_the_width(width: int) -> None:
    nodes = [
        RingNode((i * 7919 * ids.RING // 97) % ids.RING, f"10.0.0.{i}:7000", i * 100)
        for i in range(40)
    ]
    nodes[5] = RingNode(nodes[5].node_id, nodes[5].addr, 7, attached=True)
    lines = draw_text(nodes, [n.node_id for n in nodes[::3]], width=width)
    assert all(len(line) <= width for line in lines)
    assert len(_find(lines, ATTACHED)) == 1
    assert "40 nodes shown" in "\n".join(lines)


def test_colour_only_when_asked_and_visible_width_kept() -> None:
    nodes, fingers = _ring()
    plain = draw_text(nodes, fingers)
    assert "\x1b[" not in "\n".join(plain)
    coloured = draw_text(nodes, fingers, color=True)
    assert "\x1b[1;33m@" in "\n".join(coloured)
    assert [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in coloured] == plain


def test_nodes_too_close_share_a_marker_and_say_so() -> None:
    nodes = [RingNode(QUARTER + i, f"127.0.0.1:{7000 + i}", 1) for i in range(3)]
    lines = draw_text([RingNode(0, "127.0.0.1:6999", 0, attached=True), *nodes])
    assert len(_find(lines, "3")) >= 1 and not _find(lines, NODE)
    assert "too close to tell apart" in " ".join(lines)
    assert "no fingers yet" in " ".join(lines)


def test_too_narrow_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 40 columns"):
        draw_text(_ring()[0], width=39)


def test_svg_parses_with_one_circle_per_node_and_the_chords() -> None:
    nodes, fingers = _ring()
    root = ET.fromstring(draw_svg(nodes, fingers))
    assert root.tag == f"{SVG}svg"
    circles = [c for c in root.iter(f"{SVG}circle") if "node" in c.get("class", "").split()]
    assert len(circles) == 4
    attached = [c for c in circles if "attached" in c.get("class", "")]
    assert len(attached) == 1
    # id 0 is drawn at the top: straight above the ring's centre.
    ring = next(c for c in root.iter(f"{SVG}circle") if c.get("class") == "ring")
    assert float(attached[0].get("cx", "")) == pytest.approx(float(ring.get("cx", "")))
    assert float(attached[0].get("cy", "")) < float(ring.get("cy", ""))
    assert len([x for x in root.iter(f"{SVG}line") if x.get("class") == "finger"]) == 3
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == "udpdht ring: 4 nodes, attached node 127.0.0.1:7000"
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "c00000 ?" in texts and "400000 5" in texts


def test_svg_labels_of_nodes_with_close_ids_do_not_overlap() -> None:
    # Nodes a few thousandths of the ring apart used to print their labels on one spot.
    fracs = [0.01, 0.012, 0.014, 0.016, 0.25, 0.26, 0.5, 0.505, 0.51, 0.99, 0.995, 0.998]
    nodes = [RingNode(int(f * ids.RING), f"127.0.0.1:{7000 + i}", i) for i, f in enumerate(fracs)]
    root = ET.fromstring(draw_svg(nodes))
    labels = [t for t in root.iter(f"{SVG}text") if re.fullmatch(r"[0-9a-f]{6} \d+", t.text or "")]
    assert len(labels) == len(nodes)
    for side in ("start", "end"):
        ys = sorted(float(t.get("y", "")) for t in labels if t.get("text-anchor") == side)
        assert all(b - a >= 12.9 for a, b in itertools.pairwise(ys)), (side, ys)
    # each label that had to move is tied to its node by a leader line
    assert any(x.get("class") == "leader" for x in root.iter(f"{SVG}line"))


def test_svg_escapes_addresses() -> None:
    node = RingNode(0, "[::1]:7000&<x>", 1, attached=True)
    ET.fromstring(draw_svg([node]))  # parses: & and < are escaped


def test_from_statuses_takes_leafset_fingers_and_key_counts() -> None:
    def peer(i: int) -> dict[str, str]:
        return {"id": ids.to_hex(i * QUARTER), "addr": f"127.0.0.1:{7000 + i}"}

    me = {
        **peer(0),
        "successors": [peer(1), peer(2)],
        "predecessors": [peer(3)],
        "predecessor": peer(3),
        "fingers": [peer(1), peer(2)],
        "store": {"primary": 4, "replica": 1},
    }
    other = {**peer(1), "store": {"primary": 9, "replica": 0}}
    silent = {"addr": "127.0.0.1:7003", "error": "did not answer"}
    nodes, fingers = from_statuses(me, [other, silent])
    assert [(n.node_id, n.keys, n.attached) for n in nodes] == [
        (0, 4, True),
        (QUARTER, 9, False),
        (2 * QUARTER, None, False),
        (3 * QUARTER, None, False),
    ]
    assert fingers == [QUARTER, 2 * QUARTER]
    # Why a '?': the silent node did not answer; the one the walk never asked was not reached.
    text = " ".join(draw_text(nodes, fingers))
    assert (
        "4 nodes shown, 13 keys held by 2 ('?': 1 not reached by the walk, 1 did not answer)"
        in text
    )
    # A walk cut at --limit 2 (the attached node and one more): the rest are beyond it.
    nodes, _ = from_statuses(me, [other], limit=2)
    assert [n.unknown for n in nodes if n.keys is None] == ["beyond the walk's limit (2)"] * 2
    text = "\n".join(draw_text(nodes, fingers))
    assert "4 nodes shown, 13 keys held by 2 ('?': 2 beyond the walk's limit (2))" in text
    assert "did not" not in text


def test_narrow_picture_keeps_the_attached_label_on_its_row() -> None:
    # A node right beside the attached one, on the side its label goes: the label moves to
    # the inner side of the '@', on the same row, not a row away.
    lay = Layout(40)
    step = ids.RING >> 12
    bottom_left = range(ids.RING // 2 + step, 5 * ids.RING // 8, step)  # labels go to the left
    me_id, beside = next(
        (i, i + step)
        for i in bottom_left
        if lay.cell(i + step) == (lay.cell(i)[0] - 1, lay.cell(i)[1])
    )
    me = RingNode(me_id, "127.0.0.1:7000", 9, attached=True)
    lines = draw_text([me, RingNode(beside, "127.0.0.1:7001", 1)], width=40)
    marker_row = next(i for i, line in enumerate(lines) if "@" in line)
    assert me.label() in lines[marker_row]
    assert lines[marker_row].index("@") < lines[marker_row].index(me.label())


@pytest.mark.slow  # 3 s: a ring of two processes
def test_ring_draw_against_a_real_ring(tmp_path: Path) -> None:
    with node_process() as first, node_process("--bootstrap", first.addr_text) as second:
        for i in range(6):
            assert udpdht("put", "--node", first.addr_text, f"k{i}", "v").returncode == 0

        def drawn() -> str:
            result = udpdht("ring", "--draw", "--node", first.addr_text)
            assert result.returncode == 0, result.stderr
            return result.stdout

        deadline = time.monotonic() + 15
        out = drawn()
        while "2 nodes shown, 6 keys" not in out:  # once the first knows of the second
            assert time.monotonic() < deadline, out
            out = drawn()
        lines = out.splitlines()
        assert "2 nodes shown, 6 keys" in out
        assert all(len(line) <= 80 for line in lines), out
        assert len(_find(lines, ATTACHED)) == 1 and "\x1b[" not in out  # not a terminal
        assert f"{ids.to_hex(first.id)[:6]} " in out and f"{ids.to_hex(second.id)[:6]} " in out
        # The CLI attaches to nothing: the node it asked, in the words of its list ("*")
        assert f"node asked {ids.to_hex(first.id)[:6]} ({first.addr_text})" in out
        assert "attached" not in out

        svg = tmp_path / "ring.svg"
        result = udpdht("ring", "--node", first.addr_text, "--svg", str(svg))
        assert result.returncode == 0 and str(svg) in result.stdout
        root = ET.parse(svg).getroot()
        assert len([c for c in root.iter(f"{SVG}circle") if "node" in c.get("class", "")]) == 2
        title = root.find(f"{SVG}title")
        assert (
            title is not None
            and title.text == f"udpdht ring: 2 nodes, node asked {first.addr_text}"
        )

        bad = udpdht("ring", "--node", first.addr_text, "--svg", str(tmp_path / "no" / "x.svg"))
        assert bad.returncode == 2 and "cannot write" in bad.stderr
        assert "Traceback" not in bad.stderr
        narrow = udpdht("ring", "--draw", "--node", first.addr_text, "--width", "20")
        assert narrow.returncode == 2 and "width must be" in narrow.stderr
        assert json.loads(udpdht("status", "--node", second.addr_text, "--json").stdout)


def test_a_node_in_the_attached_nodes_spot_is_named_in_its_label() -> None:
    # The '@' covers its cell's count: its label names the others in the spot, which get no
    # label of their own (a new user's trial: "c34df0 0 @ c22963 0 (+1 here)", the first
    # label another node's), and the legend promises no count that is not drawn.
    me = RingNode(1 << 150, "127.0.0.1:7000", 3, attached=True)
    twin = RingNode((1 << 150) + (1 << 120), "127.0.0.1:7001", 5)
    far = RingNode(1 << 159, "127.0.0.1:7002", 0)
    lines = draw_text([me, twin, far])
    text = "\n".join(lines)
    assert f"{me.label()} (also here: {twin.label()})" in text
    assert text.count(twin.label()) == 1
    assert "too close to tell apart" not in text
    crowd = [RingNode((1 << 150) + (i << 120), f"127.0.0.1:{7010 + i}", i) for i in (1, 2, 3)]
    text = "\n".join(draw_text([me, *crowd, far]))
    assert f"{me.label()} (+3 here)" in text and crowd[0].label() not in text


def test_the_notes_under_a_picture_fit_its_width(capsys: pytest.CaptureFixture[str]) -> None:
    # A walk's note under the picture (here: a node that does not answer) is one paragraph;
    # it ran to 160 characters past an 80-column picture while a ring's second node joined.
    import argparse
    import asyncio

    from udpdht.cli import show_ring_picture

    def peer(i: int) -> dict[str, str]:
        return {"id": ids.to_hex(i * QUARTER), "addr": f"127.0.0.1:{7000 + i}"}

    me = {
        **peer(0),
        "successors": [peer(1)],
        "predecessors": [peer(1)],
        "predecessor": peer(1),
        "fingers": [],
        "store": {"primary": 4, "replica": 1, "replicas": 3},
    }
    silent = {"addr": "127.0.0.1:7001", "error": "did not answer"}
    args = argparse.Namespace(svg=None, width=50)
    asyncio.run(show_ring_picture(args, me, [silent]))
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 50, lines
    assert "repairing: the keys of a node that does not answer" in " ".join(lines)


def test_key_counts_are_written_as_the_list_writes_them() -> None:
    # An operator's trial: the picture said "4176 keys" where `ring` said "4,176 keys".
    nodes = [RingNode(0, "127.0.0.1:7000", 4000, attached=True), RingNode(QUARTER, "h:1", 176)]
    assert "2 nodes shown, 4,176 keys" in " ".join(draw_text(nodes, []))
