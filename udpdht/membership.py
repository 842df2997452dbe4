"""What a node believes about other nodes beyond its routing tables. No sockets, no asyncio:
callers pass ``now``.

* :class:`FailureDetector` turns failed calls into a verdict. One failure is not evidence: a
  burst of lost datagrams, or a stall of our own event loop (an overload, a flood), looks the
  same as a crash from one call. A peer is declared dead only after ``strikes`` failed calls in
  a row with no answer between them, and a failure seen while our own loop was stalling does
  not count. A dead peer is remembered for a while so that nobody's hint brings it back at once.
* :class:`PeerMemory` remembers the peers a node has had in its leafset, a bounded list kept in
  the data dir. A node whose tables empty (every neighbour failed, or it restarted) rejoins
  through them instead of declaring itself a ring of one, which would split the ring in two.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from . import ids
from .net import check_peer_addr, format_addr, parse_addr
from .routing import Peer


class FailureDetector:
    """Consecutive failures per peer, and the peers declared dead lately."""

    MAX_SUSPECTS: ClassVar[int] = 4096  # bounded: a node may call many peers that never answer

    def __init__(self, strikes: int = 2, memory: float = 30.0) -> None:
        if strikes < 1:
            raise ValueError("strikes must be at least 1")
        self.strikes = strikes
        self.memory = memory  # seconds a dead peer is not offered or taken as a hint
        self._suspects: dict[int, int] = {}  # peer id -> failures in a row
        self._dead: dict[int, float] = {}  # peer id -> until when; ordered by expiry

    def failed(self, peer_id: int, now: float, *, stalled: bool = False) -> bool:
        """Count one failed call to ``peer_id``; True when that makes it dead (or it is)."""
        if stalled:
            return False  # our own loop was late: the call's timeouts say nothing of the peer
        count = self._suspects.pop(peer_id, 0) + 1
        if count < self.strikes:
            if len(self._suspects) >= self.MAX_SUSPECTS:
                del self._suspects[next(iter(self._suspects))]
            self._suspects[peer_id] = count
            return False
        self.declare_dead(peer_id, now)
        return True

    def declare_dead(self, peer_id: int, now: float) -> None:
        self._suspects.pop(peer_id, None)
        self._dead.pop(peer_id, None)  # re-insert: the dict stays ordered by expiry
        self._dead[peer_id] = now + self.memory
        while next(iter(self._dead.values())) < now:
            self._dead.pop(next(iter(self._dead)))

    def answered(self, peer_id: int) -> None:
        """The peer answered a call: it is not suspected any more (nor dead)."""
        if self._suspects:
            self._suspects.pop(peer_id, None)
        if self._dead:
            self._dead.pop(peer_id, None)

    def suspected(self, peer_id: int) -> bool:
        return peer_id in self._suspects

    def recently_dead(self, peer_id: int, now: float) -> bool:
        return self._dead.get(peer_id, 0.0) > now


class PeerMemory:
    """The last ``size`` distinct peers seen in the leafset, most recent last, optionally kept
    in ``path`` (JSON) so that a restarted node knows whom to ask."""

    FORMAT: ClassVar[str] = "udpdht.peers/1"

    def __init__(
        self, path: Path | None, size: int = 64, *, verify_ids: bool = True, ring: str = ""
    ) -> None:
        self.path = path
        self.size = size
        self.verify_ids = verify_ids
        self.ring = ring  # (the ring whose ids a remembered peer's must be)
        self._peers: OrderedDict[int, Peer] = OrderedDict()
        self._dirty = False
        self._forgotten = False
        self.error: str | None = None  # why the last write of the file failed (None: it did not)

    def __len__(self) -> int:
        return len(self._peers)

    def peers(self) -> list[Peer]:
        """Most recently seen first."""
        return list(reversed(self._peers.values()))

    def remember(self, peers: Iterable[Peer], own: int) -> None:
        for peer in peers:
            if peer.id == own:
                continue
            old = self._peers.pop(peer.id, None)
            self._peers[peer.id] = peer
            self._dirty = self._dirty or old != peer
        while len(self._peers) > self.size:
            self._peers.popitem(last=False)
            self._dirty = True

    def drop(self, peer_id: int) -> bool:
        """Forget one peer (it left its ring for good); returns whether it was remembered.
        Peers that crashed stay: the probes of remembered peers and the loop checks find
        them again once they are back, which is what the memory is for."""
        if self._peers.pop(peer_id, None) is None:
            return False
        self._dirty = True
        return True

    def forget(self) -> None:
        """Forget every peer, here and (at the next save) in the file; a later :meth:`load`
        finds nothing."""
        self._dirty = True
        self._peers.clear()
        self._forgotten = True

    def load(self) -> int:
        """Read the file, if any; returns how many peers it gave. A damaged file is ignored
        (and replaced at the next save): it only ever speeds up a rejoin."""
        if self.path is None or self._forgotten:
            return 0
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") != self.FORMAT:
                return 0
            items = data["peers"][: self.size]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0
        loaded = []
        for item in items:
            try:
                host, port = parse_addr(str(item[1]))
                peer = Peer(ids.from_hex(str(item[0])), check_peer_addr(host, port))
            except (ValueError, TypeError, IndexError, KeyError):
                continue
            if not self.verify_ids or peer.id_matches(self.ring):
                loaded.append(peer)
        for peer in reversed(loaded):  # the file lists the most recent first
            self._peers[peer.id] = peer
        return len(loaded)

    def save(self) -> bool:
        """Write the file if anything changed; returns whether it wrote."""
        if self.path is None or not self._dirty:
            return False
        body = {
            "format": self.FORMAT,
            "peers": [[ids.to_hex(p.id), format_addr(p.addr)] for p in self.peers()],
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)  # atomic: a reader sees the old file or the new one
        except OSError as exc:
            self.error = f"{exc.filename or self.path}: {exc.strerror or exc}"
            return False
        self._dirty = False
        self.error = None
        return True
