"""Plumbing the benchmarks share: progress on stderr, argument types, writing a plot."""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


class HelpFormatter(argparse.RawTextHelpFormatter):
    """Help as written (line breaks kept), each option's default after it: ``(default: 3)``;
    switches and options with no default say nothing more."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
            or action.nargs == 0
        ):
            return text
        return text + " (default: %(default)s)"


def spread(values: list[float]) -> dict[str, float] | None:
    """min / median / max of ``values`` (None when there are none)."""
    if not values:
        return None
    return {
        "min": min(values),
        "median": round(statistics.median(values), 3),
        "max": max(values),
    }


def build() -> str:
    """Which udpdht runs here: "compiled" (``make compiled``: its RPC layer built by mypyc,
    README "A compiled build") or "pure" (the Python sources; also under UDPDHT_PURE=1)."""
    from udpdht import rpc

    return "pure" if rpc.__file__.endswith(".py") else "compiled"


#: Said under a table whose targets a pure-Python run missed (README "Measured" gives both
#: builds' figures: the RPC target is met compiled only).
PURE_MISS = (
    "  (this ran pure Python; the compiled build, which the Docker image runs, is faster: "
    '`make compiled` builds it here, README "A compiled build")'
)


def progress(text: str) -> None:
    """Progress goes to stderr, so that stdout holds only the table or the JSON object."""
    print(text, file=sys.stderr, flush=True)


def per_size(
    sizes: Iterable[int], one: Callable[[int], dict[str, Any]], what: str = "nodes"
) -> list[dict[str, Any]]:
    """``one(n)`` for each size ``n`` in order (a row of the table each), announced on stderr."""
    rows = []
    for n in sizes:
        progress(f"{n} {what} ...")
        rows.append(one(n))
    return rows


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or None (with a word why) when it is missing."""
    try:
        import matplotlib
    except ImportError:
        progress("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_plot(fig: Any, path: Path) -> None:
    """Lay out, write and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    progress(f"plot written to {path}")
