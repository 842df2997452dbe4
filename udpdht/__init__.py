"""udpdht: a peer-to-peer distributed hash table over UDP."""

from .client import Client
from .errors import (
    DecodeError,
    DhtError,
    KeyNotFound,
    RemoteError,
    RpcTimeout,
    Unauthorized,
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
    "RemoteError",
    "RpcTimeout",
    "Server",
    "Unauthorized",
    "ValueTooLarge",
]
__version__ = "0.1.0"
