"""A picture of the ring: text for the terminal, or SVG. Pure: no I/O, no clock.

The id circle is drawn as a clock face: id 0 at the top, ids increasing clockwise, each node at
the angle ``2π · id / 2^160``. The attached node is highlighted and its fingers are drawn as
chords from it. The caller gathers the nodes (``udpdht draw``, the shell's ``ring``);
:func:`from_statuses` turns status objects (PROTOCOL.md section 8) into this module's input.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from . import ids

DEFAULT_WIDTH = 80
MIN_WIDTH = 40
ID_DIGITS = 6  # hex digits of an id in a label

ATTACHED = "@"
NODE = "o"
ATTACHED_NODE = "attached node"  # what the legend calls the node highlighted: the shell's words
ASKED_NODE = "node asked"  # ... and the CLI's (it attaches to nothing: "* the node asked")
OUTLINE = "."
ORIENTATION = "id 0 at the top, ids increase clockwise"

_ANSI = {
    "attached": "\x1b[1;33m",  # bold yellow
    "chord": "\x1b[36m",  # cyan
    "outline": "\x1b[2m",  # dim
    "node": "\x1b[1m",  # bold
}
_RESET = "\x1b[0m"


@dataclass(frozen=True)
class RingNode:
    """One node to draw: ``keys`` is how many keys it holds as primary (None: unknown, and
    ``unknown`` says why: "did not answer", "beyond the walk's limit", ...)."""

    node_id: int
    addr: str
    keys: int | None = None
    attached: bool = False
    unknown: str = "did not say"

    def label(self) -> str:
        keys = "?" if self.keys is None else str(self.keys)
        return f"{ids.to_hex(self.node_id)[:ID_DIGITS]} {keys}"


def angle(node_id: int) -> float:
    """The clockwise angle of ``node_id`` from the top, in radians: 0 at id 0."""
    return 2 * math.pi * (node_id / ids.RING)


def point(node_id: int, cx: float, cy: float, rx: float, ry: float) -> tuple[float, float]:
    """Where ``node_id`` sits on an ellipse centred at (cx, cy), y growing downwards."""
    theta = angle(node_id)
    return cx + rx * math.sin(theta), cy - ry * math.cos(theta)


@dataclass(frozen=True)
class Layout:
    """The character grid of a text picture ``width`` columns wide (2:1, as cells are tall)."""

    width: int

    @property
    def label_room(self) -> int:
        return ID_DIGITS + 6  # "3fa2c1 12345" and a space either side

    @property
    def rx(self) -> float:
        return (self.width - 1 - 2 * self.label_room) / 2

    @property
    def ry(self) -> float:
        return self.rx / 2

    @property
    def height(self) -> int:
        return round(2 * self.ry) + 3  # a row above and below for labels

    @property
    def centre(self) -> tuple[float, float]:
        return (self.width - 1) / 2, (self.height - 1) / 2

    def cell(self, node_id: int) -> tuple[int, int]:
        """The (column, row) of ``node_id``."""
        x, y = point(node_id, *self.centre, self.rx, self.ry)
        return round(x), round(y)


def _line_cells(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """Bresenham's cells from ``a`` to ``b``, both ends included."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    out = []
    for _ in range(dx - dy + 1):  # at most that many steps
        out.append((x0, y0))
        if (x0, y0) == (x1, y1):
            break
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy
    return out


def _chord_char(a: tuple[int, int], b: tuple[int, int]) -> str:
    """The character that looks like the line from ``a`` to ``b`` (a row is two columns tall)."""
    dx, dy = b[0] - a[0], (b[1] - a[1]) * 2
    slope = math.degrees(math.atan2(-dy, dx)) % 180
    if slope < 22.5 or slope >= 157.5:
        return "-"
    if slope < 67.5:
        return "/"
    if slope < 112.5:
        return "|"
    return "\\"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"  # (4,176 keys, as the list says)


def _summary(nodes: Sequence[RingNode]) -> str:
    known = [n.keys for n in nodes if n.keys is not None]
    text = f"{_count(len(nodes), 'node')} shown, {_count(sum(known), 'key')}"
    why: dict[str, int] = {}
    for n in nodes:
        if n.keys is None:
            why[n.unknown] = why.get(n.unknown, 0) + 1
    if why:
        text += f" held by {len(known)} ('?': " + ", ".join(f"{k} {w}" for w, k in why.items())
        text += ")"
    return text


