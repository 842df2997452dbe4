"""Words for log lines and messages."""

from __future__ import annotations


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 record``, ``2 records``, ``0 records`` (``many``: an irregular plural)."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def duration(seconds: float) -> str:
    """``90 s``, ``2.5 h``, ``1 day``, ``366 days``: a TTL as a person reads it."""
    for unit, size in (("day", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            amount = f"{seconds / size:.3g}"
            if unit == "day" and amount != "1":
                unit = "days"
            return f"{amount} {unit}"
    return f"{seconds:g} s"
