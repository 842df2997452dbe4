"""Limits every part of udpdht agrees on, in a module that imports only the errors.

The client checks a key and a value against them before it sends a request, and the ``udpdht``
command checks a TTL before it starts a client: both import them from here, not from the store
(which loads sqlite3) or the replication layer.
"""

from __future__ import annotations

from .errors import BadRequest, ValueTooLarge

DEFAULT_PORT = 7000  # a node's port unless told otherwise (`udpdht node --port`)
MAX_KEY = 1024  # bytes of a key
MAX_VALUE = 60_000  # bytes of a value, msgpack-encoded
MAX_TTL = 366 * 24 * 3600.0  # seconds: the longest TTL a put may ask for (StoreConfig.max_ttl)
MAX_LEAFSET = 64  # L: the largest leafset a node takes (--leafset)
MAX_REPLICAS = MAX_LEAFSET // 2 + 1  # copies of a key: 1..L/2+1, on the successor list

# Pages of records, versions or keys (hand-off, repair, reads; PROTOCOL.md section 10.3):
BATCH_BYTES = 60_000  # bytes a page holds at most, each item counted as below
ITEM_OVERHEAD = 64  # what each item counts besides its key and value bytes
MAX_ITEMS = 1_000  # items in a page, or keys in one read, at most


def check_key(key: bytes) -> None:
    """BadRequest for an empty key, ValueTooLarge for one over MAX_KEY bytes: the same errors
    from a client before it sends as from the node that would refuse it."""
    if not key:
        raise BadRequest("a key cannot be empty")
    if len(key) > MAX_KEY:
        raise ValueTooLarge(f"a key is at most {MAX_KEY:,} bytes, this one {len(key):,}")


def key_bytes(key: str | bytes) -> bytes:
    """A key as the ring sees it (a str UTF-8 encoded, bytes as they are), checked."""
    data = key.encode() if isinstance(key, str) else bytes(key)
    check_key(data)
    return data


def parse_ttl(text: str) -> float:
    """A TTL typed by a user (the CLI's and the shell's ``--ttl``), in seconds; ValueError
    saying what a TTL may be."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value != value:  # not a number, or NaN
        raise ValueError(f"expected a number of seconds, got {text!r}")
    if not 0 < value <= MAX_TTL:  # inf fails here too
        raise ValueError(
            f"a TTL must be more than 0 and at most {MAX_TTL:,.0f} s "
            f"({MAX_TTL / 86400:.0f} days), not {text}"
        )
    return value


#: Seconds after its start a node rejoining its ring is said to be starting, not to have lost
#: its ring (Node, and the CLI's status): a restart on its data dir rejoins in a second or two.
STARTING_FOR = 30.0
