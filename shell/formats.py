"""The machine-friendly output styles of ``format json`` and ``format plain``.

``table`` (the default) is :mod:`udpdht.render`'s. These take the same data as a plain
JSON-able object: ``json`` prints it indented, ``plain`` prints one ``name<TAB>value`` line per
leaf, nested names joined with dots (``store.primary``, ``hops.0.addr``), for cut and awk;
``-`` for null and for an empty list or map, so that every line has a value field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from udpdht import ids
from udpdht.lookup import Lookup

STYLES = ("table", "json", "plain")


def lookup_object(key: str, found: Lookup) -> dict[str, Any]:
    """A lookup as ``udpdht lookup --json`` prints it, with the next nodes after the owner."""
    return {
        "key": key,
        "key_id": ids.to_hex(ids.hash_key(key)),
        "owner": found.owner.info(),
        "hops": [{**h.peer.info(), "rtt_s": h.rtt_s} for h in found.hops],
        "next": [p.info() for p in found.successors],
    }


def _leaves(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        if not value:
            yield prefix, None  # (none: "-", as for null)
        for name, item in value.items():
            yield from _leaves(item, f"{prefix}.{name}" if prefix else str(name))
    elif isinstance(value, list):
        if not value:
            yield prefix, None  # (none: "-", as for null)
        for i, item in enumerate(value):
            yield from _leaves(item, f"{prefix}.{i}" if prefix else str(i))
    else:
        yield prefix, value


def _plain_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return " ".join(str(value).split())  # one line, whatever it holds


def as_text(obj: Any, style: str) -> str:
    """``obj`` in the ``json`` or ``plain`` style."""
    if style == "json":
        return json.dumps(obj, indent=2, default=repr)
    return "\n".join(f"{name}\t{_plain_value(value)}" for name, value in _leaves(obj, ""))
