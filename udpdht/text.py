"""Words for log lines and messages."""

from __future__ import annotations

import itertools


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 record``, ``2 records``, ``0 records`` (``many``: an irregular plural)."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


#: Control characters as \xNN: all of C0 but newline and tab, DEL and C1 (ESC starts the
#: sequences that move the cursor, clear the screen, set the window's title or a link).
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c not in (0x0A, 0x09)}


def printable(text: str) -> str:
    """``text`` with its control characters shown as ``\\xNN``: what a node answers (an id,
    an address, an error message, a stored string) must not rewrite the user's terminal."""
    return text.translate(_CONTROLS)


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
