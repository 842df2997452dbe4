"""Words for log lines and messages."""

from __future__ import annotations


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 record``, ``2 records``, ``0 records`` (``many``: an irregular plural)."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"
