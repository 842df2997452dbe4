"""160-bit identifiers on the Chord ring. Pure: no I/O, no clock.

Ids are plain ``int`` in ``[0, 2**160)``. On the wire they travel as 20-byte big-endian
strings; on screen as 40 hex digits.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashlib import _Hash

_SHA1: Callable[[bytes], _Hash]
try:  # CPython's own SHA-1: 0.47 us a 20-byte key against OpenSSL's 0.78 (a context to set up)
    _SHA1 = importlib.import_module("_sha1").sha1
except (ImportError, AttributeError):  # (a build without it)
    _SHA1 = hashlib.sha1

BITS = 160
RING = 1 << BITS
MASK = RING - 1
ID_BYTES = BITS // 8
_HEX_ID = re.compile(r"[0-9a-fA-F]{40}")


def hash_key(key: str | bytes) -> int:
    """The ring position of a key: SHA-1 of its bytes (a ``str`` is UTF-8 encoded)."""
    if isinstance(key, str):
        key = key.encode()
    return int.from_bytes(_SHA1(key).digest(), "big")


@functools.lru_cache(maxsize=16384)
def node_id_for(host: str, port: int, ring: str = "") -> int:
    """The default id of a node: SHA-1 of ``"host:port"``, or of ``"RING/host:port"`` in a ring
    with a name (NodeConfig.ring; cached: receivers check every peer entry they are sent
    against it). A node of another ring has another id at the same address, so the checks of
    ids against addresses keep rings of different names apart."""
    return hash_key(f"{ring}/{host}:{port}" if ring else f"{host}:{port}")


_RING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_ring_name(name: str) -> str:
    """``name`` if it can name a ring ("" is the ring with no name); ValueError otherwise."""
    if name and not _RING_NAME.fullmatch(name):
        raise ValueError(
            f"a ring's name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            f"or a digit, not {name[:70]!r}"
        )
    return name


def distance(a: int, b: int) -> int:
    """Clockwise distance from ``a`` to ``b`` (0 when equal)."""
    return (b - a) & MASK


def in_interval(x: int, a: int, b: int, *, left_open: bool = True, right_open: bool = True) -> bool:
    """Whether ``x`` lies in the clockwise interval from ``a`` to ``b``.

    By default both ends are open: ``(a, b)``. ``right_open=False`` gives ``(a, b]``, the
    interval a node's successor answers for. When ``a == b`` the interval wraps the whole ring:
    ``(a, a)`` is every id but ``a``, and any closed end brings ``a`` back in, which is what a
    one-node ring needs (its own successor owns every key).
    """
    if a == b:
        return x != a or not left_open or not right_open
    dx = (x - a) & MASK
    db = (b - a) & MASK
    if dx == 0:
        return not left_open
    if dx == db:
        return not right_open
    return dx < db


def to_bytes(i: int) -> bytes:
    return i.to_bytes(ID_BYTES, "big")


def from_bytes(b: bytes) -> int:
    if len(b) != ID_BYTES:
        raise ValueError(f"an id is {ID_BYTES} bytes, got {len(b)}")
    return int.from_bytes(b, "big")


def to_hex(i: int) -> str:
    if not 0 <= i <= MASK:
        raise ValueError("an id is in [0, 2**160)")
    return f"{i:040x}"


def from_hex(s: str) -> int:
    # int(s, 16) alone would take a sign, a 0x prefix, spaces and non-ASCII digits.
    if not _HEX_ID.fullmatch(s):
        raise ValueError(f"an id is {2 * ID_BYTES} hex digits, got {s!r}")
    return int(s, 16)


def short(i: int, digits: int = 8) -> str:
    """A shortened id for display."""
    return to_hex(i)[:digits]


def digest(key: object) -> bytes:
    """A key's 20-byte SHA-1 digest, exactly as ``kademlia.utils.digest`` computes it: bytes
    are hashed as they are, anything else as ``str(key)`` in UTF-8 (so ``5`` and ``"5"`` are
    one key). ``udpdht.Server`` and the kad:// client both keep values under it."""
    data = key if isinstance(key, bytes) else str(key).encode("utf8")
    return _SHA1(data).digest()
