"""udpdht: a peer-to-peer distributed hash table over UDP.

``Client``, ``Node`` and ``Server`` load on first use (PEP 562), so that ``import udpdht`` (and
with it ``udpdht --help``) does not load the event loop, the store and sqlite3; the errors are
small and load at once. Type checkers and IDEs see every name through the imports under
``TYPE_CHECKING``.
"""

from __future__ import annotations

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

#: Set to 1: the compiled modules are not loaded; their sources are (to compare, or to debug).
PURE_ENV = "UDPDHT_PURE"


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


def _check_compiled() -> None:
    """In a checkout, refuse a compiled module older than its source: Python loads a compiled
    module before its source, so an edit would silently not run. With UDPDHT_PURE=1, load the
    sources of every compiled module instead."""
    here = os.path.dirname(os.path.abspath(__file__))
    compiled = _compiled_modules(here)
    if not compiled:
        return
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        sys.meta_path.insert(0, _Sources({stem: source for stem, (source, _) in compiled.items()}))
        return
    if not os.path.exists(os.path.join(here, os.pardir, "setup.py")):
        return  # an installed build: its files' times say nothing
    for source, built in sorted(compiled.values()):
        if any(os.path.getmtime(source) > os.path.getmtime(path) for path in built):
            raise ImportError(
                f"{source} changed since it was compiled: run `make compiled` again, or "
                f"`make pure` to remove the compiled build (or set {PURE_ENV}=1)"
            )


class _Sources:
    """A meta path finder that loads compiled modules from their sources (UDPDHT_PURE)."""

    def __init__(self, compiled: dict[str, str]) -> None:
        self.compiled = compiled

    def find_spec(self, name: str, path: object = None, target: object = None) -> Any:
        package, _, stem = name.rpartition(".")
        if package != __name__ or stem not in self.compiled:
            return None
        import importlib.util

        return importlib.util.spec_from_file_location(name, self.compiled[stem])


_check_compiled()
