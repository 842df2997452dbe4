"""Versioned records with TTL, in memory or on disk. No network, no clock: callers pass ``now``.

A record is what the store keeps for one key: the value (already msgpack-encoded, so sizes are
exact and nodes never decode what they only hold), a version, and an optional absolute expiry.
A delete is a *tombstone*: a record with no value, which expires like any other, so an older
replica cannot bring the value back while the tombstone lives.

Versions order writes. The primary of a key stamps each write with ``(stamp, writer)`` where
``stamp`` is a hybrid clock in milliseconds: at least the wall clock, and always past the
version it replaces, so a newer write wins even when clocks disagree. ``writer`` (the primary's
id) breaks ties between two primaries that stamped the same millisecond during a partition.
:meth:`Store.put` applies a record only if its version is newer: an older replica never
overwrites (the failure of kademlia#107).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

from . import ids

MAX_KEY = 1024
MAX_VALUE = 60_000


class Version(NamedTuple):
    stamp: int  # hybrid clock, milliseconds
    writer: bytes  # id of the primary that stamped it

    @staticmethod
    def next_after(current: Version | None, wall_ms: int, writer: bytes) -> Version:
        """The version of a new write: past ``current`` even if our clock is behind."""
        stamp = wall_ms if current is None else max(wall_ms, current.stamp + 1)
        return Version(stamp, writer)


class Record(NamedTuple):
    key: bytes
    value: bytes | None  # msgpack-encoded value; None for a tombstone
    version: Version
    expires_at: float | None  # wall-clock seconds; None: never

    @property
    def key_id(self) -> int:
        return ids.hash_key(self.key)

    @property
    def is_tombstone(self) -> bool:
        return self.value is None

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now

    def size(self) -> int:
        return len(self.key) + (len(self.value) if self.value is not None else 0)

    def to_wire(self) -> list[object]:
        v = self.version
        return [self.key, self.value, v.stamp, v.writer, self.expires_at]

    @classmethod
    def from_wire(cls, item: object) -> Record:
        """Parse ``[key, value|nil, stamp, writer, expires|nil]``; ValueError otherwise."""
        if not isinstance(item, list) or len(item) != 5:
            raise ValueError("a record is [key, value, stamp, writer, expires]")
        key, value, stamp, writer, expires = item
        if not isinstance(key, bytes) or not 0 < len(key) <= MAX_KEY:
            raise ValueError(f"a key is 1..{MAX_KEY} bytes")
        if value is not None and (not isinstance(value, bytes) or len(value) > MAX_VALUE):
            raise ValueError(f"a value is at most {MAX_VALUE} encoded bytes")
        if type(stamp) is not int or not 0 <= stamp < 1 << 63 or not isinstance(writer, bytes):
            raise ValueError("a version is [int in 0..2**63-1, bytes]")  # sqlite's INTEGER
        if expires is not None and (
            type(expires) not in (int, float) or math.isnan(expires)  # bool is not a time
        ):
            raise ValueError("expiry must be a number or nil")
        return cls(key, value, Version(stamp, writer), None if expires is None else float(expires))


def newer(a: Record, b: Record | None) -> bool:
    """Whether ``a`` should replace ``b``."""
    return b is None or a.version > b.version


class Store(Protocol):
    """What the node needs from a storage engine."""

    def get(self, key: bytes) -> Record | None: ...

    def put(self, record: Record) -> bool:
        """Keep ``record`` if it is newer than what we hold; return whether it was kept."""
        ...

    def remove(self, key: bytes) -> None:
        """Forget a key entirely (hand-off done: another node is responsible now)."""
        ...

    def records(self) -> Iterator[Record]: ...

    def in_range(self, low: int, high: int) -> Iterator[Record]:
        """Records whose key id lies in the ring interval ``(low, high]``."""
        ...

    def purge(self, now: float) -> int:
        """Drop expired values and tombstones; return how many."""
        ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


class MemoryStore:
    """A dict keyed by key; fine for tests, the simulator and nodes without a data dir."""

    def __init__(self) -> None:
        self._data: dict[bytes, Record] = {}

    def get(self, key: bytes) -> Record | None:
        return self._data.get(key)

    def put(self, record: Record) -> bool:
        if not newer(record, self._data.get(record.key)):
            return False
        self._data[record.key] = record
        return True

    def remove(self, key: bytes) -> None:
        self._data.pop(key, None)

    def records(self) -> Iterator[Record]:
        return iter(list(self._data.values()))

    def in_range(self, low: int, high: int) -> Iterator[Record]:
        return (
            r
            for r in list(self._data.values())
            if ids.in_interval(r.key_id, low, high, right_open=False)
        )

    def purge(self, now: float) -> int:
        dead = [k for k, r in self._data.items() if not r.live(now)]
        for k in dead:
            del self._data[k]
        return len(dead)

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key      BLOB PRIMARY KEY,
    key_id   BLOB NOT NULL,   -- 20 bytes, big-endian: byte order is ring order
    value    BLOB,            -- NULL: a tombstone
    stamp    INTEGER NOT NULL,
    writer   BLOB NOT NULL,
    expires  REAL             -- NULL: never
);
CREATE INDEX IF NOT EXISTS records_by_id ON records (key_id);
"""


class DiskStore:
    """sqlite3 (stdlib) in WAL mode: every committed write survives the process being killed."""

    FILENAME = "store.sqlite3"

    def __init__(self, directory: str | Path) -> None:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / self.FILENAME
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives the process dying (not a power cut) and costs
        # no fsync; the node's writes stay in the microseconds.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @staticmethod
    def _row(row: tuple[bytes, bytes | None, int, bytes, float | None]) -> Record:
        key, value, stamp, writer, expires = row
        return Record(key, value, Version(stamp, writer), expires)

    _COLUMNS = "key, value, stamp, writer, expires"

    def get(self, key: bytes) -> Record | None:
        row = self._db.execute(
            f"SELECT {self._COLUMNS} FROM records WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else self._row(row)

    def put(self, record: Record) -> bool:
        if not newer(record, self.get(record.key)):
            return False
        v = record.version
        self._db.execute(
            "INSERT OR REPLACE INTO records (key, key_id, value, stamp, writer, expires) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (record.key, ids.to_bytes(record.key_id), record.value, v.stamp, v.writer,
             record.expires_at),
        )  # fmt: skip
        return True

    def remove(self, key: bytes) -> None:
        self._db.execute("DELETE FROM records WHERE key = ?", (key,))

    def records(self) -> Iterator[Record]:
        rows = self._db.execute(f"SELECT {self._COLUMNS} FROM records").fetchall()
        return (self._row(r) for r in rows)

    def in_range(self, low: int, high: int) -> Iterator[Record]:
        lo, hi = ids.to_bytes(low), ids.to_bytes(high)
        if low < high:
            where, args = "key_id > ? AND key_id <= ?", (lo, hi)
        else:  # the interval wraps past zero (or is the whole ring when low == high)
            where, args = "key_id > ? OR key_id <= ?", (lo, hi)
        rows = self._db.execute(
            f"SELECT {self._COLUMNS} FROM records WHERE {where}", args
        ).fetchall()
        return (self._row(r) for r in rows)

    def purge(self, now: float) -> int:
        cur = self._db.execute(
            "DELETE FROM records WHERE expires IS NOT NULL AND expires <= ?", (now,)
        )
        return cur.rowcount

    def __len__(self) -> int:
        count: int = self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        return count

    def close(self) -> None:
        self._db.close()