def _legend(
    nodes: Sequence[RingNode], fingers: Sequence[int], who: str, shared: bool = False
) -> list[str]:
    me = next((n for n in nodes if n.attached), None)
    first = f"{NODE} a node"
    if me is not None:
        short = ids.to_hex(me.node_id)[:ID_DIGITS]
        first = f"{ATTACHED} {who} {short} ({me.addr}), {first}"
    if shared:
        first += ", 2-9 (+): nodes too close to tell apart"
    chords = (
        f"lines: {_count(len(fingers), 'finger')} of the {who}"
        if fingers
        else f"the {who} has no fingers yet"
    )
    return [first, f"labels: id prefix, keys held as primary; {chords}", ORIENTATION]


def _unique(nodes: Iterable[RingNode]) -> list[RingNode]:
    seen: dict[int, RingNode] = {}
    for n in nodes:
        if n.node_id not in seen or n.attached:
            seen[n.node_id] = n
    return sorted(seen.values(), key=lambda n: n.node_id)


def draw_text(
    nodes: Sequence[RingNode],
    fingers: Sequence[int] = (),
    *,
    width: int = DEFAULT_WIDTH,
    color: bool = False,
    who: str = ATTACHED_NODE,
) -> list[str]:
    """The ring as lines of at most ``width`` visible characters (ANSI colours if ``color``);
    ``who``: what the legend calls the highlighted node (the CLI's is the node asked)."""
    if width < MIN_WIDTH:
        raise ValueError(f"a picture needs at least {MIN_WIDTH} columns, not {width}")
    nodes = _unique(nodes)
    lay = Layout(width)
    grid = [[" "] * width for _ in range(lay.height)]
    style: list[list[str | None]] = [[None] * width for _ in range(lay.height)]

    def put(col: int, row: int, ch: str, kind: str | None) -> None:
        if 0 <= row < lay.height and 0 <= col < width:
            grid[row][col] = ch
            style[row][col] = kind

    me = next((n for n in nodes if n.attached), None)
    chord_ends = sorted({f for f in fingers if me is None or f != me.node_id})
    # Chords first: the outline, the markers and the labels are drawn over them.
    if me is not None:
        start = lay.cell(me.node_id)
        for finger in chord_ends:
            end = lay.cell(finger)
            ch = _chord_char(start, end)
            for col, row in _line_cells(start, end)[1:-1]:
                put(col, row, ch, "chord")
    cx, cy = lay.centre
    steps = max(64, int(8 * (lay.rx + lay.ry)))
    for i in range(steps):
        x = cx + lay.rx * math.sin(2 * math.pi * i / steps)
        y = cy - lay.ry * math.cos(2 * math.pi * i / steps)
        col, row = round(x), round(y)
        if grid[row][col] == " ":
            put(col, row, OUTLINE, "outline")
    # Markers: a cell several nodes share shows how many; the attached node's always shows.
    taken: set[tuple[int, int]] = set()
    per_cell: dict[tuple[int, int], int] = {}
    for n in nodes:
        per_cell[lay.cell(n.node_id)] = per_cell.get(lay.cell(n.node_id), 0) + 1
    for (col, row), count in per_cell.items():
        put(col, row, NODE if count == 1 else (str(count) if count < 10 else "+"), "node")
        taken.add((col, row))
    if me is not None:
        put(*lay.cell(me.node_id), ATTACHED, "attached")
    # Labels outside the circle, next to their node; one that finds no room is left out.
    # The nodes in the attached node's spot are named in its label, not in labels of their
    # own: the '@' covers their count, and a label of theirs beside it read as the attached
    # node's (a new user's trial: "c34df0 0 @ c22963 0 (+1 here)").
    my_cell = lay.cell(me.node_id) if me is not None else None
    with_me = [n for n in nodes if not n.attached and lay.cell(n.node_id) == my_cell]
    left_out = 0
    order = sorted(nodes, key=lambda n: not n.attached)  # the attached node's label first
    for n in order:
        if n in with_me:
            continue
        text = n.label()
        col, row = lay.cell(n.node_id)
        if n.attached and with_me:
            named = ", ".join(m.label() for m in with_me)
            fits = len(with_me) <= 2 and len(text) + len(named) + 14 <= width // 2
            text += f" (also here: {named})" if fits else f" (+{len(with_me)} here)"
        right = math.sin(angle(n.node_id)) >= -1e-9
        first = col + 2 if right else col - 1 - len(text)
        outward = -1 if row <= cy else 1
        spots = [(row, first)]
        if n.attached:  # on its own row, on the inner side, rather than a row off its marker
            spots.append((row, col - 1 - len(text) if right else col + 2))
        spots += [(row + outward * k, first) for k in (1, 2)]
        spots += [(row - outward, first)]
        for r, c in spots:
            cells = [(c + i, r) for i in range(-1, len(text) + 1)]
            if not (0 <= r < lay.height and c >= 0 and c + len(text) <= width):
                continue
            if any(cell in taken for cell in cells):
                continue
            for i, ch in enumerate(text):
                put(c + i, r, ch, "attached" if n.attached else None)
            taken.update(cells)
            break
        else:
            left_out += 1

    lines = []
    for row in range(lay.height):
        if not color:
            lines.append("".join(grid[row]).rstrip())
            continue
        out, current = [], None
        for ch, kind in zip(grid[row], style[row], strict=True):
            if kind != current:
                out.append(_RESET if current else "")
                out.append(_ANSI[kind] if kind else "")
                current = kind
            out.append(ch)
        if current:
            out.append(_RESET)
        lines.append("".join(out).rstrip())
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    summary = _summary(nodes)
    if left_out:
        summary += f"; {_count(left_out, 'label')} left out (no room)"
    # (The attached node's spot shows '@', never its count: that count is in its label.)
    shared = any(count > 1 for cell, count in per_cell.items() if cell != my_cell)
    for paragraph in [summary, *_legend(nodes, chord_ends, who, shared)]:
        lines.extend(textwrap.wrap(paragraph, width))
    return lines


