"""Pure formatting of what the nodes answer into text for the terminal: the shell and the CLI
print the same words."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import ids, values
from .limits import STARTING_FOR
from .lookup import Lookup
from .text import plural
from .values import span


def duration(seconds: float) -> str:
    """``12.3 ms``, ``1.52 s``, ``0.08 ms`` below a millisecond; ``< 1 ms`` for 0, which is
    what uvloop's clock (whole milliseconds) gives a round trip on one machine."""
    if seconds <= 0.0:
        return "< 1 ms"
    if seconds < 0.001:
        return f"{seconds * 1000:.2g} ms"
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


#: How status names each build (its ``build``; README "A compiled build").
BUILDS = {
    "compiled": "compiled: its RPC layer compiled by mypyc",
    "pure": "pure Python",
    "sources": "the sources: a compiled build is there but not loaded",
}


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
        state = "ready: in its place in the ring, it answers for its keys"
    elif handoff and not handoff.get("done") and not handoff.get("error"):
        state = f"taking its range over from {handoff.get('from', '?')}"
    else:
        state = "settling: its neighbourhood changed lately; reads ask the other holders too"
    tombstones = int(store.get("tombstones", 0))
    deleted = f"{tombstones} of them deleted (kept until purged), " if tombstones else ""
    lines = [
        f"node         {st['id']}",
        f"address      {st['addr']}   (up {uptime(st['uptime_s'])})",
        f"state        {state}",
        f"predecessor  {_peer(st['predecessor'])}",
        f"successors   {some(succs)}",
        f"predecessors {some(preds)}",
        f"fingers      {len(st['fingers'])} distinct",
        *_view_line(st.get("view")),
        f"store        {_count(store['primary'], 'key')} as primary, {store['replica']} as "
        f"replica, {deleted}{_count(store['bytes'], 'byte')}"
        + _quota_words(store)
        + _full_words(store),
        f"rpc          {rpc.get('sent', 0)} sent, {rpc.get('received', 0)} received, "
        f"{rpc.get('retries', 0)} retries, {rpc.get('timeouts', 0)} timeouts",
    ]
    if isinstance(st.get("build"), str):  # (README "A compiled build"; older nodes: none)
        lines.append(f"build        {BUILDS.get(st['build'], st['build'])}")
    if st.get("isolated"):
        up = st.get("uptime_s")
        if _starting(st) and isinstance(up, int | float):  # (a restart: not "lost")
            lines[2] = (
                f"state        isolated: it started {up:.1f} s ago and is rejoining its ring; "
                "it serves no key until it has"
            )
        else:
            lines[2] = f"state        isolated: {ISOLATED_HINT}"
    if st.get("data_dir_lost"):
        lines.append(_lost_line(st.get("lost_path"), st.get("store_file_lost")))
    return lines


def _lost_line(path: Any, store_file: Any) -> str:
    """Status's line for a data dir, or the store's file in it, removed or moved under the
    node (``lost_path``, ``store_file_lost``; a node too old to say names neither)."""
    if not isinstance(path, str):
        what = "it or its store's file was removed or moved"
    elif store_file is True:
        what = f"its store's file {path} was removed, moved or replaced"
    else:
        what = f"{path} was removed or moved"
    return (
        f"data dir     LOST: {what} while the node runs; a start from its data dir would begin "
        "empty (its log says what to do)"
    )


def _view_line(view: Any) -> list[str]:
    """The ring view's line of status (none from a node too old to say)."""
    if not isinstance(view, Mapping) or type(view.get("nodes")) is not int:
        return []
    walks, ago = view.get("walks"), view.get("last_walk_s")
    line = f"ring view    {_count(view['nodes'], 'node')} known (leafset, and heard from lately)"
    if type(walks) is int and walks > 0 and isinstance(ago, int | float):
        times = "once" if walks == 1 else f"{walks} times"
        line += f"; walked round the ring {times}, the last {uptime(ago)} ago"
    return [line]


