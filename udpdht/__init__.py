"""udpdht: a peer-to-peer distributed hash table over UDP.

``Client``, ``Node`` and ``Server`` load on first use (PEP 562), so that ``import udpdht`` (and
with it ``udpdht --help``) does not load the event loop, the store and sqlite3; the errors are
small and load at once. Type checkers and IDEs see every name through the imports under
``TYPE_CHECKING``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

from .errors import (
    DecodeError,
    DhtError,
    KeyNotFound,
    RateLimited,
    RemoteError,
    RpcTimeout,
    StoreFull,
    Unauthorized,
    Unavailable,
    ValueTooLarge,
)

if TYPE_CHECKING:
    from .client import Client
    from .node import Node
    from .server import Server

__all__ = [
    "Client",
    "DecodeError",
    "DhtError",
    "KeyNotFound",
    "Node",
    "RateLimited",
    "RemoteError",
    "RpcTimeout",
    "Server",
    "StoreFull",
    "Unauthorized",
    "Unavailable",
    "ValueTooLarge",
]
__version__ = "0.1.0"

#: The names that load on first use, and the submodule each comes from.
_LAZY = {"Client": "client", "Node": "node", "Server": "server"}

if not TYPE_CHECKING:  # a module __getattr__ would make mypy accept any name: hidden from it

    def __getattr__(name: str) -> Any:
        submodule = _LAZY.get(name)
        if submodule is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(f".{submodule}", __name__), name)
        globals()[name] = value  # found once: later lookups do not come here
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


# --- the compiled build (setup.py; README "A compiled build") ------------------------------------

#: Set to 1 (true, yes, on): the compiled modules are not loaded, their sources are.
PURE_ENV = "UDPDHT_PURE"

#: Which udpdht runs: "compiled" (``make compiled``), "pure" (no compiled build), or
#: "sources" (a compiled build is there but not loaded: UDPDHT_PURE, or it is stale).
BUILD = "pure"


def _compiled_modules(here: str) -> dict[str, tuple[str, list[str]]]:
    """The modules of this package compiled beside their sources: name -> (its source, its
    compiled files)."""
    try:
        names = os.listdir(here)
    except OSError:
        return {}
    found: dict[str, tuple[str, list[str]]] = {}
    for name in names:
        stem, dot, rest = name.partition(".")
        if dot and rest.endswith((".so", ".pyd")) and stem + ".py" in names:
            built = found.setdefault(stem, (os.path.join(here, stem + ".py"), []))[1]
            built.append(os.path.join(here, name))
    return found


def _stale(compiled: dict[str, tuple[str, list[str]]]) -> str | None:
    """A source edited since it was compiled, if any: Python would load its compiled module,
    and the edit would silently not run."""
    for source, built in sorted(compiled.values()):
        if any(os.path.getmtime(source) > os.path.getmtime(path) for path in built):
            return source
    return None


def _choose_build() -> str:
    """Load the compiled build if there is one and it is up to date, else the sources (all of
    them: compiled modules call each other's classes directly, so one module from its source
    beside the others compiled would meet two different classes of the same name)."""
    here = os.path.dirname(os.path.abspath(__file__))
    compiled = _compiled_modules(here)
    if not compiled:
        return "pure"
    # (The words config.py reads: config itself loads too much to be imported here.)
    pure = os.environ.get(PURE_ENV, "").strip().lower()
    if pure in ("", "0", "false", "no", "off"):
        # Installed from a wheel, the files' times are the archive's: only a checkout is judged.
        checkout = os.path.exists(os.path.join(here, os.pardir, "setup.py"))
        stale = _stale(compiled) if checkout else None
        if stale is None:
            return "compiled"
        _warn(
            f"{stale} changed since it was compiled: running the sources; `make compiled` "
            "builds them again, `make pure` removes the compiled build"
        )
    elif pure not in ("1", "true", "yes", "on"):
        _warn(f"{PURE_ENV}={pure!r} is not 1/0, true/false, yes/no or on/off: taken as 1")
    sys.meta_path.insert(0, _Sources({stem: source for stem, (source, _) in compiled.items()}))
    return "sources"


def _warn(text: str) -> None:
    """One line on stderr, before any logging is set up."""
    if sys.stderr is not None:
        with contextlib.suppress(OSError, ValueError):  # (a closed stderr says nothing)
            sys.stderr.write(f"udpdht: warning: {text}\n")


class _Sources:
    """A meta path finder that loads compiled modules from their sources."""

    def __init__(self, compiled: dict[str, str]) -> None:
        self.compiled = compiled

    def find_spec(self, name: str, path: object = None, target: object = None) -> Any:
        package, _, stem = name.rpartition(".")
        if package != __name__ or stem not in self.compiled:
            return None
        import importlib.util

        return importlib.util.spec_from_file_location(name, self.compiled[stem])


BUILD = _choose_build()
