"""One kademlia identity per user: the id and UDP port the CLI and the shell use with kad://.

A kademlia node adds whoever asks it anything to its routing table and hands it out to
others. A client with a new id and port each time leaves a new contact behind each time, and
every lookup on the network that asks one of those waits kademlia's 5 s for it. So
``udpdht get --node kad://…`` and ``udpdht shell --attach kad://…`` keep one 20-byte id and
one port in the user's state directory (``$XDG_STATE_HOME/udpdht/kad_identity``, else
``~/.local/state/udpdht/``, beside the shell's history) and bind that port again when it is
free: the network keeps one contact for the user on this host, the same one every time.

Commands that run at once do not fight over it: the first holds a lock on the file while it
runs (:func:`claim`); the others use the same id on an ephemeral port and do not record it.
When the recorded port is taken by something else, the owner binds a fresh port, keeps the id
and records the new port; kademlia nodes replace the old contact (same id) once they find it
silent. Without a state directory that can be written, every command is a fresh identity, as
before.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import DecodeError
from . import codec

FILE_NAME = "kad_identity"


def state_dir() -> Path:
    """``$XDG_STATE_HOME/udpdht``, else ``~/.local/state/udpdht`` (as the shell's history)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "udpdht"


@dataclass
class Identity:
    """The id to use, the port to try first (None: any), and whether this process owns the
    record (holds its lock: it may record a new port)."""

    id: bytes
    port: int | None
    owner: bool
    path: Path | None = None
    _lock: IO[bytes] | None = None

    def bound(self, port: int) -> None:
        """The client's socket is bound to ``port``: record it when it is ours to record."""
        if not self.owner or self.path is None or port == self.port:
            return
        self.port = port
        _write(self.path, self.id, port)

    def release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()  # (closing the file drops its lock)
        self.owner = False


def _write(path: Path, node_id: bytes, port: int | None) -> None:
    text = json.dumps({"id": node_id.hex(), "port": port}) + "\n"
    temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(text, encoding="utf-8")
        os.chmod(temporary, 0o600)
        temporary.replace(path)


def _read(path: Path) -> tuple[bytes, int | None] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        node_id = bytes.fromhex(data["id"])
        codec.node_id(node_id)
        port = data.get("port")
        if port is not None and not (type(port) is int and 0 < port < 65536):
            port = None
        return node_id, port
    except (OSError, ValueError, KeyError, TypeError, DecodeError):
        return None


def _lock(path: Path) -> IO[bytes] | None:
    """The lock on ``path``'s lock file, held until the file is closed; None when another
    process holds it (or locks are not to be had)."""
    try:
        import fcntl
    except ImportError:  # (not on this platform: every command uses an ephemeral port)
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "ab")  # noqa: SIM115 (held open)
    except OSError:
        return None
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None
    return lock


def claim(directory: Path | None = None) -> Identity:
    """The user's kademlia identity, created on first use. The owner (the only command
    running) gets the recorded port; a command running beside it gets the id alone."""
    path = (directory or state_dir()) / FILE_NAME
    lock = _lock(path)
    found = _read(path)
    if found is None:
        node_id, port = os.urandom(codec.ID_BYTES), None
        if lock is not None:
            _write(path, node_id, None)
    else:
        node_id, port = found
    if lock is None:
        return Identity(node_id, None, owner=False, path=path)
    return Identity(node_id, port, owner=True, path=path, _lock=lock)