LABEL_GAP = 13.0  # px between the baselines of two labels on one side (font-size 11)


def _label_places(
    nodes: Sequence[RingNode], cx: float, cy: float, r: float, *, bottom: float
) -> dict[int, tuple[float, float, str, bool]]:
    """Where each node's label goes: (x, baseline y, text-anchor, moved). Labels sit just
    outside the circle, on the right for the right half, on the left for the left half; on each
    side they are spread so that no two are closer than LABEL_GAP (nodes with close ids would
    print their labels on top of each other), and ``moved`` says a label left its spot."""
    sides: dict[str, list[tuple[float, float, int]]] = {"start": [], "end": []}
    for n in nodes:
        theta = angle(n.node_id)
        lx, ly = point(n.node_id, cx, cy, r + 14, r + 14)
        ly += 4 + (4 if math.cos(theta) < -0.5 else 0)
        sides["start" if math.sin(theta) >= 0 else "end"].append((ly, lx, n.node_id))
    places: dict[int, tuple[float, float, str, bool]] = {}
    for anchor, items in sides.items():
        items.sort()
        ys = [y for y, _, _ in items]
        for i in range(1, len(ys)):  # push down what is too close to the one above
            ys[i] = max(ys[i], ys[i - 1] + LABEL_GAP)
        if ys and ys[-1] > bottom:  # past the room below the circle: push up from there
            ys[-1] = bottom
            for i in range(len(ys) - 2, -1, -1):
                ys[i] = min(ys[i], ys[i + 1] - LABEL_GAP)
        for (y0, x, node_id), y in zip(items, ys, strict=True):
            moved = abs(y - y0) > 1.0
            if moved:  # keep clear of the circle: as far out as the label's new height needs
                dy = min(abs(y - cy), r + 14)
                reach = math.sqrt(max((r + 14) ** 2 - dy**2, 0.0)) + 12
                x = cx + reach if anchor == "start" else cx - reach
            places[node_id] = (x, y, anchor, moved)
    return places


