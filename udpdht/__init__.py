"""udpdht: a peer-to-peer distributed hash table over UDP."""

from .client import Client
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