def _starting(st: Mapping[str, Any]) -> bool:
    """Whether a node's status says it is rejoining right after its start, not cut off from
    its ring (``starting``; a node too old to say it: started within STARTING_FOR)."""
    if "starting" in st:
        return st["starting"] is True
    up = st.get("uptime_s")
    return isinstance(up, int | float) and up < STARTING_FOR


#: What an isolated node means, and the way out when its ring is gone for good.
ISOLATED_HINT = (
    "it lost contact with its ring and serves no key until it rejoins; if the rest of its "
    "ring is gone for good, restart it with 'udpdht node --new-ring' (it keeps its data)"
)


def walk_cut(entries: Sequence[Mapping[str, Any]], limit: int) -> bool:
    """Whether a ring walk of at most ``limit`` entries stopped at the limit, not where the
    ring closes."""
    if len(entries) < limit or not entries:
        return False
    last = entries[-1]
    succs = last.get("successors") or []
    return "error" in last or not succs or succs[0]["addr"] != entries[0]["addr"]


def _joining(entries: Sequence[Mapping[str, Any]], cut: bool) -> list[str]:
    """Nodes a walk did not reach though a node of it names them its predecessor: nodes that
    are joining (the node before them does not know them yet)."""
    walked = {st["addr"] for st in entries}
    good = [st for st in entries if "error" not in st]
    pairs = list(itertools.pairwise(good))
    if not cut and len(good) > 1:
        pairs.append((good[-1], good[0]))
    found = []
    for before, st in pairs:
        pred = st.get("predecessor")
        if pred and pred["addr"] not in walked and pred["addr"] != before["addr"]:
            found.append(f"{pred['addr']} (before {st['addr']})")
    return found


def _by_range(good: Sequence[Mapping[str, Any]]) -> int:
    """The keys of a walk's nodes whose statuses name their holdings by range (status
    ``replica_of``: each node names how many records it holds of each of its predecessors'
    ranges): a range's keys are the most that its primary or any other holder counts.

    So a range counts what its copies hold while its primary lacks some (a node joining,
    whose hand-off is under way; a full primary that refused them), and so does the range of
    a primary that did not answer the walk (a node stopped) while its successor still names
    it its predecessor (once it names another, it holds that range as primary and counts it
    there: a new user's trial saw 50 keys of 40 for 2 s). Copies past r (strays not moved yet
    after a change) add nothing: dividing all copies by r counted them, 37 keys of 31 for a
    second after a node restarted on its data dir (a new user's trial); and after a crash,
    when a key has one copy fewer until repair makes it, it counted a third of them."""
    answered = {st["addr"] for st in good}
    named = {(st.get("predecessor") or {}).get("addr") for st in good}
    ranges = {st["addr"]: int(st["store"]["primary"]) for st in good}
    for st in good:
        for addr, records in replica_of(st["store"]):
            if addr in answered or addr in named:
                ranges[addr] = max(ranges.get(addr, 0), records)
    return sum(ranges.values())


def replica_of(store: Mapping[str, Any]) -> list[tuple[str, int]]:
    """A status's ``store.replica_of`` pairs (address, records); entries that are not such a
    pair are left out (a peer's word, shown and added up here)."""
    items = store.get("replica_of")
    if type(items) is not list:
        return []
    return [
        (item[0], item[1])
        for item in items
        if type(item) is list
        and len(item) == 2
        and type(item[0]) is str
        and type(item[1]) is int
        and item[1] >= 0
    ]