def draw_svg(
    nodes: Sequence[RingNode],
    fingers: Sequence[int] = (),
    *,
    size: int = 640,
    who: str = ATTACHED_NODE,
) -> str:
    """The same picture as an SVG document (a string)."""
    nodes = _unique(nodes)
    me = next((n for n in nodes if n.attached), None)
    chord_ends = sorted({f for f in fingers if me is None or f != me.node_id})
    top = 50  # the title
    r = size / 2 - 110  # room for the labels
    cx, cy = size / 2, top + r + 45
    legend = [_summary(nodes), *_legend(nodes, chord_ends, who)]
    height = round(cy + r + 45 + 15 * len(legend))
    title = f"udpdht ring: {_count(len(nodes), 'node')}"
    if me is not None:
        title += f", {who} {me.addr}"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{height}"'
        f' viewBox="0 0 {size} {height}" font-family="monospace" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{size}" height="{height}" fill="white"/>',
        f'<text x="{cx:.1f}" y="28" text-anchor="middle" font-size="16">{escape(title)}</text>',
        f'<circle class="ring" cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="none"'
        ' stroke="#999" stroke-width="1.5"/>',
        f'<line x1="{cx:.1f}" y1="{cy - r:.1f}" x2="{cx:.1f}" y2="{cy - r + 8:.1f}"'
        ' stroke="#999"/>',
        f'<text x="{cx:.1f}" y="{cy - r + 22:.1f}" text-anchor="middle" fill="#999">id 0</text>',
    ]
    if me is not None:
        x0, y0 = point(me.node_id, cx, cy, r, r)
        for finger in chord_ends:
            x1, y1 = point(finger, cx, cy, r, r)
            out.append(
                f'<line class="finger" x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}"'
                ' stroke="#1f77b4" stroke-width="1.2" stroke-opacity="0.8"/>'
            )
    places = _label_places(nodes, cx, cy, r, bottom=cy + r + 30)
    for n in nodes:
        x, y = point(n.node_id, cx, cy, r, r)
        lx, ly, anchor, moved = places[n.node_id]
        if moved:  # pushed off its spot by a neighbour's label: a leader line back to the node
            ex, ey = point(n.node_id, cx, cy, r + 10, r + 10)
            out.append(
                f'<line class="leader" x1="{ex:.1f}" y1="{ey:.1f}" x2="{lx:.1f}" y2="{ly - 4:.1f}"'
                ' stroke="#bbb" stroke-width="0.8"/>'
            )
        kind, radius, fill = ("node attached", 8, "#d62728") if n.attached else ("node", 5, "#333")
        tip = f"{ids.to_hex(n.node_id)} {n.addr}"
        tip += "" if n.keys is None else f", {_count(n.keys, 'key')} as primary"
        out.append(
            f'<circle class={quoteattr(kind)} cx="{x:.1f}" cy="{y:.1f}" r="{radius}" '
            f'fill="{fill}"><title>{escape(tip)}</title></circle>'
        )
        weight = ' font-weight="bold" fill="#d62728"' if n.attached else ""
        out.append(
            f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}"{weight}>'
            f"{escape(n.label())}</text>"
        )
    for i, text in enumerate(legend):
        y = round(cy + r + 45 + 15 * i)
        words = text.replace(f"{ATTACHED} ", "red: ", 1).replace(f"{NODE} a node", "dark: a node")
        out.append(f'<text x="10" y="{y}">{escape(words)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def from_statuses(
    attached: Mapping[str, Any],
    others: Iterable[Mapping[str, Any]] = (),
    *,
    limit: int | None = None,
) -> tuple[list[RingNode], list[int]]:
    """The nodes and fingers to draw from status objects.

    ``attached``: the attached node's status; ``others``: the status of other nodes (entries
    with an ``error`` and no ``id`` did not answer). The nodes are the attached one, its
    leafset, its fingers and every other node given; a node whose status is not given has
    unknown keys, and says why: it did not answer, or the walk did not reach it (``limit``:
    the walk's, when it stopped there).
    """
    keys: dict[str, int | None] = {}
    found: dict[str, str] = {}  # id hex -> addr
    others = list(others)
    silent = {st["addr"] for st in others if "error" in st}
    for st in [attached, *others]:
        if "id" not in st or "store" not in st:
            continue
        keys[st["id"]] = int(st["store"]["primary"])
        found[st["id"]] = st["addr"]
    walked = 1 + len(others)
    cut = limit is not None and walked >= limit
    beyond = f"beyond the walk's limit ({limit})" if cut else "not reached by the walk"
    peers = [*attached["successors"], *attached["predecessors"], *attached["fingers"]]
    if attached.get("predecessor"):
        peers.append(attached["predecessor"])
    for peer in peers:
        found.setdefault(peer["id"], peer["addr"])
    nodes = [
        RingNode(
            ids.from_hex(h),
            addr,
            keys.get(h),
            attached=h == attached["id"],
            unknown="did not answer" if addr in silent else beyond,
        )
        for h, addr in found.items()
    ]
    fingers = [ids.from_hex(f["id"]) for f in attached["fingers"]]
    return _unique(nodes), fingers
