"""A node's data dir: one node at a time, and the address it is known by.

The data dir holds a node's store, its admin cookie and the peers it remembers. Two nodes on
one data dir would write over each other's store, and a node that restarts under another
address gets another id (SHA-1 of the address) while the peers it remembers know the old one.
So a node holds an exclusive lock on ``lock`` while it runs (``flock``: the kernel drops it when
the process dies, however it dies, so a crash leaves nothing stale to clean up), and the data
dir keeps the address the node advertised (``address``); a later start under another address
is refused unless the caller says the node moved.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from .net import Address, format_addr, parse_addr

LOCK_FILE = "lock"
ADDRESS_FILE = "address"
RING_FILE = "ring"


class DataDirError(Exception):
    """The data dir cannot be used as asked (in use, another node's, unreadable)."""


class DataDirInUse(DataDirError):
    """Another node holds the data dir's lock; ``pid``: its process, when it says."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class DataDir:
    """An open data dir: locked until :meth:`close` (or the process ends)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._watched: dict[str, tuple[int, int]] = {}  # name -> (device, inode) (watch)
        self._fd: int | None = fd

    @classmethod
    def open(cls, path: str | Path) -> DataDir:
        """Create ``path`` if needed and lock it; DataDirError when another node holds it."""
        path = Path(path)
        try:
            # Its own user's alone, when made here (an operator's trial: 0755, and its store
            # 0644, with umask 022: every value readable by any user of the host). One made
            # beforehand keeps the mode its maker gave it.
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DataDirError(f"cannot use data dir {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            give = "give each node its own --data-dir"
            raise DataDirInUse(
                f"data dir {path} is in use by another node{who}; {give}", holder
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def watch(self, name: str) -> None:
        """Have :meth:`lost` look at the dir's file ``name`` too: one the node keeps open (the
        store's), which an operator can delete alone."""
        held = os.stat(self.path / name)
        self._watched[name] = (held.st_dev, held.st_ino)

    def lost(self) -> Path | None:
        """What was removed, moved or replaced since we opened it: the dir itself (its lock
        file is no longer the one we hold), else a file :meth:`watch` names; None when nothing
        was. (The files we have open live on, moved or unlinked: a start from our path would
        find none of them.)"""
        if self._fd is None:
            return None
        held = os.fstat(self._fd)
        if _replaced(self.path / LOCK_FILE, (held.st_dev, held.st_ino)):
            return self.path
        return next(
            (self.path / n for n, h in self._watched.items() if _replaced(self.path / n, h)), None
        )

    def close(self) -> None:
        """Unlock (the lock file stays: removing it would race with a node taking it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    def address(self) -> Address | None:
        """The address the node last advertised from this data dir, if any."""
        try:
            text = (self.path / ADDRESS_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DataDirError(f"cannot read {self.path / ADDRESS_FILE}: {exc}") from None
        try:
            return parse_addr(text)
        except ValueError as exc:
            raise DataDirError(f"{self.path / ADDRESS_FILE}: {exc}") from None

    def claim(self, addr: Address, *, moved: bool = False) -> Address | None:
        """Record ``addr`` as the node's address; DataDirError when the data dir remembers
        another one, unless ``moved`` (the node's address changed on purpose). Returns the
        address it remembered when that was another (None: none, or the same)."""
        known = self.address()
        if known is not None and known != addr and not moved:
            raise DataDirError(
                f"data dir {self.path} belongs to the node at {format_addr(known)}, not "
                f"{format_addr(addr)}: its id and its peers go with that address (start it "
                "there, give this node its own --data-dir, or pass --new-address if the node "
                "moved)"
            )
        if known == addr:
            return None
        self._write(ADDRESS_FILE, format_addr(addr))
        return known

    def ring(self) -> str | None:
        """The name of the ring the data dir's node belongs to ("": the ring with no name);
        None when no node has started on it yet."""
        try:
            return (self.path / RING_FILE).read_text().strip()
        except FileNotFoundError:
            return "" if (self.path / ADDRESS_FILE).exists() else None
        except OSError as exc:
            raise DataDirError(f"cannot read {self.path / RING_FILE}: {exc}") from None

    def claim_ring(self, ring: str) -> None:
        """Record that the node belongs to the ring named ``ring``; DataDirError when the data
        dir's node belongs to another (its id and its peers are that ring's)."""
        known = self.ring()
        if known is not None and known != ring:
            said = f"--ring {known}" if known else "no --ring"
            raise DataDirError(
                f"data dir {self.path} belongs to a node of {_ring_text(known)}, not of "
                f"{_ring_text(ring)}: its id and its peers are that ring's (start it with "
                f"{said}, or give this node its own --data-dir)"
            )
        if ring and known != ring:
            self._write(RING_FILE, ring)

    def _write(self, name: str, line: str) -> None:
        """Replace the file ``name`` with ``line`` whole (a crash leaves the old one or this)."""
        tmp = self.path / (name + ".tmp")
        tmp.write_text(line + "\n")
        tmp.replace(self.path / name)


def _ring_text(ring: str) -> str:
    return f"the ring {ring!r}" if ring else "the ring with no name"


def remembered_address(path: str | Path) -> Address | None:
    """The address a data dir remembers (None: none, or unreadable), without locking it."""
    try:
        return parse_addr((Path(path) / ADDRESS_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _replaced(path: Path, held: tuple[int, int]) -> bool:
    """Whether ``path`` no longer names the file ``held`` (its device and inode): it is gone,
    or another file is there. Unreadable for a moment: no alarm on that alone."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return (there.st_dev, there.st_ino) != held


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