def key_total(entries: Sequence[Mapping[str, Any]], limit: int | None = None) -> int:
    """The keys a ring walk (``Client.ring()``, ``limit`` as there) counts: those held as
    primary, and while a node joins or takes a range over, those not yet held by their new
    primary, from their copies. Deleted keys count until their tombstones are purged."""
    good = [st for st in entries if "error" not in st]
    primary = sum(int(st["store"]["primary"]) for st in good)
    if limit is not None and walk_cut(entries, limit):
        return primary  # (a walk cut short saw only some holders of its keys: no estimate)
    stores = [st["store"] for st in good]
    if any("replica_of" in s for s in stores):
        return _by_range(good)
    if not any("replicas" in s for s in stores):  # (r: how many copies at most; older nodes)
        return primary
    # Nodes from before replica_of: each key has at most `per_key` copies; while a key's new
    # owner has not taken it over (a node joining), its copies still show that it exists.
    copies = sum(int(s["primary"]) + int(s["replica"]) for s in stores)
    wanted = max([1, *(int(s.get("replicas", 1)) for s in stores)])
    per_key = max(1, min(len(good), wanted))
    return max(primary, -(-copies // per_key))


def ring_lines(
    entries: Sequence[Mapping[str, Any]],
    attached: str,
    labels: Mapping[str, str] | None = None,
    *,
    limit: int | None = None,
    marked: str = "attached",
    notes_only: bool = False,
) -> list[str]:
    """The ring walk of ``Client.ring()``; ``labels`` names nodes by address (embedded ring);
    ``limit``: the walk's, to say when it stopped there rather than where the ring closes;
    ``marked``: what the ``*`` marks (the shell's attached node, the node the CLI asked);
    ``notes_only``: the notes alone (what is under way, why counts differ), without the table
    and the summary (under a picture of the same walk)."""
    cut = limit is not None and walk_cut(entries, limit)
    notes = _ring_notes(entries, cut, key_total(entries, limit))
    if notes_only:
        return notes
    labels = labels or {}
    headers = ["", "pos", "id", "address", "primary", "replica", "state", "node" if labels else ""]
    lines = table(headers, _ring_rows(entries, attached, labels), right="pos primary replica")
    lines.extend(notes)  # (above the summary, which stays the last line)
    lines.append(_ring_summary(entries, limit, cut) + f"   (* {marked})")
    return lines


def _ring_rows(
    entries: Sequence[Mapping[str, Any]], attached: str, labels: Mapping[str, str]
) -> list[list[str]]:
    """One row a node of the walk: mark, position, id, address, key counts, state, label."""
    rows = []
    for pos, st in enumerate(entries):
        mark = "*" if st["addr"] == attached else " "
        label = labels.get(st["addr"], "")
        if "error" in st:
            rows.append([mark, str(pos), "?", st["addr"], "-", "-", "silent", label])
            continue
        store = st["store"]
        state = "isolated" if st.get("isolated") else "" if st.get("settled", True) else "settling"
        if store.get("full") and not st.get("isolated"):
            state = "full"  # (it refuses copies: that lasts, where settling passes)
        primary, replica = str(store["primary"]), str(store["replica"])
        rows.append([mark, str(pos), st["id"][:8], st["addr"], primary, replica, state, label])
    return rows


def _ring_summary(entries: Sequence[Mapping[str, Any]], limit: int | None, cut: bool) -> str:
    """The last line: nodes, keys, tombstones, the nodes that did not answer."""
    good = [st for st in entries if "error" not in st]
    keys = key_total(entries, limit)
    if cut:
        summary = (
            f"{_count(len(good), 'node')} listed (the walk stops at {limit}; the ring has "
            f"more), {_count(keys, 'key')} held as primary by {'it' if len(good) == 1 else 'them'}"
        )
    else:
        summary = f"{_count(len(good), 'node')}, {_count(keys, 'key')}"
    tombstones = sum(int(st["store"].get("tombstones", 0)) for st in good)
    if tombstones:  # counted in primary and replica until purged
        summary += (
            f" (deleted keys are counted until purged: {_count(tombstones, 'tombstone')} held, "
            "copies included)"
        )
    silent = [st["addr"] for st in entries if "error" in st]
    if silent:
        summary += "; not answering: " + ", ".join(silent)
    return summary


def _ring_notes(entries: Sequence[Mapping[str, Any]], cut: bool, keys: int) -> list[str]:
    """What the walk shows under way (joining, isolated, repairing, settling, full), or that
    nothing is: right after a change the counts move while repair copies keys to their new
    holders, and "0 keys" must not look like a loss. ``keys``: key_total's."""
    good = [st for st in entries if "error" not in st]
    silent = [st["addr"] for st in entries if "error" in st]
    primary = sum(int(st["store"]["primary"]) for st in good)
    copies = primary + sum(int(st["store"]["replica"]) for st in good)
    wanted = max([1, *(int(st["store"].get("replicas", 1)) for st in good)])
    known = any("replicas" in st["store"] for st in good)  # (r: how many copies at most)
    notes: list[str] = []
    each = min(len(good), wanted)  # copies of each key the ring can hold (a ring of 2: 2)
    short = each * primary - copies
    full = [st["addr"] for st in good if st["store"].get("full")]  # (their quota refuses copies)
    joining = _joining(entries, cut)
    if joining:
        # A predecessor the walk did not reach is a node joining, or one that stopped and that
        # its successor has not given up on yet: the walk cannot tell which without asking.
        notes.append(
            "not reached by the walk: "
            + ", ".join(joining)
            + ", named by "
            + ("its successor" if len(joining) == 1 else "their successors")
            + " (a node joining, or one that just stopped); the ring settles within seconds"
        )
    isolated = [st["addr"] for st in good if st.get("isolated")]
    if isolated:
        # (Its keys have no primary while it is cut off: not a range being taken over.)
        one = len(isolated) == 1
        it, its, has = ("it", "its", "has") if one else ("they", "their", "have")
        # A node restarted a moment ago is rejoining, not cut off (as in status).
        starting = all(_starting(st) for st in good if st.get("isolated"))
        what = f"{'is' if one else 'are'} rejoining" if starting else f"{has} lost contact with"
        notes.append(
            f"isolated: {', '.join(isolated)} {what} {its} ring and "
            f"serve{'s' if one else ''} no key until {it} rejoin{'s' if one else ''}; the keys "
            f"counted are those {it} still hold{'s' if one else ''}"
        )
    elif silent:
        notes.append(
            "repairing: the keys of a node that does not answer are served by the nodes after "
            "it, which take its range over within seconds"
            + (
                f" ({_count(keys - primary, 'key')} counted from copies meanwhile)"
                if keys > primary
                else ""
            )
        )
    elif keys > primary and full:
        # A full primary refused them (a join's hand-off, a write): no one is taking its range
        # over, so "settling" would promise what does not come (a new user's trial).
        one, lacking = len(full) == 1, keys - primary
        whose = "its" if lacking == 1 else "their"
        notes.append(
            f"under-replicated: {_count(lacking, 'key')} without {whose} primary's copy, "
            f"counted from the others: {', '.join(full)} {'is' if one else 'are'} "
            f"full (its quota or its disk) and refuse{'s' if one else ''} them; repair makes them "
            f"once {'it has' if one else 'they have'} room"
        )
    elif keys > primary:
        notes.append(
            f"settling: {_count(keys - primary, 'key')} without a primary in this walk yet "
            "(a node is taking its range over), counted from their copies"
        )
    elif short > 0 and keys == primary and not cut and full:
        # Repair cannot make the copies a full node refuses: "settle within seconds" would
        # promise what does not come. Name it instead.
        one = len(full) == 1
        notes.append(
            f"under-replicated: {_count(short, 'copy', 'copies')} of {_count(primary, 'key')} "
            f"missing ({each} wanted of each): {', '.join(full)} {'is' if one else 'are'} full "
            f"(its quota or its disk) and refuse{'s' if one else ''} them; repair makes them once "
            f"{'it has' if one else 'they have'} room"
        )
    elif short > 0 and keys == primary and not cut:
        notes.append(
            f"repairing: {_count(short, 'copy', 'copies')} of {_count(primary, 'key')} still to "
            f"make ({each} wanted of each); the counts settle within seconds"
        )
    elif keys == primary and any(not st.get("settled", True) for st in good):
        notes.append("settling: keys are moving to their holders after a change")
    elif not cut and good and all("settled" in st for st in good):
        # Nothing under way: say so, rather than leave "whole" to the notes' absence (a new
        # user's trial). (Older nodes' status has no "settled": no word either way.)
        made = "with every copy made"
        if known and 0 < len(good) < wanted:  # (a ring smaller than r: fewer copies, not missing)
            made += (
                f" ({'the one node holds' if len(good) == 1 else f'its {len(good)} nodes hold'} "
                f"{'the only copy' if len(good) == 1 else f'{len(good)} copies'} of each key; "
                f"{wanted} once the ring has {wanted} nodes)"
            )
        notes.append(f"settled: every node answered and holds its range, {made}")
    return notes


def lookup_lines(key: str, found: Lookup, asker: str = "the attached node") -> list[str]:
    """A lookup's owner and hops; ``asker``: who routed it, as the reader knows it."""
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
        lines.append(f"0 hops: {asker} knew the owner from its own tables")
    if found.successors:
        lines.append(
            "next   "
            + ", ".join(str(p) for p in found.successors[:3])
            + "   (the nodes after the owner: its copies go to the first ones)"
        )
    return lines


KEY_WIDTH = 40  # columns of a key in the keys table; a longer one is shortened with "…"


def key_text(key: bytes) -> str | None:
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None


def _role(key_id: int, st: Mapping[str, Any]) -> str:
    """``primary`` when the node owns the key (its id in ``(predecessor, node]``)."""
    pred = st["predecessor"]
    if pred is None:  # alone (or not yet linked): it answers for every key
        return "primary"
    own = ids.in_interval(key_id, int(pred["id"], 16), int(st["id"], 16), right_open=False)
    return "primary" if own else "replica"


def key_rows(found: Sequence[Mapping[str, Any]], st: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``Client.keys`` entries of the node whose status is ``st`` as rows of ``keys --json``:
    key (None when not UTF-8), key_hex, id, bytes, role, expires_at."""
    return [
        {
            "key": key_text(entry["key"]),
            "key_hex": entry["key"].hex(),
            "id": entry["key_id"],
            "bytes": entry["bytes"],
            "role": _role(int(entry["key_id"], 16), st),
            "expires_at": entry["expires_at"],
        }
        for entry in found
    ]


def _key_cell(row: Mapping[str, Any]) -> str:
    text: str | None = row["key"]
    if text is None:
        text = "0x" + row["key_hex"]
    elif not text.isprintable():  # a newline or a tab would break the table
        text = repr(text)[1:-1]
    return shortened(text, KEY_WIDTH)


def shortened(text: str, width: int) -> str:
    """``text``, cut to ``width`` characters with "…" when longer (a key may have 1,024)."""
    return text if len(text) <= width else text[: width - 1] + "…"


def keys_lines(
    node: str,
    rows: Sequence[Mapping[str, Any]],
    now: float,
    *,
    after: str | bytes | None = None,
    more: str | None = None,
) -> list[str]:
    """A page of a node's keys as ``udpdht keys`` and the shell's ``keys`` show it; ``more``:
    what to type for the next page. Long keys are shortened with "…" (``--json`` has them
    whole)."""
    if not rows:
        where = ""
        if isinstance(after, bytes):
            where = f" after 0x{after.hex()}"
        elif after is not None:
            where = f" after {after!r}"
        return [f"{node} holds no keys{where}"]
    cells = [
        [
            _key_cell(r),
            r["id"][:8],
            str(r["bytes"]),
            r["role"],
            "-" if r["expires_at"] is None else f"{max(0.0, r['expires_at'] - now):.0f} s",
        ]
        for r in rows
    ]
    lines = table(["key", "id", "bytes", "role", "expires in"], cells, right="bytes")
    primary = sum(r["role"] == "primary" for r in rows)
    lines.append(
        f"{_count(len(rows), 'key')} of {node} ({primary} as primary, {len(rows) - primary} as "
        "replica), in ring order of their ids"
    )
    if more is not None:
        lines.append(f"more: {more}")
    return lines


def hex_key(text: str) -> bytes:
    """The key of ``--after-hex HEX`` (``0x`` allowed); ValueError unless hex of a byte or more."""
    try:
        key = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise ValueError(f"expected the key in hex digits, got {text!r}") from None
    if not key:
        raise ValueError("expected a non-empty key")
    return key


def next_page(nxt: bytes, quote: Callable[[str], str]) -> str:
    """The option that asks for the page after key ``nxt``: ``--after KEY`` (quoted for the
    shell that reads it; ``--after=KEY`` for a key that starts with "-", which would read as
    an option), or ``--after-hex HEX`` for a key that is not UTF-8 text or holds a character
    no one can type (a NUL, a newline: the table shows them escaped)."""
    text = key_text(nxt)
    if text is None or not text.isprintable():
        return f"--after-hex {nxt.hex()}"
    return f"--after={quote(text)}" if text.startswith("-") else f"--after {quote(text)}"


def admin_done(who: str, command: str, alone: bool) -> str:
    """What a node did on ``leave`` or ``shutdown`` (``udpdht`` and the shell say the same)."""
    if alone:
        return (
            f"{who} {'left and ' if command == 'leave' else ''}stopped; it was alone in its "
            "ring, so no other node holds its keys (its data dir keeps them, if it has one)"
        )
    if command == "leave":
        return f"{who} left the ring; its keys went to its successors"
    return f"{who} stopped; its replicas elsewhere keep its keys while the ring repairs"


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
    lines.append(f"{_count(len(fingers), 'distinct finger')} of {st['id'][:8]} {st['addr']}")
    return lines


def stats_lines(st: Mapping[str, Any]) -> list[str]:
    rpc: Mapping[str, Any] = st["rpc"]
    store: Mapping[str, Any] = st["store"]
    width = max(len(k) for k in [*rpc, *store, "uptime"])
    lines = [f"rpc counters of {st['id'][:8]} {st['addr']}"]
    lines += [f"  {name:<{width}}  {value:>10}" for name, value in rpc.items()]
    lines.append("store")
    for name, value in store.items():
        if name == "replica_of":  # [address, records] pairs
            value = ", ".join(f"{n} of {addr}" for addr, n in replica_of(store)) or "-"
        elif value is None:  # (quota: none)
            value = "-"
        lines.append(f"  {name:<{width}}  {value:>10}")
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


def ping_text(info: Mapping[str, Any]) -> str:
    """A ping's answer (Client.ping_info) as `udpdht ping` and the shell's `ping` print it:
    the node, its id, the round trip, and whether it is isolated, and why."""
    text = f"{info['addr']} (id {info['id'][:8]}) answered in {duration(info['rtt_s'])}"
    up = info.get("started_s_ago")
    if info["isolated"] and up is not None:
        text += f"; it started {up} s ago and is rejoining its ring"
    elif info["isolated"]:
        text += "; it is isolated: it lost contact with its ring and is rejoining"
    return text


def _quota(store: Mapping[str, Any]) -> tuple[int, int] | None:
    """(bytes the quota counts, the quota) from a status's store, when it has a quota."""
    quota, used = store.get("quota"), store.get("quota_used")
    return (used, quota) if type(quota) is int and type(used) is int else None


def _quota_words(store: Mapping[str, Any]) -> str:
    """The quota and what it counts, when the node has one (status ``store.quota``; an
    operator's trial found it in the JSON only)."""
    counted = _quota(store)
    if counted is None:
        return ""
    return f"; quota {counted[0]:,} of {counted[1]:,} bytes used (--max-store-bytes)"


def _full_words(store: Mapping[str, Any]) -> str:
    """Why the store is full, when it is: over its quota (a node started again with a smaller
    one), or records refused lately."""
    if not store.get("full"):
        return ""
    counted = _quota(store)
    if counted is not None and counted[0] > counted[1]:
        return "; full: it holds more than its quota, and refuses new records until it is under it"
    return (
        f"; full: {_count(store.get('refused', 0), 'record')} refused for want of room "
        "(its quota or its disk; a record offered again counts again), the last within a "
        "minute"
    )
