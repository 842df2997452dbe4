"""Pure formatting of what a kademlia network answers (``kad://``), for the shell and the CLI.

A lookup's trace lists every question: the round it was asked in, the node, how many leading
bits its id shares with the target (a lookup converges as this grows), the round-trip time and
what came back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .kad.client import Probe, PutResult
from .kad.lookup import Contact, Query, RoutingTable, Trace, bucket_of
from .render import duration, table, value_text
from .text import plural


def _returned(q: Query) -> str:
    a = q.answer
    if a.outcome == "value":
        if not a.contacts:
            return "the value"
        return f"the value (+ {plural(len(a.contacts), 'contact')}, {q.new} new, by find_node)"
    if a.outcome == "contacts":
        if not a.contacts:
            return "no contacts"
        text = f"{plural(len(a.contacts), 'contact')}, {q.new} new"
        return text + (", nearer" if q.nearer else "")
    if a.outcome == "no answer":
        return "no answer"
    return f"a bad answer ({a.error})" if a.error else "a bad answer"


def trace_lines(trace: Trace, heading: Sequence[str]) -> list[str]:
    """A lookup: ``heading`` (what was looked up), one row per question, then the outcome."""
    rows = []
    for q in trace.queries:
        rtt = duration(q.answer.rtt) if q.answer.rtt is not None else "-"
        rows.append(
            [
                str(q.round),
                q.peer.hex[:8],
                _addr(q.peer),
                str(bucket_of(trace.target, q.peer.id)),
                rtt,
                _returned(q),
            ]
        )
    lines = list(heading)
    if rows:
        headers = ["round", "id", "address", "prefix", "rtt", "returned"]
        lines += ["  " + line for line in table(headers, rows, right="round prefix rtt")]
    if trace.holders:
        where = ", ".join(_addr(c) for c in trace.holders[:3])
        more = f" and {len(trace.holders) - 3} more" if len(trace.holders) > 3 else ""
        lines.append(f"value    {value_text(trace.value)}   (from {where}{more})")
    if trace.nearest:
        shown = ", ".join(_addr(c) for c in trace.nearest[:3])
        more = f", … {len(trace.nearest)} in all" if len(trace.nearest) > 3 else ""
        lines.append(f"nearest  {shown}{more}")
    silent = len(trace.silent)
    summary = (
        f"{plural(len(trace.queries), 'question')} in {plural(trace.rounds, 'round')}, "
        f"{duration(trace.elapsed)}; stopped: {trace.stopped}"
    )
    if silent:
        summary += f"; {silent} did not answer"
    lines.append(summary)
    lines.append(
        "(prefix: leading bits the node's id shares with the target; it grows as the lookup "
        "closes in)"
    )
    return lines


def _addr(c: Contact) -> str:
    from udpdht.net import format_addr

    return format_addr(c.addr)


def lookup_lines(key: str, trace: Trace) -> list[str]:
    head = [f"key      {key!r} -> {trace.target.hex()[:16]}…   (SHA-1, as kademlia.utils.digest)"]
    lines = trace_lines(trace, head)
    if trace.method == "find_value" and not trace.found:
        lines.insert(-2, "value    none: no node asked holds the key")
    return lines


def findnode_lines(trace: Trace) -> list[str]:
    return trace_lines(trace, [f"target   {trace.target.hex()}"])


def lookup_object(key: str, trace: Trace) -> dict[str, Any]:
    """``lookup --json`` and the shell's ``format json``."""
    from udpdht.values import to_plain

    info = trace.info()
    info["value"] = to_plain(trace.value) if trace.found else None
    del info["target"]
    return {"key": key, "key_id": trace.target.hex(), **info}


def put_text(key: str, result: PutResult) -> str:
    stored = len(result.stored)
    text = f"stored {key!r} on {plural(stored, 'node')} nearest the key"
    if result.failed:
        text += f" ({len(result.failed)} of the {stored + len(result.failed)} did not answer)"
    return text


def ping_text(node: Contact, rtt: float) -> str:
    # (No "kademlia node": a udpdht node answers kademlia's ping too, and the answer does not
    # tell the two apart.)
    return f"{_addr(node)} (id {node.hex[:8]}) answered kademlia's ping in {duration(rtt)}"


def routing_lines(own: bytes, table_: RoutingTable) -> list[str]:
    """The contacts the client has learned, by bucket (common prefix bits with our id)."""
    buckets = table_.by_bucket()
    if not buckets:
        return ["no contacts yet: 'ping', 'lookup' or 'get' learn some"]
    rows = []
    for index, entries in buckets:
        for i, e in enumerate(entries):
            rtt = duration(e.rtt) if e.rtt is not None else "-"
            rows.append([str(index) if i == 0 else "", e.contact.hex[:8], _addr(e.contact), rtt])
    lines = table(["bucket", "id", "address", "rtt"], rows, right="bucket rtt")
    lines.append(
        f"{plural(len(table_), 'contact')} in {plural(len(buckets), 'bucket')} of our id "
        f"{own.hex()[:8]} (bucket: leading bits shared with it; k = {table_.k} each)"
    )
    return lines


def probe_lines(probe: Probe) -> list[str]:
    groups = probe.by_bucket()
    lines = [f"table of {_addr(probe.node)} (id {probe.node.hex[:8]}), by probing:"]
    rows = []
    for index, contacts in groups:
        for i, c in enumerate(contacts):
            rows.append([str(index) if i == 0 else "", c.hex[:8], _addr(c)])
    if rows:
        lines += table(["bucket", "id", "address"], rows, right="bucket")
    lines.append(
        f"{plural(len(probe.contacts), 'contact')} in {plural(len(groups), 'bucket')}, from "
        f"{probe.answered} of {probe.asked} find_node answers in {duration(probe.elapsed)} "
        "(a node returns at most k per answer; ours are not listed)"
    )
    return lines


def whoami_lines(
    own: bytes, addr: str, attached: str, contacts: int, local: int, *, kept: object = None
) -> list[str]:
    """``kept``: where the id (and port) is kept between sessions; None: random, this once."""
    where = f"yours, kept in {kept}" if kept is not None else "random, for this session"
    return [
        f"id       {own.hex()}   ({where})",
        f"address  {addr}",
        f"network  {attached}",
        f"contacts {contacts}   ('routing' lists them)",
        f"holds    {plural(local, 'key')} that nodes stored here (kademlia pushes keys to "
        "newcomers)",
    ]
