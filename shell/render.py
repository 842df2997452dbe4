"""Pure formatting of what the nodes answer into text for the terminal."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from udpdht import ids, values
from udpdht.lookup import Lookup
from udpdht.text import plural
from udpdht.values import span


def duration(seconds: float) -> str:
    """``12.3 ms`` or ``1.52 s``."""
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def uptime(seconds: float) -> str:
    return span(seconds, tenths=False)


def value_text(value: Any) -> str:
    """A stored value, by the rule of ``udpdht get``: a string as it is, anything else as
    ``(TYPE) JSON`` (bytes: ``(bytes) BASE64``); see :mod:`udpdht.values`."""
    return values.show(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: str = "") -> list[str]:
    """Columns padded to their widest cell; columns whose header is in ``right`` align right."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row[: len(widths)]):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            if i >= len(widths):
                out.append(cell)
            elif headers[i] and headers[i] in right.split():
                out.append(cell.rjust(widths[i]))
            else:
                out.append(cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def _count(n: int, noun: str, many: str | None = None) -> str:
    return plural(n, noun, many)


def _peer(peer: Mapping[str, Any] | None) -> str:
    if peer is None:
        return "-"
    return f"{peer['id'][:8]} {peer['addr']}"


def status_lines(st: Mapping[str, Any]) -> list[str]:
    """A node's status as the shell's ``status`` and ``udpdht status`` show it (``--json`` and
    ``format json`` have every field)."""
    store = st["store"]
    rpc = st["rpc"]
    succs, preds = st["successors"], st["predecessors"]

    def some(peers: Sequence[Mapping[str, Any]]) -> str:
        shown = ", ".join(_peer(p) for p in peers[:3])
        return (shown + (f", … {len(peers)} in all" if len(peers) > 3 else "")) or "-"

    handoff = st.get("handoff")
    if st.get("settled", True):
        state = "settled: its answers for its range count"
    elif handoff and not handoff.get("done") and not handoff.get("error"):
        state = f"taking its range over from {handoff.get('from', '?')}"
    else:
        state = "settling: its neighbourhood changed lately; reads ask the other holders too"
    lines = [
        f"node         {st['id']}",
        f"address      {st['addr']}   (up {uptime(st['uptime_s'])})",
        f"state        {state}",
        f"predecessor  {_peer(st['predecessor'])}",
        f"successors   {some(succs)}",
        f"predecessors {some(preds)}",
        f"fingers      {len(st['fingers'])} distinct",
        f"store        {store['primary']} primary, {store['replica']} replica, "
        f"{store.get('tombstones', 0)} tombstones, {store['bytes']} bytes",
        f"rpc          {rpc.get('sent', 0)} sent, {rpc.get('received', 0)} received, "
        f"{rpc.get('retries', 0)} retries, {rpc.get('timeouts', 0)} timeouts",
    ]
    if st.get("isolated"):
        lines[2] = "state        ISOLATED: lost contact with its ring; rejoining (serves no key)"
    return lines


def ring_lines(
    entries: Sequence[Mapping[str, Any]],
    attached: str,
    labels: Mapping[str, str] | None = None,
) -> list[str]:
    """The ring walk of ``Client.ring()``; ``labels`` names nodes by address (embedded ring)."""
    labels = labels or {}
    rows = []
    primary = copies = 0
    wanted = 1
    for pos, st in enumerate(entries):
        mark = "*" if st["addr"] == attached else " "
        label = labels.get(st["addr"], "")
        if "error" in st:
            rows.append([mark, str(pos), "?", st["addr"], "-", "-", "silent", label])
            continue
        store = st["store"]
        primary += store["primary"]
        copies += store["primary"] + store["replica"]
        wanted = max(wanted, int(store.get("replicas", 1)))
        state = "isolated" if st.get("isolated") else "" if st.get("settled", True) else "settling"
        rows.append(
            [
                mark,
                str(pos),
                st["id"][:8],
                st["addr"],
                str(store["primary"]),
                str(store["replica"]),
                state,
                label,
            ]
        )
    headers = ["", "pos", "id", "address", "primary", "replica", "state", "node" if labels else ""]
    lines = table(headers, rows, right="pos primary replica")
    good = [st for st in entries if "error" not in st]
    summary = f"{_count(len(good), 'node')}, {_count(primary, 'key')}"
    tombstones = sum(int(st["store"].get("tombstones", 0)) for st in good)
    if tombstones:  # counted in primary and replica until purged
        summary += f" (deleted ones included until purged: {tombstones} held)"
    silent = [st["addr"] for st in entries if "error" in st]
    if silent:
        summary += "; not answering: " + ", ".join(silent)
    notes: list[str] = []
    # Right after a change (a node killed, joined or gone) the counts move while repair copies
    # keys to their new holders: say so, rather than let "0 keys" look like a loss.
    short = min(len(good), wanted) * primary - copies
    if silent:
        notes.append(
            "repairing: the keys of a node that does not answer are served by the nodes after "
            "it, and counted again once they take its range over (seconds)"
        )
    elif short > 0:
        notes.append(
            f"repairing: {_count(short, 'copy', 'copies')} of {_count(primary, 'key')} still to "
            f"make ({wanted} wanted of each); the counts settle within seconds"
        )
    elif any(not st.get("settled", True) for st in good):
        notes.append("settling: keys are moving to their holders after a change")
    lines.extend(notes)  # (above the summary, which stays the last line)
    lines.append(summary + "   (* attached)")
    return lines


def lookup_lines(key: str, found: Lookup) -> list[str]:
    lines = [
        f"key    {key!r} -> {ids.short(ids.hash_key(key), 16)}…",
        f"owner  {found.owner}",
    ]
    total = 0.0
    for i, hop in enumerate(found.hops, 1):
        total += hop.rtt_s
        lines.append(f"  hop {i}  {hop.peer}  {duration(hop.rtt_s):>9}")
    if found.hops:
        lines.append(f"{_count(len(found.hops), 'hop')}, {duration(total)} of round trips")
    else:
        lines.append("0 hops: the attached node knew the owner from its own tables")
    if found.successors:
        lines.append(
            "next   "
            + ", ".join(str(p) for p in found.successors[:3])
            + "   (the nodes after the owner: its copies go to the first ones)"
        )
    return lines


def leafset_lines(st: Mapping[str, Any]) -> list[str]:
    lines = [f"leafset of {st['id'][:8]} {st['addr']}"]
    for title, peers in (("successors", st["successors"]), ("predecessors", st["predecessors"])):
        lines.append(f"{title} ({len(peers)})")
        if not peers:
            lines.append("  none: this node is alone")
        for i, peer in enumerate(peers, 1):
            lines.append(f"  {i:>2}  {_peer(peer)}")
    return lines


def finger_distance(own_hex: str, peer_hex: str) -> str:
    """How far clockwise a finger is from the node, as a power of two: ``2^157.3``."""
    gap = ids.distance(int(own_hex, 16), int(peer_hex, 16))
    return f"2^{math.log2(gap):.1f}" if gap > 0 else "0"


def fingers_lines(st: Mapping[str, Any]) -> list[str]:
    fingers = st["fingers"]
    if not fingers:
        return [f"{st['id'][:8]} has no fingers yet (maintenance fills them in)"]
    rows = [
        [str(i), f["id"][:8], f["addr"], finger_distance(st["id"], f["id"])]
        for i, f in enumerate(fingers, 1)
    ]
    lines = table(["#", "id", "address", "distance"], rows, right="# distance")
    lines.append(f"{len(fingers)} distinct fingers of {st['id'][:8]} {st['addr']}")
    return lines


def stats_lines(st: Mapping[str, Any]) -> list[str]:
    rpc: Mapping[str, Any] = st["rpc"]
    store: Mapping[str, Any] = st["store"]
    width = max(len(k) for k in [*rpc, *store, "uptime"])
    lines = [f"rpc counters of {st['id'][:8]} {st['addr']}"]
    lines += [f"  {name:<{width}}  {value:>10}" for name, value in rpc.items()]
    lines.append("store")
    lines += [f"  {name:<{width}}  {value:>10}" for name, value in store.items()]
    return lines


@dataclass(frozen=True)
class NodeRow:
    """One embedded node as ``nodes list`` shows it."""

    index: int
    addr: str
    node_id: str  # hex
    state: str  # up, killed, left
    attached: bool
    primary: int | None = None
    replica: int | None = None


def nodes_lines(rows: Sequence[NodeRow]) -> list[str]:
    cells = [
        [
            "*" if r.attached else " ",
            str(r.index),
            r.node_id[:8],
            r.addr,
            r.state,
            "-" if r.primary is None else str(r.primary),
            "-" if r.replica is None else str(r.replica),
        ]
        for r in rows
    ]
    lines = table(
        ["", "#", "id", "address", "state", "primary", "replica"], cells, "# primary replica"
    )
    up = sum(r.state == "up" for r in rows)
    lines.append(f"{up} of {len(rows)} embedded nodes up   (* attached)")
    return lines
