"""udpdht: a peer-to-peer distributed hash table over UDP.

``Client``, ``Node`` and ``Server`` load on first use (PEP 562), so that ``import udpdht`` (and
with it ``udpdht --help``) does not load the event loop, the store and sqlite3; the errors are
small and load at once. Type checkers and IDEs see every name through the imports under
``TYPE_CHECKING``.
"""

from __future__ import annotations

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
