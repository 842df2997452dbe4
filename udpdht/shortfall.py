"""What a put's acknowledgement says when the primary made fewer copies than it wanted.

The primary adds ``copies``, ``wanted`` and ``full`` (the replicas that refused theirs because
their store is full, as "H:P") to its ``store_write`` reply; the coordinator passes them on in
its ``put`` reply, and the CLI and the shell print them (PROTOCOL.md 10.5). Every hop reads
them with :meth:`Shortfall.from_reply`: a primary may be a stranger, and what it names here
ends up on a user's terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .limits import MAX_REPLICAS
from .net import check_peer_addr, format_addr, parse_addr


@dataclass(frozen=True)
class Shortfall:
    """``copies`` made, the primary's included, of ``wanted``; ``full``: the replicas that
    refused theirs because their store is full ("H:P"); ``missed``: those that did not take
    it (no answer, or the ring is changing), when the primary names them."""

    copies: int
    wanted: int
    full: tuple[str, ...] = ()
    missed: tuple[str, ...] = ()

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> Shortfall | None:
        """The shortfall a reply names, checked; None when it names none (every copy made) or
        names one that makes no sense. Only unicast IP addresses are kept of ``full`` and
        ``missed``."""
        copies, wanted = reply.get("copies"), reply.get("wanted")
        if type(copies) is not int or type(wanted) is not int:
            return None
        if not 0 < copies < wanted <= MAX_REPLICAS:
            return None
        full = _addresses(reply.get("full"), wanted)
        missed = _addresses(reply.get("missed"), wanted)
        return cls(copies, wanted, full, missed)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "copies": self.copies,
            "wanted": self.wanted,
            "full": list(self.full),
        }
        if self.missed:
            out["missed"] = list(self.missed)
        return out

    def __str__(self) -> str:
        return self.describe()

    def describe(self, *, deleted: bool = False) -> str:
        """What a user reads: on how many nodes, and why the others lack it (``deleted``: the
        write was a delete, which repair carries on to them, as it does a copy)."""
        parts = []
        if self.full:
            one = len(self.full) == 1
            parts.append(
                f"{', '.join(self.full)} {'is' if one else 'are'} full (its quota or its disk) and "
                f"refused it: repair cannot make {'that copy' if one else 'those copies'} until "
                f"{'it has' if one else 'they have'} room"
            )
        others = self.wanted - self.copies - len(self.full)
        if others > 0:
            named = len(self.missed) == others
            who = ", ".join(self.missed) if named else str(others)
            there = " there" if named else ""
            if deleted:
                then = f"repair deletes it{there}"  # (a node that is gone holds nothing)
            else:
                # (Not just "there": the node may be gone, and the copy go to the next one.)
                one = others == 1
                then = f"repair makes the {'copy' if one else 'copies'}"
                if named:
                    then += (
                        " there, or on the node that takes its place,"
                        if one
                        else " there, or on the nodes that take their places,"
                    )
            parts.append(
                f"{who} did not take it (no answer, or the ring is changing): {then} once the "
                "ring has settled"
            )
        return f"on {self.copies} of {self.wanted} nodes only: " + "; ".join(parts)


def _addresses(items: Any, limit: int) -> tuple[str, ...]:
    """The unicast IP addresses ("H:P") of a list a primary sent, at most ``limit``."""
    named: list[str] = []
    for item in items[:limit] if isinstance(items, list) else []:
        if type(item) is str and len(item) <= 64:
            try:
                named.append(format_addr(check_peer_addr(*parse_addr(item))))
            except ValueError:
                continue  # (not an address: nothing of it is shown)
    return tuple(named)
