"""Keeping the ring: the periodic rounds and the ring methods peers call.

Maintenance follows the Chord paper with Zave's corrections ("Reasoning about identifier spaces:
how to make Chord correct", 2017), and checks what peers claim before it acts on it:

* **stabilize**: ask the first successor for its neighbours; if it does not answer, ask the
  others at once and take the nearest that does (a run of dead successors costs one timeout).
  The successor list becomes ``[s] + s's list`` (cut to L/2, cut where it wraps past us). If
  ``s`` knows of nodes between us and it, the nearest is asked directly and adopted only if it
  answers. Then ``s`` is notified, unless that would change nothing (it noted our
  ``neighbors`` call as its predecessor's, and holds our predecessors already).
* **rectify** (on a notify from ``n``): ``n`` becomes the predecessor if there is none, if it
  lies between the current one and us, or if the current one no longer answers, and only once
  ``n`` has answered ``neighbors`` naming us as its successor (a stranger's socket that answers
  only ``ping`` must not sit in front of us). The predecessor half of the leafset is replaced by
  ``[n] + n's predecessors``.
* **check_predecessor** pings the predecessor; one declared dead is dropped and the next takes
  its place (node.Node.peer_failed: two failures in a row, not one).
* **fix_fingers** refreshes one finger per round that needs a lookup; fingers the leafset can
  answer for are filled for free. The lookup asks our best guess at the owner first (the
  finger as it stands, or a node heard from since that is nearer): one hop, mostly. A node
  that joins takes its first fingers from its successor (seed_fingers), not a lookup each.
* **walk_view** (rings of up to WALK_MAX nodes, while the node coordinates reads and writes):
  the successor lists, asked round the ring, fill the ring view that coordinators guess a key's
  primary from, so a guess is right the first time (PROTOCOL.md section 9.6c).
* **leaving** is taken only from the leaving node itself.
* **rejoin**: a node that had peers and lost them all joins again through the peers it
  remembers and its bootstrap addresses, instead of serving as a ring of one.

Every period is drawn uniformly from ½–1½ × its mean, so nodes do not fall into lockstep.

What a round costs follows what changes, not the clock. For ``FAST_ROUNDS`` rounds after the
leafset changed (or a peer failed) rounds come twice as often, so a ring settles sooner after
joins; once the leafset has stayed the same for ``CALM_ROUNDS`` rounds they come half as often
(any change brings the full rate back at once); the predecessor is pinged only when it has
not notified us, nor asked our neighbours as its successor's, within the round (the liveness
evidence a ping would fetch); and
finger refreshes that bring no news come every 2nd, 4th … ``MAX_FINGER_SKIP``-th round (an
empty finger filled, one that moved far, any move in a ring small enough to walk, or a peer
declared dead brings every round back; PROTOCOL.md section 9.8 says which moves count); and
probes of remembered peers that keep finding our own ring come up to 8 times less often.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import ids
from .errors import BadRequest, DhtError, RpcTimeout
from .lookup import MALFORMED, PEER_FAILURES, LookupFailed
from .net import Address, check_peer_addr, format_addr, resolve
from .ratelimit import source_of
from .routing import Peer, RingView, arg_id, ordered_run, peers_from_wire
from .text import plural

if TYPE_CHECKING:
    from .node import Node

T = TypeVar("T")


class _Relay:
    """Sends one thing at a time, now rather than at the next round: ``kick`` while a send
    runs makes one more after it (news that came meanwhile), at most ``limit`` in a row; the
    next ``kick`` then starts again. ``send`` returns False when there was no one to send to."""

    __slots__ = ("_again", "_limit", "_send", "_spawn", "_task", "sent")

    def __init__(
        self,
        send: Callable[[], Awaitable[bool]],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        limit: int,
    ) -> None:
        self._send, self._spawn, self._limit = send, spawn, limit
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.sent = 0  # sends made (for tests and status)

    def kick(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = self._spawn(self._run())

    def idle(self) -> bool:
        return self._task is None or self._task.done()

    async def _run(self) -> None:
        for _ in range(self._limit):
            self._again = False
            if not await self._send():
                return
            self.sent += 1
            if not self._again:
                return


#: The warning when the data dir's peers.json cannot be written.
NOT_REMEMBERED = (
    "cannot write %s: the peers of its ring are not remembered; started again without "
    "--bootstrap, this node may begin a ring of its own"
)


class Maintenance:
    """The ring side of a node: its maintenance rounds, and the handlers of ``neighbors``,
    ``notify``, ``succs``, ``leaving``, ``view``, ``hello`` and ``token``."""

    MAX_NOTIFIERS = 64  # recent notifiers remembered for hints (see _hint_for)
    SAVE_PEERS_EVERY = 30.0  # seconds between writes of the remembered peers (when changed)
    MAX_REJOIN_WAIT = 10.0  # seconds between rejoin attempts, at most
    REJOIN_PEERS = 8  # remembered peers a rejoin attempt asks, most recent first
    MAX_WALK = 8  # nodes adopted one after another in one stabilize, walking back to our place
    FAST_ROUNDS = 4  # rounds after a change that come twice as often
    PROBE_EVERY = 5.0  # mean seconds between probes of a remembered peer absent from our ring
    MAX_PROBE_BACKOFF = 8  # ... times this at most, after probes that found our own ring
    SAME_RING_SKIP = 600.0  # seconds a probed peer found in our own ring is not probed again
    CALM_ROUNDS = 10  # rounds with the same leafset before rounds come half as often
    MAX_FINGER_SKIP = 16  # finger refreshes that change nothing back off to one in this many
    FINGER_SLACK = 16  # a finger that moved past about this many nodes is news (fix_fingers)
    LEFT_MEMORY = 30.0  # seconds a node that left is not remembered again (see _rpc_leaving)
    MAX_LEFT = 4096  # ... and at most this many of them: the newest (see _note_left)
    # Asks for the address token of our predecessor and successor come this share of a token
    # period apart (_keep_tokens; ours, 300 s, stands for theirs): less than one period, so
    # the one we hold always passes their rate limits.
    TOKEN_SHARE = 0.4
    WALK_MAX = 256  # rings estimated larger than this are not walked (see walk_view)
    WALK_EVERY = 40.0  # seconds between walks at least (the view trusts what it heard 60 s)
    WALK_GROWTH = 1.5  # ... or sooner, once the ring has grown this much since the last
    WALK_REFUSALS = 2  # refusals of our reads and writes since the last walk that call for one
    STALE_LISTS = 0.5  # stabilize periods a neighbour's list is taken without a node that left

    def __init__(self, node: Node) -> None:
        self.node = node
        self._notifiers: OrderedDict[int, tuple[Peer, float]] = OrderedDict()
        self._next_finger = 0
        self._next_rejoin = 0.0
        self._rejoin_wait = node.config.stabilize_period
        # The bootstrap addresses as the last rejoin attempt resolved them (rejoins_through)
        self._bootstrap_addrs: list[Address] = []
        self._next_save = 0.0
        self._checks: dict[tuple[str, int], asyncio.Task[Any]] = {}  # see _shared
        #: The predecessor that last told us we are its successor (a notify, or a ``neighbors``
        #: call as its successor's: _noted), and when: the
        #: link between us is mutual, so the range we are primary for is what it thinks too.
        self.pred_heard: tuple[int, float] = (-1, float("-inf"))
        #: The successor that last named us its predecessor (its ``neighbors`` answer), and
        #: when: it no longer takes writes for our range.
        self.succ_heard: tuple[int, float] = (-1, float("-inf"))
        #: Since when each of the two has named us without a break (see agreement).
        self._pred_since = self._succ_since = float("-inf")
        #: The successor whose last ``neighbors`` answer said that it noted us as its
        #: predecessor (``pred``: our call counted as a notify's liveness evidence).
        self._noted_by: int | None = None
        self._loop_check: asyncio.Task[None] | None = None
        self.calm = 0  # rounds since the leafset last changed (or a peer failed)
        self._finger_skip = 1  # run fix_fingers one round in this many
        self._finger_wait = 0  # rounds until the next fix_fingers
        self._fingers_doubted = float("-inf")  # fix_fingers every round until then (forget)
        self.failures = 0  # peers that failed to answer (Node.peer_failed counts them)
        self._next_probe = 0.0  # loop time of the next probe of a remembered peer
        self._probe_turn = 0  # which absent remembered peer is probed next
        self._probe_backoff = 1  # PROBE_EVERY times this between probes (see probe_remembered)
        self._probe: asyncio.Task[None] | None = None
        self._same_ring: dict[int, float] = {}  # probed peers found in our ring: skip until
        self._walk: asyncio.Task[int] | None = None  # see walk_view
        self._intro: asyncio.Task[int] | None = None  # see introduce
        self._hellos: deque[Peer] = deque(maxlen=self.RECENT_HELLOS)  # see _rpc_hello
        # The hellos being checked: sender's id -> the datagram's source (_rpc_hello)
        self._hello_checks: dict[int, Hashable] = {}
        # (when, source) of each first page given lately (_rpc_view)
        self._view_starts: deque[tuple[float, Hashable]] = deque(maxlen=self.VIEW_STARTS)
        #: The last walk: when, the ring's size then, the refusals our reads and writes had had,
        #: and whether it started before our neighbourhood was calm (CALM_ROUNDS).
        self._walked: tuple[float, int, int, bool] = (float("-inf"), 0, 0, False)
        self.walks = 0  # walks that came round the ring (walk_view)
        self._walked_round_at = float("-inf")  # when the last of them did
        # Nodes that told us they left: when (see left_lately); oldest first (_note_left).
        self._left: dict[int, float] = {}
        self._told: tuple[Peer | None, Peer | None] = (None, None)  # see _tell_neighbours
        self._outside_since: float | None = None  # see _note_agreement
        self._outside_told = False
        self._checked_change: float | None = None  # the neighbourhood change last loop-checked
        self.merges = 0  # loop checks that found a node of another loop or ring (check_loop)
        #: The share of quiet rounds that run a loop check from a random far node: LOOP_CHECK,
        #: halved by each such check that finds nothing, down to LOOP_CHECK_MIN (see
        #: _check_loop_once).
        self.loop_share = self.LOOP_CHECK
        self._stabilizing = asyncio.Lock()  # one stabilize at a time: a round's or an early one
        self._last_stabilize = float("-inf")  # loop time the last stabilize started
        # What is done now rather than at the next round, one at a time (_Relay): a stabilize
        # when a node between us and our successor told us of itself (stabilize_soon); our
        # predecessors to our successor (a notify) and our successors to our predecessor
        # (succs) when they change (_pass_on, _pass_back).
        self.early = _Relay(self._stabilize_early, node.background, self.MAX_EARLY)
        self.forward = _Relay(self._notify_successor, node.background, self.MAX_EARLY)
        self.backward = _Relay(self._send_successors, node.background, self.MAX_EARLY)
        #: (new predecessor, the one it replaced, when): a notify sent again (its answer was
        #: lost) gets the same ``was``.
        self._replaced: tuple[int, Peer, float] | None = None
        self._token_asked: dict[int, float] = {}  # neighbour id -> when (see _keep_tokens)

    def register(self) -> None:
        ep = self.node.endpoint
        # Applying notify or leaving twice is harmless: their replies are not cached.
        ep.register("neighbors", self._rpc_neighbors, idempotent=True)
        ep.register("notify", self._rpc_notify, idempotent=True)
        ep.register("leaving", self._rpc_leaving, idempotent=True, proven=True)
        ep.register("succs", self._rpc_succs, idempotent=True)
        ep.register("view", self._rpc_view, idempotent=True)
        ep.register("hello", self._rpc_hello, idempotent=True)
        ep.register("token", self._rpc_token, idempotent=True, proven=True)

    def reset(self) -> None:
        """The node took a new id (it advertised another address): start the fingers over."""
        self._next_finger = 0

    def peer_declared_dead(self, peer_id: int) -> None:
        """A peer declared dead: no hint may point at it any more; and nodes are gone, so
        fingers may point at others of them still: they are refreshed every round for YOUNG
        periods."""
        self._notifiers.pop(peer_id, None)
        self._same_ring.pop(peer_id, None)  # it may be cut off, in a ring of its own: probe it
        self._probe_at_first_pace()  # ... soon
        now = asyncio.get_running_loop().time()
        self._fingers_doubted = now + self.YOUNG * self.node.config.stabilize_period

    def round_period(self) -> float:
        """The mean seconds between rounds now: half the configured period right after a
        change (news travels one node per round: the ring settles sooner), the period itself,
        twice that when calm."""
        period = self.node.config.stabilize_period
        if self.calm < self.FAST_ROUNDS:
            return period / 2
        return 2 * period if self.calm >= self.CALM_ROUNDS else period

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.node.config.stabilize_period
        while True:
            await asyncio.sleep(self.round_period() * (0.5 + self.node.rng.random()))
            start = loop.time()
            try:
                shape = self._shape()
                failures = self.failures
                await self.stabilize()
                # Once per change of our neighbourhood while it is young (after joins, when
                # loops form), starting near us; once it is quiet, in a share of the rounds from
                # a random far node (the net for what the first misses: loops, rings after a
                # partition). While young, those found nothing the first did not, at twice
                # the hops (1,000 nodes by joins: 166k datagrams instead of 191k).
                young = self.node.replicator.quiet_for() < self.YOUNG * period
                changed_at = self.node.replicator.changed_at()
                if young and changed_at != self._checked_change:
                    self._check_loop_soon(changed_at)
                elif not young and self.node.rng.random() < self.loop_share:
                    self._check_loop_soon()
                pred_heard, at = self.pred_heard
                pred = self.node.leafset.predecessor
                if pred is None or pred.id != pred_heard or start - at > self.round_period():
                    await self.check_predecessor()
                self._finger_wait -= 1
                # Every round while a peer declared dead lately casts doubt on them (forget).
                if self._finger_wait <= 0 or start < self._fingers_doubted:
                    changed = await self.fix_fingers()
                    skip = 1 if changed else min(2 * self._finger_skip, self.MAX_FINGER_SKIP)
                    self._finger_skip = self._finger_wait = skip
                self._remember_peers(start)
                if start >= self._next_probe:
                    every = self.PROBE_EVERY * self._probe_backoff
                    self._next_probe = start + every * (0.5 + self.node.rng.random())
                    self._probe_soon()
                self._walk_if_due(start)
                self.node.replicator.keep_settling()
                self._tell_neighbours()
                self._note_agreement(start)
                self._keep_tokens(start)
                quiet = self._shape() == shape and self.failures == failures
                self.calm = self.calm + 1 if quiet else 0
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not silently stop maintenance for good
                self.node.log.exception("maintenance round failed")
            self.node.log.debug("maintenance round took %.3f s", loop.time() - start)

    def _tell_neighbours(self) -> None:
        """Log a new predecessor or successor (a node joined next to us, or one left and the
        next took its place): once per change, at the end of the round that saw it (a leave:
        at once, after the line that says it left)."""
        ls = self.node.leafset
        now = (ls.predecessor, ls.successor)
        for what, old, new in zip(("predecessor", "successor"), self._told, now, strict=True):
            if new is not None and (old is None or old.id != new.id):
                was = f" (was {old})" if old is not None else ""
                self.node.log.info("%s is now %s%s", what, new, was)
        self._told = now

    OUTSIDE_AFTER = 60.0  # seconds a node of a ring goes unnamed by its neighbours, then says so

    def _note_agreement(self, now: float) -> None:
        """Say so when the ring has not taken us in for OUTSIDE_AFTER seconds: our successor
        and predecessor do not name us (agreed), once; and once more when they do. A node
        advertising an address its peers do not reach it at (or behind a firewall that drops
        what they send it) joined, served clients' puts and gets, and stayed "settling" for
        good, its ring never listing it and no log saying so (an operator's trial)."""
        ls = self.node.leafset
        if self.agreed(now) or not self.node.member or self.node.isolated or ls.successor is None:
            if self._outside_told:
                self.node.log.info("the ring has taken this node in: its neighbours name it")
            self._outside_since, self._outside_told = None, False
            return
        if self._outside_since is None:
            self._outside_since = now
        elif not self._outside_told and now - self._outside_since >= self.OUTSIDE_AFTER:
            self._outside_told = True
            self.node.log.warning(
                "the ring has not taken this node in for %.0f s: its successor %s and its "
                "predecessor %s do not name it. Do its peers reach it at %s? (--advertise, "
                "or a firewall that drops what they send to this port)",
                now - self._outside_since,
                ls.successor,
                ls.predecessor,
                format_addr(self.node.addr),
            )

    def _keep_tokens(self, now: float) -> None:
        """Ask our predecessor and successor for our address token (PROTOCOL.md 9.3, `token`)
        when we hold none from them or asked TOKEN_SHARE of a token period ago: every request
        of ours to them carries it, and draws on a share of their rate limit that a flood in
        our name cannot spend (pings from a neighbour's address, past its share, had its own
        requests dropped until its peer took it for dead: an attack on real nodes)."""
        ls = self.node.leafset
        ep = self.node.endpoint
        every = self.TOKEN_SHARE * ep.config.token_period
        asked: dict[int, float] = {}
        for peer in (ls.predecessor, ls.successor):
            if peer is None or peer.id in asked:
                continue
            last = self._token_asked.get(peer.id, float("-inf"))
            # (none held: the last ask failed; again after a round, not at every one)
            lacking = ep.token_for(peer.addr) is None and now - last >= self.round_period()
            if now - last >= every or lacking:
                last = now
                self.node.background(self._ask_token(peer))
            asked[peer.id] = last
        self._token_asked = asked

    async def _ask_token(self, peer: Peer) -> None:
        """Call `token`: the peer's RPC layer answers a retry with our token first, which ours
        keeps for that peer. Not a sign of life or death: the round's own calls judge that."""
        with contextlib.suppress(DhtError, *MALFORMED):
            await self.node.call_peer(peer, "token", tries=2)

    def _rpc_token(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        """Nothing: the request needs a fresh token for its source, so a caller without one
        gets a retry that hands it over (PROTOCOL.md 9.3). (A plain function: a coroutine
        handler would cost a task and a handler slot for nothing.)"""
        return {}

    def joined(self, successor: Peer) -> None:
        """Our join logged the successor it took: the round's end need not say it again (a
        new-user trial of issue #11: "successor is now X" right after "joined the ring:
        successor X")."""
        self._told = (self._told[0], successor)

    def _shape(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        ls = self.node.leafset
        return tuple(p.id for p in ls.successors), tuple(p.id for p in ls.predecessors)

    def _remember_peers(self, now: float) -> None:
        peers = self.node.leafset.peers()
        if peers:
            self.node.gained_neighbours()
        # A node that left may still be named by a neighbour's list that crossed its
        # `leaving` (until it fails its calls): it must not come back into the memory.
        self.node.memory.remember(
            [p for p in peers if not self.left_lately(p.id, now)], self.node.id
        )
        # Written when changed, at most every SAVE_PEERS_EVERY: the first peers as soon as
        # there are any (a round that found none must not put the first write off for 30 s).
        if now >= self._next_save:
            memory = self.node.memory
            failing = memory.error
            if memory.save():
                self._next_save = now + self.SAVE_PEERS_EVERY
                if failing is not None:
                    self.node.log.info("the peers of its ring are written again")
            elif memory.error is not None and failing is None and not self.node.data_dir_lost:
                # Said once (it is tried again every round): a node whose peers.json could
                # not be written said nothing, and started again it found no peers, and began
                # a ring of its own (a maintainer's review).
                self.node.log.warning(NOT_REMEMBERED, memory.error)

    async def stabilize(self) -> None:
        async with self._stabilizing:
            self._last_stabilize = asyncio.get_running_loop().time()
            await self._stabilize()

    EARLY_GAP = 0.05  # seconds from one stabilize to an early one, at least
    MAX_EARLY = 8  # early stabilizes one after another at most, before the task ends

    def stabilize_soon(self) -> None:
        """A node between us and our successor told us of itself (it joined just after us,
        or a loop check found us): walk to it now instead of at the next round, so that the
        ring is whole when the join returns rather than a round or more later (100 servers
        that join one after another in one process: 5 of 100 successors right when the last
        join returned). The walk is stabilize's own, so the node is adopted only once it
        answers; strangers can make us stabilize at most once per EARLY_GAP."""
        self.early.kick()

    @property
    def early_stabilizes(self) -> int:
        """Stabilizes started by such a node, not by the clock."""
        return self.early.sent

    async def _stabilize_early(self) -> bool:
        wait = self._last_stabilize + self.EARLY_GAP - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            await self.stabilize()
        except (DhtError, *PEER_FAILURES) as exc:
            self.node.log.debug("early stabilize failed: %s", exc)
        return True

    async def _stabilize(self) -> None:
        ls = self.node.leafset
        # The first successor that answers. One that does not is skipped this round (and
        # dropped once the failure detector is sure); the list is rebuilt from the one that
        # answers, so it holds only nodes after it. None answers: the nearest node we know.
        tried = list(ls.successors)
        found = await self._first_answering(tried) if tried else None
        if found is None:
            fallback = [p for p in self._fallback_successors() if p not in tried]
            found = await self._first_answering(fallback) if fallback else None
        if found is None:
            if self.node.isolated:
                await self._rejoin()
            return  # alone: a ring of one, or one that waits to rejoin
        succ, (succs, preds, hint) = found
        succ, new_list, preds = await self.walk_back(succ, succs, preds, hint)
        if not self._without_left([succ]):
            # It said it left while we asked it (its answer crossed its `leaving`): taken, it
            # came back as our successor, and we a member, until it failed its calls; in a
            # ring of two the other node was then "isolated", refusing every read and write
            # (5 of 180 simulated admin leaves; a CI run of tests/test_cli_commands.py).
            return
        before = ls.successors
        ls.set_successors(new_list)
        self._pass_back(before)
        if preds and preds[0].id == self.node.id:
            self.heard_succ(succ.id)
        self.node.gained_neighbours()
        # A notify that would change nothing is left out: the successor has noted our call as
        # its predecessor's (pred_heard), and its predecessor list is what the notify would
        # make it. (Half the datagrams of a round with nothing new.)
        if self._noted_by != succ.id or [p.id for p in preds] != [
            p.id
            for p in ordered_run(
                succ.id, [self.node.peer, *ls.predecessors], ls.half, clockwise=False
            )
        ]:
            await self.notify(succ)

    async def walk_back(
        self,
        succ: Peer,
        succs: list[Peer],
        preds: list[Peer],
        hint: Peer | None,
    ) -> tuple[Peer, list[Peer], list[Peer]]:
        """From a successor that answered ``neighbors`` (``succs``, ``preds``, ``hint``), the
        nearest node after us that we can reach: ``(successor, [successor, *its list], its
        predecessors)``.

        Nodes between us and the successor: those it knows (its predecessors and its hint for
        us), and those we know ourselves (after many joins at once, the first node heard from
        every joiner, but its successor may know none of the nodes just after it). The nearest
        is adopted once it has answered (Zave), and what it knows of nodes between us and it
        is tried in turn: after joins faster than the rounds (a chain of joins on a fast
        network) a successor can be many nodes too far, and one round walks back.
        """
        new_list = [succ, *succs]
        now = asyncio.get_running_loop().time()
        for _ in range(self.MAX_WALK):
            mine = self._nearest_after(self.node.id, succ.id)
            candidates = [p for p in (hint, *preds, mine) if p is not None]
            # A node we declared dead lately is not tried again, except those the successor
            # names (its predecessors and its hint): it took them on after they answered, so
            # they are back (a node that froze for a while, or whose answers were late under
            # load), and our memory of their death must not keep them out of the ring.
            vouched = {p.id for p in preds} | ({hint.id} if hint is not None else set())
            between = [
                p
                for p in candidates
                if ids.in_interval(p.id, self.node.id, succ.id)
                and (p.id in vouched or not self.node.detector.recently_dead(p.id, now))
            ]
            if not between:
                break
            nearest = min(between, key=lambda p: ids.distance(self.node.id, p.id))
            try:
                nearer_succs, preds, hint = await self.neighbors_of(
                    nearest, tries=self.node.config.lookup_tries, successor=True
                )
            except PEER_FAILURES as exc:
                self.node.peer_failed(nearest, exc)
                break
            succ, new_list = nearest, [nearest, *nearer_succs]
        return succ, new_list, preds

    async def _first_answering(
        self, candidates: list[Peer]
    ) -> tuple[Peer, tuple[list[Peer], list[Peer], Peer | None]] | None:
        """The nearest of ``candidates`` (nearest first) that answers ``neighbors``, with its
        answer. The first is asked alone; only if it fails are the others asked, all at once,
        so that a run of dead successors costs one timeout, not one each."""
        first = candidates[0]
        try:
            return first, await self.neighbors_of(first, successor=True)
        except PEER_FAILURES as exc:
            self.node.peer_failed(first, exc)
        rest = candidates[1 : self.node.leafset.half + 2]
        tries = self.node.config.lookup_tries
        answers = await self._ask_all(rest, lambda p: self.neighbors_of(p, tries=tries))
        return next(((p, a) for p, a in zip(rest, answers, strict=True) if a is not None), None)

    async def _ask_all(
        self, peers: list[Peer], ask: Callable[[Peer], Awaitable[T]]
    ) -> list[T | None]:
        """``ask(peer)`` of every peer at once: the answers, None for each peer that failed
        (and has failed a call: node.peer_failed)."""
        answers = await asyncio.gather(*(ask(p) for p in peers), return_exceptions=True)
        out: list[T | None] = []
        for peer, answer in zip(peers, answers, strict=True):
            if isinstance(answer, PEER_FAILURES):
                self.node.peer_failed(peer, answer)
                out.append(None)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                out.append(answer)
        return out

    def _fallback_successors(self) -> list[Peer]:
        """With no successor left, the nodes we know of, nearest clockwise first."""
        known = {p.id: p for p in [*self.node.leafset.predecessors, *self.node.fingers.distinct()]}
        known.pop(self.node.id, None)
        return sorted(known.values(), key=lambda p: ids.distance(self.node.id, p.id))

    # --- ring unification: partitions that heal --------------------------------------------

    def _probe_soon(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = self.node.background(self.probe_remembered())

    def _probe_at_first_pace(self) -> None:
        """Probes of remembered peers every PROBE_EVERY again, from now (see probe_remembered)."""
        self._probe_backoff = 1
        soon = asyncio.get_running_loop().time() + self.PROBE_EVERY * (0.5 + self.node.rng.random())
        self._next_probe = min(self._next_probe, soon)

    def absent_peers(self) -> list[Peer]:
        """The peers we remember (PeerMemory) that our tables have lost: dead or gone, or
        alive on the other side of a partition, in a ring of their own."""
        node = self.node
        present = {node.id, *(p.id for p in node.leafset.peers())}
        present.update(p.id for p in node.fingers.distinct())
        now = asyncio.get_running_loop().time()
        for peer_id in [i for i, until in self._same_ring.items() if until < now]:
            del self._same_ring[peer_id]
        return [
            p for p in node.memory.peers() if p.id not in present and p.id not in self._same_ring
        ]

    async def probe_remembered(self) -> None:
        """Ask one remembered peer absent from our tables whether it lives; if it does, look
        for our place in its ring (check_loop), which joins two rings at our place.

        A partition leaves two rings, each of which has dropped the other side's nodes from
        its tables: stabilization alone never brings them back (Chord cannot merge two rings:
        Shafaat et al., "Dealing with network partitions in structured overlay networks").
        Every node remembers the peers of its leafset (in its data dir), so once the link is
        back each node finds, among the peers it remembers, some alive but absent from its
        ring. The loop check's random far node finds them too, but only now and then and not
        among the peers declared dead lately (all of the other side, until FAILED_MEMORY has
        passed): this probe takes them in turn, one every PROBE_EVERY seconds, dead or not,
        and costs one datagram when the peer does not answer.
        """
        node = self.node
        absent = self.absent_peers()
        if not absent or node.isolated or node.leafset.successor is None:
            return  # isolated: _rejoin does the same through these peers
        peer = absent[self._probe_turn % len(absent)]
        self._probe_turn += 1
        try:
            await self.neighbors_of(peer, tries=1)
        except (DhtError, *PEER_FAILURES):  # (ours too: calls in flight at their bound)
            return  # gone, or still cut off
        node.detector.answered(peer.id)  # alive: no longer kept out as dead
        if await self.check_loop(start=peer) is False:  # (None: its lookup failed; try later)
            self._same_ring[peer.id] = asyncio.get_running_loop().time() + self.SAME_RING_SKIP
            # Our own ring again: the peers joins pushed out of our leafset. Probes come half
            # as often after each, down to one in MAX_PROBE_BACKOFF periods, until a peer is
            # declared dead (forget: it may be on the other side of a partition) or a loop
            # check merges: maintenance that follows what changed, not the clock (3,000 nodes
            # joining at 200 a second: 15 % fewer probe lookups; at rest, one probe in 40 s).
            self._probe_backoff = min(2 * self._probe_backoff, self.MAX_PROBE_BACKOFF)

    def _walk_if_due(self, now: float) -> None:
        """Start a walk of the ring (walk_view) when our view is worth filling and one is due.

        Worth filling (checked in this order):

        - no walk under way, and we are not isolated;
        - a ring larger than the leafset covers and small enough to walk (WALK_MAX);
        - a calm neighbourhood (FAST_ROUNDS rounds without a change: no walks while nodes
          join around us);
        - we started within RingView.TRUSTED_FOR, or WALK_REFUSALS of our reads and writes
          were refused since the last walk (its primary was not in our view).

        Due, any of:

        - WALK_EVERY seconds since the last walk;
        - a ring WALK_GROWTH times as large as at the last walk, 2 periods after it;
        - the last walk went round while our neighbourhood was not calm yet (it may have
          passed nodes the successor lists did not name yet: on the simulator 1 node in 60
          missed one for over 30 s), and it has been calm CALM_ROUNDS rounds since.

        So a node that coordinates nothing, or whose guesses are right, stops walking."""
        node = self.node
        if (self._walk is not None and not self._walk.done()) or node.isolated:
            return
        size = node.leafset.ring_size()
        if size <= 2 * node.leafset.half or size > self.WALK_MAX or self.calm < self.FAST_ROUNDS:
            return  # the leafset covers the ring; too large a ring; joins around us
        last, walked_size, misdirected, early = self._walked
        young = node.uptime() < RingView.TRUSTED_FOR  # (a view it trusts 60 s is filling)
        if not young and node.replicator.misdirected - misdirected < self.WALK_REFUSALS:
            return  # the view's guesses are right (or no one asks this node to coordinate)
        period = node.config.stabilize_period
        grown = size > self.WALK_GROWTH * walked_size and now - last > 2 * period
        settled_since = early and self.calm >= self.CALM_ROUNDS
        if now - last < self.WALK_EVERY and not grown and not settled_since:
            return
        self._walked = (now, size, node.replicator.misdirected, self.calm < self.CALM_ROUNDS)
        self._walk = node.background(self.walk_view())

    def view_status(self) -> dict[str, Any]:
        """The ring view as status shows it: the nodes a coordinator places without a lookup
        (its leafset, and those of the view heard from within the last minute; ourselves
        included), the walks that came round the ring to fill it, and how long ago the last
        did (None: never)."""
        node = self.node
        now = asyncio.get_running_loop().time()
        known = node.view.heard_since(now - RingView.TRUSTED_FOR)
        known.update(p.id for p in node.leafset.peers())
        return {
            "nodes": len(known),
            "walks": self.walks,
            "last_walk_s": round(now - self._walked_round_at, 1) if self.walks else None,
        }

    HELLO_FLIGHT = 16  # hellos in flight at once (introduce)
    RECENT_HELLOS = 4  # the last nodes that said hello, named in a hello's answer
    VIEW_STARTS = 8  # first pages of our view given per stabilize period at most (_rpc_view)
    VIEW_RESENDS = 2  # ... of which one source takes at most this many

    def introduce_soon(self, successor: Peer) -> None:
        """Our join is done: introduce ourselves beside whatever follows (see introduce)."""
        if self._intro is None or self._intro.done():
            self._intro = self.node.background(self.introduce(successor))

    async def introduced(self, within: float) -> None:
        """Wait ``within`` seconds at most for our introduction under way (introduce) to end.
        The introduction goes on when the wait ends first or the waiter is cancelled
        (Server.bootstrap)."""
        intro = self._intro
        if intro is not None and not intro.done():
            await asyncio.wait({intro}, timeout=within)

    async def introduce(self, successor: Peer) -> int:
        """Right after our join, in a ring small enough to walk (WALK_MAX): take the view of
        our ``successor``, a page of L nodes at a time, then say ``hello`` to each node it
        names, HELLO_FLIGHT calls at a time. Our view names the ring at once, and theirs
        name us: a read or a write that any of them coordinates goes straight to its primary.
        Each answer names the last nodes that said hello there (RECENT_HELLOS): one that
        joined just before us, whose hello had not reached our successor yet when it gave us
        its view, is told of us too.

        Otherwise views fill only by lookups and by walks, the first once our neighbourhood
        is calm (2-3 s after a build; a walk at once follows successor lists that a ring
        built in a moment has not filled yet): right after 100 servers joined, a node's
        view held 40-48 of them, and a get cost 0.6 refusals. A hello is one round trip per
        node: N for a join, and the view N / L. Nodes that joined at the same moment as we
        did may be missed, and a successor that many join next to at once gives us an empty
        page (VIEW_STARTS, _rpc_view): the first walk finds those. Returns the hellos
        answered.

        A liar's pages cost at most a failed hello per node named: the hellos stop once more
        failed than answered (a ring's nodes answer)."""
        node = self.node
        if node.leafset.ring_size() > self.WALK_MAX:
            return 0
        page = node.config.leafset  # (what parse_peers takes)
        named: list[Peer] = []
        after: int | None = None
        for _ in range(self.WALK_MAX // page + 1):
            args = {} if after is None else {"after": ids.to_bytes(after)}
            try:
                reply = await node.call_peer(successor, "view", args, tries=2, pad=True)
                peers = node.parse_peers(reply["nodes"])
            except DhtError:
                break  # (busy, an older node, or ours: stabilize judges our successor)
            except MALFORMED as exc:
                node.peer_failed(successor, exc)
                break
            order = [-1 if after is None else after, *(p.id for p in peers)]
            if any(b <= a for a, b in itertools.pairwise(order)):
                node.peer_failed(successor, ValueError("a view page out of id order"))
                break  # (a liar's: its nodes might repeat, page after page)
            node.heard_of(peers, asyncio.get_running_loop().time())
            named += peers
            if len(peers) < page:
                break
            after = peers[-1].id
        else:
            return 0  # a ring larger than WALK_MAX: lookups and fingers route in it
        args = {"id": ids.to_bytes(node.id)}
        todo = [p for p in named if p.id != node.id]
        told = {p.id for p in todo} | {node.id}
        # (At most RECENT_HELLOS more, named by the answers: while hundreds join at once, as
        # on the simulator, they named a new node one answer in two: walks find those.)
        most = len(todo) + self.RECENT_HELLOS
        answered = failed = 0

        async def hello(peer: Peer) -> list[Peer] | None:
            """The nodes its answer names; None: no answer."""
            try:
                reply = await node.call_peer(peer, "hello", args, tries=1, pad=True)
                return node.parse_peers(reply["joined"])
            except RpcTimeout:
                # No longer a guess. Its failure detector is not told: one try, sent while a
                # ring joins, may go unanswered (200 servers joining one process at once:
                # live nodes declared dead, and a ring that did not form in 3 minutes).
                node.view.remove(peer.id)
                return None
            except (DhtError, *MALFORMED):
                return []  # an older node (no such method), an answer we ignore, or ours

        i = 0
        while i < len(todo) and failed <= answered:
            batch = todo[i : i + self.HELLO_FLIGHT]
            i += len(batch)
            for joined in await asyncio.gather(*(hello(p) for p in batch)):
                if joined is None:
                    failed += 1
                    continue
                answered += 1
                for p in joined:
                    if p.id not in told and len(todo) < most:
                        told.add(p.id)
                        todo.append(p)
        return answered

    def _rpc_view(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        """A page of our view for a node that joined (introduce): the first L nodes after the
        id ``after`` (from the start of the id space without it), in id order, of those heard
        of within RingView.TRUSTED_FOR and our leafset; fewer than L: the last page.

        At most VIEW_STARTS first pages a stabilize period: past that, an empty one, and the
        joiner's first walks fill its view. When many nodes join next to us at once, the ring
        is not in order yet, and every joiner saying hello to all we know overloads it (200
        servers through one, in one process: 40,000 hellos within a second; hellos timed
        out, live nodes were declared dead, and 101 of 300 sets failed). A source (an IP
        address; on 127.0.0.1 and ::1 an address and port: ratelimit.source_of) takes
        VIEW_RESENDS of them a period at most, enough for a resend whose answer was lost: 8
        sockets of one host asking every period took them all, and joiners got empty pages
        (an attack on real nodes)."""
        node = self.node
        now = asyncio.get_running_loop().time()
        if "after" not in args:
            starts, period, source = self._view_starts, node.config.stabilize_period, source_of(src)
            mine = sum(1 for t, s in starts if s == source and now - t < period)
            if mine >= self.VIEW_RESENDS or (
                len(starts) == starts.maxlen and now - starts[0][0] < period
            ):
                return {"id": ids.to_bytes(node.id), "nodes": []}
            starts.append((now, source))
        after = arg_id(args, "after") if "after" in args else -1
        count = node.config.leafset
        since = now - RingView.TRUSTED_FOR
        found = {p.id: p for p in node.view.page(after, count, since)}
        found.update((p.id, p) for p in node.leafset.peers() if p.id > after)
        nodes = [found[i] for i in sorted(found)[:count]]
        return {"id": ids.to_bytes(node.id), "nodes": [p.to_wire() for p in nodes]}

    def _rpc_hello(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        """A node that joined tells us of itself (introduce): once the ring vouches for it
        (_check_hello), our view takes it, a guess as a lookup's answer is (Node.heard_of).
        The answer names the last nodes that said hello before it and were vouched for
        (RECENT_HELLOS; a padded request: PROTOCOL.md 6a.1)."""
        peer = self.node.sender(args, src)
        joined = [p.to_wire() for p in self._hellos if p.id != peer.id]
        known = self.node.view.get(peer.id)
        source = source_of(src)
        if peer.id == self.node.id or (known is not None and known.addr == peer.addr):
            pass  # (ourselves, or a node the ring named to us already)
        elif (
            peer.id not in self._hello_checks
            and len(self._hello_checks) < self.HELLO_CHECKS
            and source not in self._hello_checks.values()
        ):
            self._hello_checks[peer.id] = source
            self.node.background(self._check_hello(peer))
        return {"id": ids.to_bytes(self.node.id), "joined": joined}

    # Hellos checked at once, one for each source; more at once are not taken (walks find
    # them): 8 sockets saying hello every quarter second held every check, and honest joiners'
    # hellos went unchecked (an attack on real nodes).
    HELLO_CHECKS = 8
    HELLO_HOPS = 3  # calls a check makes at most

    async def _check_hello(self, peer: Peer) -> None:
        """Take the sender of a hello into our view once a node of the ring names it the owner
        of its own id (_named_by_ring). A stranger's hello alone put it in our view before,
        under an id it picked by choosing its port: our reads and writes of the keys before
        that id then went to it, which answered forged records as a settled primary and
        swallowed acknowledged writes (an attack on real nodes). A joiner the ring does not
        name yet is found by walks."""
        try:
            named = await self._named_by_ring(peer)
            if not named:
                # Once more, a round later: the node our view places after it may not have
                # heard of it yet (a node joined between them meanwhile). Asked once, one
                # build in 20-40 (40 nodes, one after another; seeds 1-89) left a view short
                # of 1-10 nodes until a walk.
                await asyncio.sleep(self.round_period())
                named = await self._named_by_ring(peer)
        finally:
            self._hello_checks.pop(peer.id, None)
        if named:
            self.node.heard_of([peer], self.node.clock())
            if all(p.id != peer.id for p in self._hellos):
                self._hellos.append(peer)

    async def _named_by_ring(self, peer: Peer) -> bool:
        """Whether a node of the ring names ``peer`` (same id and address) the owner of its
        id: asked ``find``, the node our view places after it (its successor, which it
        notified before saying hello: one call), else our usual first guess, and the node it
        names next, HELLO_HOPS calls at most. Never ``peer`` itself."""
        since = self.node.clock() - RingView.TRUSTED_FOR
        after = [p for p in self.node.view.holders(peer.id, 2, since) if p.id != peer.id]
        via = after[0] if after else self.first_guess(peer.id)
        for _ in range(self.HELLO_HOPS):
            if via is None or via.id in (peer.id, self.node.id):
                return False
            try:
                reply = await self.node.call_peer(
                    via, "find", {"key": ids.to_bytes(peer.id)}, tries=2, pad=True
                )
                named = self.node.parse_peers(reply["nodes"])
                done = reply["done"] is True
            except (DhtError, *PEER_FAILURES):
                return False
            if done:
                return bool(named) and named[0].id == peer.id and named[0].addr == peer.addr
            via = named[0] if named else None  # (the node before it: the next hop)
        return False

    async def walk_view(self) -> int:
        """Walk the ring from our last successor back round to us, each step asking the last
        node named for its ``neighbors``, and take every successor named into our view (as a
        lookup's answer is taken: guesses, dropped when a call fails; node.heard_of). Returns
        the calls that were answered.

        A coordinator sends a read or a write straight to the primary its view guesses; a
        view that lacks the primary costs a refusal and a second round trip (at N=100 a
        node's view held 44-69 of the 100 eight seconds after they joined: 0.46 refusals a
        get). The walk costs about N / (L/2) calls, so only rings of up to WALK_MAX nodes are
        walked; larger ones route through fingers and lookups. Each step is a call to the
        node that named the next: one that does not answer, or answers for another id, ends
        the walk (and counts as its failure), so a liar's list costs at most one failed call
        of ours. Bounded: at most LeafSet.ring_size() / (L/2) + 4 steps.
        """
        node = self.node
        ls = node.leafset
        if not ls.successors:
            return 0
        me = node.id
        node.heard_of(ls.successors, asyncio.get_running_loop().time())  # the walk starts after
        cursor = ls.successors[-1]
        answered = 0
        walked = [p.id for p in ls.successors]
        for _ in range(ls.ring_size() // max(ls.half, 1) + 4):
            if cursor.id == me:
                self._round_walked(walked)
                break
            try:
                # (call_peer checks that the answer names the node called)
                reply = await node.call_peer(cursor, "neighbors", {}, tries=2, pad=True)
                succs = self._without_left(node.parse_peers(reply["succs"]))
            except PEER_FAILURES as exc:
                node.peer_failed(cursor, exc)
                break
            except DhtError:  # ours (calls in flight at their bound): the walk ends, no blame
                break
            answered += 1
            # In ring order from the cursor (a list that is not, a liar's, is cut where it
            # turns back: the walk only moves on), up to where it passes us.
            run = ordered_run(cursor.id, succs, len(succs), clockwise=True)
            ahead = [p for p in run if ids.in_interval(p.id, cursor.id, me)]
            node.heard_of(ahead, asyncio.get_running_loop().time())
            walked += [p.id for p in ahead]
            if len(ahead) < len(run):
                self._round_walked(walked)  # the list reached us: round
                break
            if not ahead:
                break  # an empty list: the walk can go no further
            cursor = ahead[-1]
        return answered

    def _round_walked(self, walked: list[int]) -> None:
        """A walk came round to us through these nodes: they are of our own ring, so
        probe_remembered need not ask whether they are (for SAME_RING_SKIP), as if each had
        been probed. Otherwise, in a ring small enough to walk, the probes cost more than the
        walk: a ``neighbors`` call and a lookup for each remembered peer outside our tables,
        one every PROBE_EVERY seconds (100 servers 20-30 s after they started: 0.55 of a
        node's 3.2 calls a second)."""
        now = asyncio.get_running_loop().time()
        self.walks += 1
        self._walked_round_at = now
        until = now + self.SAME_RING_SKIP
        for peer_id in walked:
            self._same_ring[peer_id] = until

    def heard_while_isolated(self, src: Address) -> None:
        """A node we remember (or a bootstrap) asked about us while we are rejoining: it is
        back, and rejoining too (its _rejoin pings us) or whole again. Our next round tries at
        once, not after the back-off: the lowest id of those rejoining starts the ring again
        there, and its own pings bring the others on in turn (a ring of two whose nodes both
        restarted: 16-18 s to form again before, the back-off's; PROTOCOL.md 9.10)."""
        if self.rejoins_through(src):
            self._next_rejoin = 0.0
            self._rejoin_wait = self.node.config.stabilize_period

    def rejoins_through(self, addr: Address) -> bool:
        """Whether ``addr`` is one of the addresses we rejoin through: a bootstrap address (as
        given, or as the last attempt resolved it), or a peer we remember (peers.json: our
        ring's nodes, most recent first)."""
        return (
            addr in self.node.bootstrap
            or addr in self._bootstrap_addrs
            or any(p.addr == addr for p in self.node.memory.peers())
        )

    @staticmethod
    async def _resolved(addr: Address) -> Address:
        """``addr`` as an IP literal (a host name resolved), or as it is if it cannot be."""
        try:
            return await resolve(addr)
        except (OSError, DhtError, ValueError):
            return addr

    async def _rejoin(self) -> None:
        """Every neighbour is lost: join again through the peers we remember and the bootstrap
        addresses, a few per round, backing off up to MAX_REJOIN_WAIT between attempts.

        When every one of them that answers has lost the ring too (the whole ring stopped and
        is starting again), none can take the others in: the one with the lowest id among
        them and us starts the ring again as its first node, and the others join it.
        """
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_rejoin:
            return
        own = self.node.addr
        remembered = [p.addr for p in self.node.memory.peers() if p.addr != own]
        # Every bootstrap address too, after the most recent peers, each resolved again (a
        # name's address may have moved): with 8 dead peers remembered first, a live
        # bootstrap address was never asked, and the node stayed cut off for good (a
        # reviewer's simulation); a name never matched a datagram's source (rejoins_through).
        self._bootstrap_addrs = [await self._resolved(a) for a in self.node.bootstrap]
        addrs = list(dict.fromkeys([*remembered[: self.REJOIN_PEERS], *self._bootstrap_addrs]))
        addrs = [a for a in addrs if a != own]
        lost: list[int] = []  # ids of the peers that answered, rejoining like us
        for addr in addrs:
            state = await self._state_of(addr)
            if state is None:
                continue
            if state[1]:
                lost.append(state[0])
                continue
            try:
                await self.node.join(addr)
            except (DhtError, *PEER_FAILURES) as exc:
                self.node.log.debug("rejoin through %s failed: %s", format_addr(addr), exc)
                continue
            self._rejoin_wait = self.node.config.stabilize_period
            return
        if lost and self.node.id < min(lost):
            self.node.member = False
            self.node.log.warning(
                "the ring is gone: the %s that answered %s rejoining too; this node, the "
                "lowest id of them, starts it again",
                plural(len(lost), "known peer"),
                "is" if len(lost) == 1 else "are",
            )
            return
        self._rejoin_wait = min(2 * self._rejoin_wait, self.MAX_REJOIN_WAIT)
        self._next_rejoin = loop.time() + self._rejoin_wait
        if lost:
            # (The whole ring is starting again, as it should after all stopped: INFO. Peers
            # stopped for good are among those counted; a new user took the WARNING for a
            # fault.)
            self.node.log.info(
                "the ring is starting again: %d of %d known peers answered, rejoining too, and "
                "one of them has a lower id: it starts the ring; trying again in %.0f s",
                len(lost),
                len(addrs),
                self._rejoin_wait,
            )
            return
        self.node.log.warning(
            "lost contact with the ring: none of %d known addresses answered; trying again in "
            "%.0f s (a node started with --new-ring begins a new ring at once)",
            len(addrs),
            self._rejoin_wait,
        )

    async def _state_of(self, addr: Address) -> tuple[int, bool] | None:
        """``(id, whether it is isolated too)`` of the node at ``addr`` by its ping, or None
        when it does not answer (or answers nonsense)."""
        try:
            reply = await self.node.endpoint.call(addr, "ping", tries=self.node.config.lookup_tries)
            peer = Peer(ids.from_bytes(reply["id"]), addr)
        except (DhtError, *PEER_FAILURES):
            return None
        if self.node.config.verify_ids and not peer.id_matches(self.node.config.ring):
            return None
        return peer.id, reply.get("isolated") is True

    async def check_predecessor(self) -> None:
        """Ping our predecessor; if it fails, the other predecessors too, all at once.

        After many nodes crash at once, the nodes before us in our list are often dead as
        well, and each is dropped only after two failures: pinged one a round, a list of dead
        ones took two rounds each to clear (half of 600 nodes crashed: 40 s with 16 nodes cut
        off, their live predecessors walking back to the dead ones our list still named)."""
        ls = self.node.leafset
        pred = ls.predecessor
        if pred is None:
            return
        try:
            await self.node.call_peer(pred, "ping")
            return
        except PEER_FAILURES as exc:
            self.node.peer_failed(pred, exc)
        tries = self.node.config.lookup_tries
        rest = [p for p in ls.predecessors if p.id != pred.id]
        await self._ask_all(rest, lambda p: self.node.call_peer(p, "ping", tries=tries))

    async def fix_fingers(self) -> bool:
        """Refresh fingers from where the last round stopped, up to one lookup's worth;
        whether that is news worth the next round: a lookup failed, a finger was empty or
        moved past more than about FINGER_SLACK nodes, or, in a ring small enough to walk
        (WALK_MAX), moved at all.

        A finger that moved to a node a little before the one it named (nodes joined there)
        was a shortcut that still led the right way, a hop short at worst: in a large ring
        that is not news, and while nodes join at a steady pace the refreshes back off all
        the same (3,000 nodes joining at 200 a second, with seed_fingers: 20 % fewer
        datagrams; lookups as short). One that moved farther was stale, and the others likely
        are too (1,000 nodes joining at once through one node: their first fingers named the
        few nodes there were; not taken as news, their lookups took 5.6 hops instead of 4.7).
        In a small ring each refresh also fills the ring view (node.view) of the nodes that
        coordinate reads and writes (walk_view), so any move is news there."""
        changed = False
        ls = self.node.leafset
        small = ls.ring_size() <= self.WALK_MAX
        slack = self.FINGER_SLACK * ls.successor_gap()  # moves by less: a few nodes joined
        for _ in range(ids.BITS):
            i = self._next_finger
            start = self.node.fingers.start(i)
            if self.node.leafset.covers(start):
                owner = self.node.leafset.owner(start)[0]
                looked_up = False
            else:
                try:
                    # Unconfirmed, but checked against what we know (lookup.plausible_owner):
                    # a finger is only a shortcut; the owner of a key is always confirmed.
                    # Our best guess at the owner is asked first (first_guess): it mostly
                    # names the owner from its own leafset, one hop instead of several.
                    via = self.first_guess(start, self.node.fingers.entries[i])
                    owner = (await self.node.lookup_id(start, confirm=False, via=via)).owner
                except (LookupFailed, *PEER_FAILURES):
                    return True  # (a failure is news: look again next round)
                looked_up = True
                if self.left_lately(owner.id, asyncio.get_running_loop().time()):
                    return True  # an answer that crossed its leaving: look again next round
            if owner.id != self.node.id:
                old = self.node.fingers.entries[i]
                if old is None:
                    changed = True
                elif old.id != owner.id:
                    by = ids.distance(start, old.id) - ids.distance(start, owner.id)
                    changed = changed or small or by > slack
                nxt = self.node.fingers.set(i, owner)
            else:
                nxt = i + 1
            self._next_finger = nxt % ids.BITS
            if looked_up or nxt >= ids.BITS:
                return changed
        return changed

    def first_guess(self, start: int, current: Peer | None = None) -> Peer | None:
        """The node to ask first for the owner of ``start`` (a finger's start, or a key the
        store looks up; lookup_id's ``via``).

        The first node at or after it among those heard from lately (node.view), or the
        finger as it stands (``current``) if that is nearer, is at or just after the owner,
        and names it from its predecessor list in one hop, unless more nodes than that list
        holds joined between (then it routes clockwise from past the start: about log n
        hops). So when it lies farther from the start than our own successor list spans
        (L/2 - 1 of our gaps), the nearest node before the start that we heard from is asked
        instead: from there the owner is a few nodes on, found in one hop from its successor
        list, or a few hops if nodes joined between (1,000 joins: 1.7 hops a finger lookup
        instead of 2.3)."""
        since = self.node.clock() - RingView.TRUSTED_FOR
        me = self.node.id
        seen = self.node.view.holders(start, 1, since)
        guess = seen[0] if seen and seen[0].id != me else None
        if guess is None or (
            current is not None and ids.distance(start, current.id) <= ids.distance(start, guess.id)
        ):
            guess = current
        before = self.node.view.preceding(start, since)
        if before is None or before.id == me:
            return guess
        succs = self.node.leafset.successors
        if guess is None or not succs:
            return before
        reach = self.node.leafset.successor_gap() * (len(succs) - 1)
        return before if ids.distance(start, guess.id) > reach else guess

    def agreed(self, now: float | None = None) -> bool:
        """Whether our predecessor and our successor both named us lately (their successor,
        their predecessor): the range we are primary for is what they think too."""
        ls = self.node.leafset
        pred, succ = ls.predecessor, ls.successor
        if pred is None or succ is None:
            return False
        if now is None:
            now = asyncio.get_running_loop().time()
        fresh = now - self.HEARD_WITHIN * self.node.config.stabilize_period
        (p, p_at), (s, s_at) = self.pred_heard, self.succ_heard
        return p == pred.id and s == succ.id and p_at >= fresh and s_at >= fresh

    def agreement(self, now: float | None = None) -> tuple[int, int, float] | None:
        """When agreed: our predecessor's and our successor's ids, and since when both have
        named us without a break (no other node named in between, no silence longer than
        agreed allows). From then on no other node takes writes for our range as its primary
        (our successor refuses them), so what we stamped since is the newest there is
        (Replicator.fresh)."""
        if not self.agreed(now):
            return None
        return self.pred_heard[0], self.succ_heard[0], max(self._pred_since, self._succ_since)

    # Periods within which our neighbours must have named us: three rounds of theirs, which
    # come half as often when calm (see round_period).
    HEARD_WITHIN = 6

    def heard_pred(self, peer_id: int) -> None:
        """Our predecessor ``peer_id`` named us its successor just now."""
        now = asyncio.get_running_loop().time()
        self._pred_since = self._since(self.pred_heard, peer_id, self._pred_since, now)
        self.pred_heard = (peer_id, now)

    def heard_succ(self, peer_id: int) -> None:
        """Our successor ``peer_id`` named us its predecessor just now."""
        now = asyncio.get_running_loop().time()
        self._succ_since = self._since(self.succ_heard, peer_id, self._succ_since, now)
        self.succ_heard = (peer_id, now)

    def _since(self, last: tuple[int, float], peer_id: int, since: float, now: float) -> float:
        """Since when ``peer_id`` has named us without a break, now that it did again."""
        unbroken = now - last[1] <= self.HEARD_WITHIN * self.node.config.stabilize_period
        return since if last[0] == peer_id and unbroken else now

    async def neighbors_of(
        self, peer: Peer, *, tries: int = 0, successor: bool = False
    ) -> tuple[list[Peer], list[Peer], Peer | None]:
        """A peer's successor list, predecessor list, and its hint for us (see _hint_for).
        ``successor``: stabilize asks the node it takes for its successor (``succ``): if we
        are its predecessor, it notes our call as a notify's liveness evidence and says so.

        Raises one of PEER_FAILURES.
        """
        args: dict[str, Any] = {"id": ids.to_bytes(self.node.id)}
        if successor:
            args["succ"] = True
        reply = await self.node.call_peer(peer, "neighbors", args, tries=tries, pad=True)
        if successor:
            self._noted_by = peer.id if reply.get("pred") is True else None
        return self._lists(reply)

    async def neighbors_when_joining(
        self, owner: Peer, *, tries: int = 0
    ) -> tuple[list[Peer], list[Peer], list[Peer]]:
        """The successor list, the predecessor list and the farthest fingers (at most
        FINGERS_GIVEN) of ``owner``, the node a joining node takes for its successor: the
        lists are its first leafset, the fingers its first fingers (seed_fingers). ``tries``:
        sends (0: the RPC default)."""
        args = {"id": ids.to_bytes(self.node.id), "fingers": True}
        reply = await self.node.call_peer(owner, "neighbors", args, tries=tries, pad=True)
        succs, preds, _ = self._lists(reply)
        try:
            fingers = peers_from_wire(
                reply.get("fingers", []),
                self.FINGERS_GIVEN,
                verify_ids=self.node.config.verify_ids,
                ring=self.node.config.ring,
            )
        except ValueError as exc:  # only hints: the join goes on, and fix_fingers finds them
            self.node.log.debug("%s named no usable fingers: %s", owner, exc)
            fingers = []
        return succs, preds, self._without_left(fingers)

    def _lists(self, reply: dict[str, Any]) -> tuple[list[Peer], list[Peer], Peer | None]:
        """A ``neighbors`` answer's successor list, predecessor list and hint."""
        hint = reply.get("hint")
        hints = self.node.parse_peers([hint]) if hint is not None else []  # a failed id check: none
        return (
            self._without_left(self.node.parse_peers(reply["succs"])),
            self._without_left(self.node.parse_peers(reply["preds"])),
            next(iter(self._without_left(hints)), None),
        )

    # Fingers a neighbors answer names to a joining node, the farthest ones. (Such an answer is
    # mostly over 3 times the padded request, but by then the joiner mostly holds a token for
    # that address, drawn by its confirmed lookup, which asked the same node: it comes at once.)
    FINGERS_GIVEN = 10

    def seed_fingers(self, known: list[Peer]) -> None:
        """Our first fingers, from nodes our successor named as it joined us (its leafset and
        its fingers, neighbors_when_joining): each finger is the first of them at or after its
        start. The successor's finger i is the owner of a point just past ours, so most are
        ours too, and fix_fingers refreshes them at its slow pace instead of a lookup a round
        for each of the log n fingers of a node that has none (a node joining a ring of 400:
        19 finds in its first 30 s instead of 29; see fix_fingers for a ring built by joins)."""
        me = self.node.id
        peers = sorted(
            {p.id: p for p in known if p.id != me}.values(), key=lambda p: ids.distance(me, p.id)
        )
        gaps = [ids.distance(me, p.id) for p in peers]
        fingers = self.node.fingers
        i = 0
        while i < ids.BITS:
            at = bisect.bisect_left(gaps, 1 << i)  # the first at or after start(i), me + 2**i
            if at == len(peers):
                break  # past the farthest node named: left to fix_fingers
            i = fingers.set(i, peers[at])

    def _without_left(self, peers: list[Peer]) -> list[Peer]:
        """A neighbour's list without the nodes that told us in the last STALE_LISTS periods
        that they left. The list may have been sent before its sender heard of the leaving
        (an answer that crossed it, a notify of the sender's round), or the sender's
        ``leaving`` was lost: taken as it is, it would put the node back for a round, and a
        walk to it would wait out a timeout. A node that comes back that soon is taken from
        its own notify (_rpc_notify), and from anyone's list after that."""
        if not self._left:
            return peers
        since = (
            asyncio.get_running_loop().time() - self.STALE_LISTS * self.node.config.stabilize_period
        )
        return [p for p in peers if self._left.get(p.id, float("-inf")) < since]

    def _from_leaver(self, peers: list[Peer]) -> list[Peer]:
        """A leaving node's list without the nodes that told us lately that they left
        (_without_left), nor those we declared dead lately: the leaver only passes on its list,
        which may predate a crash it had not noticed (a new user's trial: of three nodes, one
        shut down, the next leaving named it to the last, which had found it dead: "successor
        is now" the dead node, a timeout in its next round, and its own leave found no one to
        take its keys). All of them dead: the list as it was (no successor at all is worse)."""
        now = asyncio.get_running_loop().time()
        dead = self.node.detector.recently_dead
        kept = self._without_left(peers)
        alive = [p for p in kept if not dead(p.id, now)]
        return alive or kept

    async def notify(self, peer: Peer) -> None:
        """Tell ``peer`` that we take it for our successor. If it took us for its predecessor
        in place of another live node (its answer's ``was``), that node still takes ``peer``
        for its successor: it is told of us too, and walks to us at once (rectify)."""
        args = {
            "id": ids.to_bytes(self.node.id),
            "preds": self.node.leafset.wire()[1],
        }
        try:
            reply = await self.node.call_peer(peer, "notify", args)
            was = reply.get("was")
            before = self.node.parse_peers([was]) if was is not None else []
        except PEER_FAILURES:
            return
        succ = self.node.leafset.successor
        if reply.get("pred") is True and succ is not None and succ.id == peer.id:
            self.heard_succ(peer.id)  # it took us for its predecessor: mutual
        # Only our predecessor or a node between it and us (the successor's former predecessor
        # is one of those): an answer cannot send our notify anywhere else. (Any node but
        # those between us and the successor lies "before us" going round the circle.)
        pred = self.node.leafset.predecessor
        if (
            before
            and pred is not None
            and ids.in_interval(before[0].id, pred.id, self.node.id, left_open=False)
        ):
            with contextlib.suppress(*PEER_FAILURES):
                await self.node.call_peer(before[0], "notify", args)

    def _rpc_neighbors(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        succs, preds = self.node.leafset.wire()
        reply: dict[str, Any] = {"id": ids.to_bytes(self.node.id), "succs": succs, "preds": preds}
        if args.get("fingers") is True:  # a node joining next to us (neighbors_when_joining)
            me = self.node.id
            far = sorted(self.node.fingers.distinct(), key=lambda p: ids.distance(me, p.id))
            reply["fingers"] = [p.to_wire() for p in far[-self.FINGERS_GIVEN :]]
        if "id" in args:
            asker = arg_id(args, "id")
            hint = self._hint_for(asker)
            reply["hint"] = hint.to_wire() if hint is not None else None
            if args.get("succ") is True:
                reply["pred"] = self._noted(asker, src)
        return reply

    def _noted(self, asker: int, src: Address) -> bool:
        """Our predecessor asks us for our neighbours as its successor (stabilize): the
        liveness evidence a notify brings (pred_heard), noted; whether it was ours."""
        pred = self.node.leafset.predecessor
        try:
            addr = check_peer_addr(*src)
        except ValueError:
            return False
        if pred is None or pred.id != asker or pred.addr != addr:
            return False
        self.heard_pred(pred.id)
        return True

    def _hint_for(self, asker: int) -> Peer | None:
        """The nearest node we know that follows ``asker`` and precedes us.

        When many nodes join at once they all start out with the same successor, which then
        hears from every one of them. Passing on the best of what it heard lets each find its
        place in a round or two, instead of creeping back L/2 nodes per round along the
        predecessor lists. The asker adopts a hint only after it answers (Zave's rule).
        """
        return self._nearest_after(asker, self.node.id)

    LOOP_CHECK = 0.25  # the share of rounds that look for nodes between us and our successor
    LOOP_CHECK_MIN = 1 / 32  # ... halved by each that finds nothing, down to this
    YOUNG = 10  # ... or once per change instead, until our neighbourhood has been quiet this long

    def _check_loop_soon(self, change: float | None = None) -> None:
        """Start a loop check beside the round (its lookup may wait on a far node that is
        gone: the round must not), unless one runs still. ``change``: the neighbourhood change
        it is for (it starts near us); counted as checked only once the check got an answer."""
        if self._loop_check is None or self._loop_check.done():
            self._loop_check = self.node.background(self._check_loop_once(change))

    async def _check_loop_once(self, change: float | None) -> None:
        result = await self.check_loop(near=change is not None)
        if result:
            self.loop_share = self.LOOP_CHECK
        elif result is False and change is None:
            self.loop_share = max(self.loop_share / 2, self.LOOP_CHECK_MIN)
        if change is not None and result is not None:
            self._checked_change = change

    async def check_loop(self, start: Peer | None = None, *, near: bool = False) -> bool | None:
        """Ask a node from elsewhere (``start``, or a finger or a remembered peer: at random,
        or with ``near`` the one nearest before us) who follows us; whether it named a node
        between us and our successor (None: no answer).

        After many joins at once, the ring can wind twice around the id space: two loops whose
        nodes interleave, each consistent on its own (every pred and succ pair agrees), which
        stabilization alone never undoes (Zave: a ring must be ordered). Two rings after a
        partition are the same problem. A lookup of the point just after us, started at a
        node of the other loop (ring), finds a node between us and our successor: it becomes
        a contact that our next stabilize walks back to, and the node before it there is
        notified of us (it keeps us as a contact: its next stabilize walks to us). Each node
        that does this joins the two at its place; stabilization carries the rest along."""
        ls = self.node.leafset
        succ = ls.successor
        if succ is None:
            return None
        if start is None:
            ours = {p.id for p in ls.peers()} | {self.node.id}
            now = asyncio.get_running_loop().time()
            far = [
                p
                for p in (*self.node.fingers.distinct(), *self.node.memory.peers())
                if p.id not in ours
                and not self.node.detector.recently_dead(p.id, now)
                and not self.left_lately(p.id, now)
            ]
            if not far:
                return None
            if near:
                # Fewer hops (the far nodes nearest before us are mostly remembered peers that
                # joins pushed out of our leafset), and as likely to be of another loop.
                start = min(far, key=lambda p: ids.distance(p.id, self.node.id))
            else:
                start = self.node.rng.choice(far)
        try:
            # Where a route from there reaches one of our nearest neighbours, its answer is
            # ours (lookup.iterative_lookup's ``near``): such a node answers from its own lists,
            # of our loop. A check then costs one find, not about 2.8 (100 servers just built:
            # 392 finds in their first second). Not a farther node of our leafset: it routes by
            # its fingers, which may point into another loop (a helper's review: interleaved
            # loops with fingers of the whole ring, 1-5 loops in 100 missed).
            found = await self.node.lookup_id(
                (self.node.id + 1) % ids.RING, start=start.addr, confirm=False, near=self._near()
            )
        except (DhtError, *PEER_FAILURES) as exc:
            # The start failed (a remembered peer that left, mostly): twice in a row and it is
            # not tried for a while. Not when it answered and a later hop failed: a live
            # finger was declared dead that way (a maintainer's review).
            # Nor for our own errors (too many calls in flight, a node stopping): a review.
            if exc.hops == 0 if isinstance(exc, LookupFailed) else isinstance(exc, PEER_FAILURES):
                self.node.peer_failed(start)
            return None
        owner = found.owner
        if owner.id == self.node.id or not ids.in_interval(owner.id, self.node.id, succ.id):
            return False
        # It must answer first: after many crashes at once, the tables the lookup went
        # through still name dead nodes, and one taken as a contact costs our next stabilize
        # a walk back to it, and a timeout (half of 600 nodes crashed: 40 such "merges" with
        # dead nodes, none with a live one).
        try:
            _, preds, _ = await self.neighbors_of(owner, tries=self.node.config.lookup_tries)
        except PEER_FAILURES as exc:
            self.node.peer_failed(owner, exc)
            return None  # (no answer: nothing learnt either way)
        except DhtError:  # ours (calls in flight at their bound)
            return None
        self.merges += 1
        if owner.id == start.id:
            # (A ring of one answers for every key itself: a node restarted alone, mostly.)
            self.node.log.info(
                "a lookup of our place started at %s found that node itself, between us and "
                "our successor %s: it is in another loop or ring; joining it",
                start,
                succ,
            )
        else:
            self.node.log.info(
                "a lookup of our place started at %s found %s, between us and our successor "
                "%s: another loop or ring; joining it",
                start,
                owner,
                succ,
            )
        self._notifiers.pop(owner.id, None)
        self._notifiers[owner.id] = (owner, asyncio.get_running_loop().time())
        if len(self._notifiers) > self.MAX_NOTIFIERS:
            self._notifiers.popitem(last=False)
        # Only a node we would follow is worth telling (we lie between it and the owner): a
        # stranger's answer cannot send our notify anywhere else.
        if preds and ids.in_interval(self.node.id, preds[0].id, owner.id):
            await self.notify(preds[0])  # it keeps us as a contact (see _rpc_notify)
        self.calm = 0  # fast rounds while the two zip together
        self._probe_at_first_pace()  # another ring: probe as often as at first while they join
        return True

    def _near(self) -> set[int]:
        """The ids of the neighbours whose own lists name our successor and the nodes after it
        (a quarter of the leafset on each side), and ours: asked who follows us, each answers
        from its lists (routing.next_hop), which are of our loop."""
        ls = self.node.leafset
        q = max(1, ls.half // 2)
        return {p.id for p in (*ls.predecessors[:q], *ls.successors[:q])} | {self.node.id}

    def _note_left(self, peer_id: int, now: float) -> None:
        """Remember that ``peer_id`` left at ``now``: for LEFT_MEMORY seconds, and among the
        newest MAX_LEFT. Only a node of our tables (recent notifiers included) that proved its
        address gets here, but a stranger can be a notifier under many ids in 30 s: the bound
        holds whatever the rate."""
        left = self._left
        left.pop(peer_id, None)
        left[peer_id] = now  # (last: the dict stays oldest first)
        cutoff = now - self.LEFT_MEMORY
        while len(left) > self.MAX_LEFT or next(iter(left.values())) < cutoff:
            del left[next(iter(left))]

    def left_lately(self, peer_id: int, now: float) -> bool:
        """Whether ``peer_id`` told us lately that it left the ring (see _rpc_leaving)."""
        return self._left.get(peer_id, float("-inf")) > now - self.LEFT_MEMORY

    def _nearest_after(self, low: int, high: int) -> Peer | None:
        """The known node nearest after ``low`` and strictly before ``high``, if any, among
        the recent notifiers, the predecessors and the fingers, leaving out the dead ones.
        (Every ``neighbors`` call with an id asks this, _hint_for: one pass, no lists; the
        dead are looked up only for a node nearer than the best so far.)"""
        now = asyncio.get_running_loop().time()
        horizon = 3 * self.node.config.stabilize_period
        notifiers = self._notifiers
        while notifiers and next(iter(notifiers.values()))[1] < now - horizon:
            notifiers.popitem(last=False)
        dead = self.node.detector.recently_dead
        mask = ids.MASK
        best, best_gap = None, ((high - low) & mask) or ids.RING  # (low == high: all but low)
        for group in (
            [p for p, _ in notifiers.values()],
            self.node.leafset.predecessors,
            self.node.fingers.distinct(),
        ):
            for p in group:
                gap = (p.id - low) & mask
                if 0 < gap < best_gap and not dead(p.id, now):
                    best, best_gap = p, gap
        return best

    async def _rpc_notify(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        """Rectify: adopt the notifier as predecessor when it is closer, or ours is dead.

        Zave's rectify adopts a closer notifier outright. Here it must first answer
        ``neighbors`` and name us as its successor: otherwise a stranger could sit in front of
        us with a socket that only answers ``ping`` and make every write to our range fail.
        """
        peer = self.node.sender(args, src)
        if peer.id == self.node.id:
            return {}
        if self.node.isolated and not self.rejoins_through(src):
            # Rejoining, we take in only our ring's nodes (those we remember, and the
            # bootstrap addresses), as our rejoin joins through them: a stranger's notify,
            # answered as a ring of two, took an isolated node back "in a ring" with it, its
            # writes went to the stranger, and the stranger was remembered, so its ping saying
            # "isolated too" then made the node a ring of one (an attack on real nodes).
            self.node.log.debug("notify from %s ignored: rejoining, and not of our ring", peer)
            return {}
        loop = asyncio.get_running_loop()
        heard = loop.time()
        self._left.pop(peer.id, None)  # it left, and is back: its own word
        preds = self._without_left(self.node.arg_peers(args, "preds"))
        self._notifiers.pop(peer.id, None)
        self._notifiers[peer.id] = (peer, heard)
        if len(self._notifiers) > self.MAX_NOTIFIERS:
            self._notifiers.popitem(last=False)
        ls = self.node.leafset
        pred = ls.predecessor
        if pred is not None and pred.id == peer.id:  # our predecessor, as every round
            before = ls.predecessors
            ls.set_predecessors([peer, *preds])
            self._pass_on(before)
            self.heard_pred(peer.id)
            return self._was(peer)
        succ = ls.successor
        if succ is not None and ids.in_interval(peer.id, self.node.id, succ.id):
            # A node between us and our successor (it joined next to us: section 9.5): our
            # successor, once it answers. No predecessor of ours unless ours is dead, which
            # check_predecessor finds, so no ping.
            self.stabilize_soon()
            if pred is not None and not ids.in_interval(peer.id, pred.id, self.node.id):
                return {}
        if (
            pred is not None
            and not ids.in_interval(peer.id, pred.id, self.node.id)
            and not await self._predecessor_dead(pred)
        ):
            return {}  # ours answers, and is closer: keep it
        verified = await self._shared(("verify", peer.id), self._verify_predecessor(peer))
        if verified is None:
            return {}  # it does not answer, or does not take us for its successor
        if self.node.isolated and not self.rejoins_through(src):
            return {}  # (we lost our last neighbour while we checked it: as above)
        if self._left.get(peer.id, float("-inf")) >= heard:
            # Its `leaving` came while we checked it (sent at a signal right after its join,
            # which this notify ends): taken, it would be our neighbour, and we a member,
            # until it failed its calls, and then "isolated" with no ring to rejoin.
            return {}
        # The calls took time: another notify may have brought a closer one meanwhile.
        pred = ls.predecessor
        if pred is not None and not ids.in_interval(
            peer.id, pred.id, self.node.id, left_open=False
        ):
            return {}  # [pred, self): it, or one between
        if not ls.successors and not ls.predecessors:
            self._log_merged(peer, verified)
        before = ls.predecessors
        ls.set_predecessors([peer, *verified])
        self._pass_on(before)
        self.heard_pred(peer.id)  # it named us its successor: mutual
        self.node.gained_neighbours()
        if ls.successor is None:  # a ring of one no more: it is our successor too, now
            self.stabilize_soon()
        if pred is not None and pred.id != peer.id:
            # The node it replaces still takes us for its successor: the notifier tells it
            # of itself (notify), so that it does not wait for its next round to learn.
            self._replaced = (peer.id, pred, loop.time())
        return self._was(peer)

    def _pass_on(self, before: list[Peer]) -> None:
        """Our predecessor list changed (a node joined just before us, or before our
        predecessor): tell our successor now, not at our next round, so that the news reaches
        the L/2 nodes after us within round trips instead of a round each (passing on only
        changes of the first r left the lists' far ends skipping nodes, and rings by joins
        took longer to be ideal)."""
        r = self.node.replicator.config.replicas
        after = self.node.leafset.predecessors
        if before == after:
            return
        if len(after) < min(r, len(before)):
            # Shorter than it was: a node that joined knowing no predecessors yet told us of
            # itself. Passed on, it would cut the lists of r nodes short (and the joins
            # through them would start with none); its own predecessor fills it in soon.
            return
        self.forward.kick()

    async def _notify_successor(self) -> bool:
        succ = self.node.leafset.successor
        if succ is None:
            return False
        await self.notify(succ)
        return True

    def _pass_back(self, before: list[Peer]) -> None:
        """Our successor list changed: send it to our predecessor now, which takes it as its
        stabilize would take our answer, instead of at its next round."""
        after = self.node.leafset.successors
        if before == after or len(after) < len(before):
            return
        self.backward.kick()

    async def _send_successors(self) -> bool:
        pred = self.node.leafset.predecessor
        if pred is None:
            return False
        args = {"id": ids.to_bytes(self.node.id), "succs": self.node.leafset.wire()[0]}
        # Few tries: a lost list costs nothing that our predecessor's next round does not
        # bring (older nodes answer "unknown method", ignored likewise).
        with contextlib.suppress(DhtError, *PEER_FAILURES):
            await self.node.call_peer(pred, "succs", args, tries=self.node.config.lookup_tries)
        return True

    def _rpc_succs(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        """Our successor's new successor list (PROTOCOL.md 9.3, ``succs``): ours becomes
        ``[successor] + list``, cut, as our stabilize would make it from its answer; from any
        other node, nothing changes."""
        peer = self.node.sender(args, src)
        ls = self.node.leafset
        succ = ls.successor
        if succ is None or succ.id != peer.id or succ.addr != peer.addr:
            return {}
        succs = self._without_left(self.node.arg_peers(args, "succs"))
        before = ls.successors
        ls.set_successors([peer, *succs])
        self._pass_back(before)
        return {}

    def _log_merged(self, peer: Peer, preds: list[Peer]) -> None:
        """We were alone, and ``peer`` (with its predecessors ``preds``) takes us for its
        successor. A node joining our ring of one has no predecessor but us; one that has
        others is of a ring of its own, which found us (its loop check, or tables that still
        named us): say so, since the merge is its doing and our log would otherwise show only
        a new predecessor."""
        if self.node.member:  # isolated: our ring, or one of its nodes, found us again
            # (Before our own rejoin, which then logs nothing: a node restarted at its old
            # address, which a neighbour's call still in flight to it reached.)
            self.node.log.info("%s takes this node for its successor: back in a ring", peer)
        elif any(p.id != self.node.id for p in preds):  # (else a node joining us: it logs that)
            self.node.log.info(
                "%s, of another ring, takes this node for its successor: this ring of one "
                "joins that ring",
                peer,
            )

    def _was(self, peer: Peer) -> dict[str, Any]:
        """The answer to a notify from our predecessor ``peer``: ``was``, the node it replaced
        lately, if any. Also for a notify sent again, or twice at once (its first answer was
        lost or late: the caller may see only the second)."""
        # ``pred``: the notifier is our predecessor now; it counts that as our naming it, as
        # from a neighbors answer in its next round (agreement), without waiting for that.
        replaced = self._replaced
        if replaced is None or replaced[0] != peer.id:
            return {"pred": True}
        if asyncio.get_running_loop().time() - replaced[2] > self.node.config.stabilize_period:
            self._replaced = None
            return {"pred": True}
        return {"pred": True, "was": replaced[1].to_wire()}

    async def _verify_predecessor(self, peer: Peer) -> list[Peer] | None:
        """``peer``'s predecessors if it answers ``neighbors`` naming us as its successor, else
        None. Few tries: the notify's source may be forged, and the victim of a forgery should
        get no more datagrams from us than the forger sent."""
        try:
            succs, preds, _ = await self.neighbors_of(peer, tries=self.node.config.lookup_tries)
        except (DhtError, *PEER_FAILURES):  # (ours too: calls in flight at their bound)
            return None
        return preds if succs and succs[0].id == self.node.id else None

    async def _predecessor_dead(self, pred: Peer) -> bool:
        """Whether ``pred`` is no longer our predecessor after a ping (failed, and declared
        dead). Every notify that asks meanwhile shares the one ping."""
        return await self._shared(("ping", pred.id), self._ping_predecessor(pred))

    async def _ping_predecessor(self, pred: Peer) -> bool:
        try:
            await self.node.call_peer(pred, "ping", tries=self.node.config.lookup_tries)
            return False
        except PEER_FAILURES as exc:
            self.node.peer_failed(pred, exc)
        except DhtError:  # ours (calls in flight at their bound): nothing learnt of it
            return False
        current = self.node.leafset.predecessor
        return current is None or current.id != pred.id

    async def _shared(self, key: tuple[str, int], coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` unless the same check (``key``) is already running, in which case wait
        for that one's answer: a flood of notifies costs one call per peer, not one each."""
        task = self._checks.get(key)
        if task is None:
            # (A task of the node's: a stop cancels it. It outlives the handler that waits for
            # it, which a stop cancels first; a maintainer's review.)
            task = self.node.background(coro)
            self._checks[key] = task
            task.add_done_callback(lambda _: self._checks.pop(key, None))
        else:
            coro.close()
        return cast(T, await asyncio.shield(task))

    def _rpc_leaving(self, args: dict[str, Any], src: Address) -> dict[str, Any]:
        """A neighbour leaves and hands us its lists, so the ring closes at once.

        Only the leaving node may say so: the id must be a node of our tables (the remembered
        peers included) whose address is the datagram's source. (Anyone else naming it would
        make us drop a live neighbour.)

        It is forgotten everywhere, the remembered peers too, when it left the ring on purpose
        (an admin's ``leave``). Kept there, it would be probed, and loop checks would start at
        it: started again alone (a new ring of one, as the README promises a node that left and
        is started without --bootstrap), it would be taken for a node of our ring cut off from
        it, and merged back. A node that crashes sends no `leaving`, and one stopped to start
        again says ``back``: either stays remembered, and is merged back when it comes back
        alone, which is what the memory is for.
        """
        gone_id = arg_id(args, "id")
        self.node.forget_left(gone_id, src)  # (guesses and kademlia's find_node: node.py)
        ls = self.node.leafset
        # (The recent notifiers too: one whose notify we are checking still, to be refused.)
        notifiers = [p for p, _ in self._notifiers.values()]
        known = [*ls.peers(), *self.node.fingers.distinct(), *self.node.memory.peers(), *notifiers]
        gone = next((p for p in known if p.id == gone_id), None)
        if gone is None:
            return {}  # not ours to forget: nothing to do
        if gone.addr != src:
            raise BadRequest("only the leaving node itself may say that it leaves")
        # (Without the nodes that told us lately that they left: two neighbours leaving at once
        # each send lists made before they heard of the other, as a cluster stopped at once
        # does. Taken as they are, the first would come back as our neighbour.)
        preds = self._from_leaver(self.node.arg_peers(args, "preds")) if "preds" in args else None
        succs = self._from_leaver(self.node.arg_peers(args, "succs")) if "succs" in args else None
        was_neighbour = any(p.id == gone.id for p in ls.peers())
        if preds is not None and ls.predecessor is not None and ls.predecessor.id == gone.id:
            ls.set_predecessors(preds)
        if succs is not None and ls.successor is not None:
            ids_before = [p.id for p in ls.successors]
            if gone.id in ids_before:
                kept = ls.successors[: ids_before.index(gone.id)]
                ls.set_successors([*kept, *succs])
        ls.remove(gone.id)
        self.node.fingers.remove(gone.id)
        self._notifiers.pop(gone.id, None)  # and no hint may point at it any more
        if not self.node.leaving and args.get("back") is not True:
            # (A node leaving too keeps it: stopped to start again, it may find it again
            # through it, as a whole ring stopped at once and started again does. So does
            # every node when the leaver says it will be back: stopped, not told to leave.)
            self.node.memory.drop(gone.id)
        self._note_left(gone.id, asyncio.get_running_loop().time())
        if was_neighbour:
            self.node.log.info("peer %s left", gone)
            self._tell_neighbours()  # and who took its place, now rather than at the round's end
            if not ls.successors and not ls.predecessors:
                self.node.member = False  # the others left on purpose: a ring of one, rightly
        return {}
