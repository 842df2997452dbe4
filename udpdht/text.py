"""Words for log lines and messages."""

from __future__ import annotations

import itertools


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 record``, ``2 records``, ``0 records`` (``many``: an irregular plural)."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


_UNITS = (("day", 86400), ("h", 3600), ("min", 60), ("s", 1))


def duration(seconds: float) -> str:
    """``40 s``, ``1 min 40 s``, ``2 h 30 min``, ``1 day``, ``366 days``: a TTL as a person
    reads it (two units at most, the smaller one rounded)."""
    if seconds < 60:
        return f"{seconds:g} s"
    for (unit, size), (small, small_size) in itertools.pairwise(_UNITS):
        if seconds >= size:
            whole, rest = divmod(round(seconds / small_size), size // small_size)
            text = f"{whole} {unit}{'s' if unit == 'day' and whole != 1 else ''}"
            return f"{text} {rest} {small}" if rest else text
    raise AssertionError("unreachable: seconds >= 60")
