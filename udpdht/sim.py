"""Rings of thousands of nodes on the in-memory network, in virtual time.

A :class:`Sim` runs real :class:`~udpdht.node.Node` objects on a
:class:`~udpdht.net.SimNetwork`; run it inside :func:`~udpdht.net.run_virtual`. It injects joins,
crashes and leaves, and checks Zave's ring invariants with global knowledge of who is alive:

* successor lists are ordered, free of duplicates and of the node itself;
* following each node's first *live* successor, every node reaches one cycle, and only one
  (no second ring; every appendage reaches the ring);
* that cycle is ordered: it goes round the identifier circle exactly once, so no ring member lies
  between a member and its successor;
* once quiet, the ideal state: every successor list is the true next L/2 nodes, every
  predecessor list the true previous L/2.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import ids
from .net import Address, SimNetwork
from .node import Node, NodeConfig
from .replication import StoreConfig
from .routing import Peer
from .rpc import RpcConfig

SIM_EPOCH = 1_800_000_000.0  # the simulated wall clock starts here (in 2027)


class InvariantViolation(AssertionError):
    """The ring broke one of Zave's invariants."""


@dataclass
class ChurnStats:
    joins: int = 0
    crashes: int = 0
    leaves: int = 0


class Sim:
    def __init__(
        self,
        seed: int = 0,
        *,
        latency: tuple[float, float] = (0.005, 0.030),
        loss: float = 0.0,
        duplicate: float = 0.0,
        config: NodeConfig | None = None,
        store_config: StoreConfig | None = None,
        rpc_config: RpcConfig | None = None,
    ) -> None:
        self.seed = seed
        self.net = SimNetwork(seed=seed, latency=latency, loss=loss, duplicate=duplicate)
        self.rng = random.Random(seed ^ 0x5EED)
        self.config = config or NodeConfig()
        self.store_config = store_config or StoreConfig()
        self.rpc_config = rpc_config
        self.nodes: list[Node] = []  # every live node, joined or joining
        self.joined: dict[int, Node] = {}  # live nodes whose join finished: the ring's members
        self.violations: list[str] = []
        self.checks = 0
        self._ring_cache: tuple[tuple[int, ...], list[Peer], list[int]] | None = None
        # joined's nodes in its order, for a join's random ``via``: appended to as nodes join,
        # None (made again when next needed) once one leaves. A list made for each join
        # touched every node: quadratic in a ring's size.
        self._members: list[Node] | None = None

    # --- building ------------------------------------------------------------------------------

    async def spawn(
        self, *, maintenance: bool = True, node_id: int | None = None, addr: Address | None = None
    ) -> Node:
        """Start one node, not yet part of any ring.

        Each node is a machine of its own (SimNetwork gives it an address drawn from the seed)
        and, as for real, its id is SHA-1 of that address, which its peers check. A ``node_id``
        places it at a chosen id instead: the Sim's config must then have verify_ids off.
        ``addr``: the address of a node that stopped, to start it again there (the same id).
        """
        node = Node(
            *(addr or (self.net.host, 0)),
            node_id=node_id,
            config=self.config,
            store_config=self.store_config,
            network=self.net,
            wall_clock=self.wall_clock,
            rpc_config=self.rpc_config,
            rng=random.Random(self.rng.getrandbits(64)),
            maintenance=maintenance,
        )
        await node.start()
        self.nodes.append(node)
        return node

    async def first(self) -> Node:
        """The node that starts a ring: a ring of one."""
        node = await self.spawn()
        self._admit(node)
        return node

    def _admit(self, node: Node) -> None:
        """``node`` is a member of the ring now (in ``joined``)."""
        if node.id in self.joined:
            self._members = None  # (taken again in place: joined keeps the old position)
        elif self._members is not None:
            self._members.append(node)
        self.joined[node.id] = node

    async def join(self, via: Node | None = None) -> Node:
        """Start a node and join it through ``via`` (a random member by default)."""
        if via is None:
            if self._members is None:
                self._members = list(self.joined.values())
            via = self.rng.choice(self._members)
        node = await self.spawn()
        await node.join(via.addr)
        self._admit(node)
        return node

    async def join_many(self, count: int, via: Node | None = None, spread: float = 0.0) -> None:
        """``count`` nodes join at once (each starts at a random instant within ``spread`` s)."""

        async def one() -> None:
            if spread:
                await asyncio.sleep(spread * self.rng.random())
            await self.join(via)

        await asyncio.gather(*(one() for _ in range(count)))

    async def build_ideal(self, count: int, *, maintenance: bool = False) -> list[Node]:
        """``count`` nodes whose leafsets and fingers are set from global knowledge.

        For experiments on a converged ring (path lengths) without paying for convergence.
        """
        nodes = [await self.spawn(maintenance=maintenance) for _ in range(count)]
        self.install_ideal_routing(nodes)
        for node in nodes:
            self._admit(node)
        return nodes

    @staticmethod
    def install_ideal_routing(nodes: Iterable[Node]) -> None:
        ring = sorted((n.peer for n in nodes), key=lambda p: p.id)
        by_id = {p.id: i for i, p in enumerate(ring)}
        keys = [p.id for p in ring]
        n = len(ring)
        for node in nodes:
            i = by_id[node.id]
            half = node.leafset.half
            node.leafset.set_successors([ring[(i + k) % n] for k in range(1, min(half, n - 1) + 1)])
            node.leafset.set_predecessors(
                [ring[(i - k) % n] for k in range(1, min(half, n - 1) + 1)]
            )
            if n > 1:  # as if both neighbours had just named us, and repair had run
                node.maintenance.heard_pred(ring[(i - 1) % n].id)
                node.maintenance.heard_succ(ring[(i + 1) % n].id)
                node.replicator.mark_synced()
            j = 0
            while j < ids.BITS:
                start = node.fingers.start(j)
                owner = ring[bisect.bisect_left(keys, start) % n]
                if owner.id == node.id:
                    j += 1
                    continue
                j = node.fingers.set(j, owner)

    @staticmethod
    def wall_clock() -> float:
        """Wall time for TTLs, derived from virtual time so runs repeat."""
        return SIM_EPOCH + asyncio.get_running_loop().time()

    # --- the store -----------------------------------------------------------------------------

    def copies(self, key: bytes) -> list[Node]:
        """Live members holding the newest version of ``key`` (global knowledge)."""
        held = [
            (n, r) for n in self.joined.values() if (r := n.replicator.store.get(key)) is not None
        ]
        if not held:
            return []
        newest = max(r.version for _, r in held)
        return [n for n, r in held if r.version == newest]

    def responsible(self, key: bytes) -> list[Peer]:
        """The r live members that should hold ``key``: its successor and the next r-1."""
        ring, keys = self._ring()
        start = bisect.bisect_left(keys, ids.hash_key(key))
        r = min(self.store_config.replicas, len(ring))
        return [ring[(start + i) % len(ring)] for i in range(r)]

    # --- failures ------------------------------------------------------------------------------

    def _forget(self, node: Node) -> None:
        self.nodes.remove(node)
        self.joined.pop(node.id, None)
        self._members = None

    async def crash(self, node: Node) -> None:
        """Stop a node without a word to anyone."""
        self._forget(node)
        await node.stop()

    async def leave(self, node: Node) -> None:
        self._forget(node)
        await node.leave()

    async def crash_many(self, nodes: Iterable[Node]) -> None:
        await asyncio.gather(*(self.crash(n) for n in list(nodes)))

    async def churn(
        self,
        duration: float,
        *,
        joins_per_s: float,
        crashes_per_s: float,
        leaves_per_s: float,
        min_size: int | None = None,
        check_every: float = 0.5,
    ) -> ChurnStats:
        """Poisson joins, crashes and leaves for ``duration`` virtual seconds.

        Crashes and leaves never take the ring below ``min_size`` (default L/2 + 2), nor take a
        node out while another event is still under way on it.
        """
        loop = asyncio.get_running_loop()
        floor = min_size if min_size is not None else self.config.leafset // 2 + 2
        total = joins_per_s + crashes_per_s + leaves_per_s
        stats = ChurnStats()
        end = loop.time() + duration
        busy: list[asyncio.Task[None]] = []
        next_check = loop.time()
        while True:
            await asyncio.sleep(self.rng.expovariate(total))
            if loop.time() >= end:
                break
            if loop.time() >= next_check:
                self.check()
                next_check = loop.time() + check_every
            draw = self.rng.random() * total
            members = list(self.joined.values())
            if draw < joins_per_s or len(members) <= floor:
                stats.joins += 1
                busy.append(loop.create_task(self._join_quietly()))
            elif draw < joins_per_s + crashes_per_s:
                stats.crashes += 1
                await self.crash(self.rng.choice(members))
            else:
                stats.leaves += 1
                busy.append(loop.create_task(self.leave(self.rng.choice(members))))
        await asyncio.gather(*busy, return_exceptions=True)
        return stats

    async def _join_quietly(self) -> None:
        # The bootstrap may leave or crash meanwhile: that join just fails, as it would for real.
        with contextlib.suppress(Exception):
            await self.join()

    # --- checks --------------------------------------------------------------------------------

    def live_peers(self) -> list[Peer]:
        """The joined live nodes in ring order (cached until membership changes)."""
        return self._ring()[0]

    def _ring(self) -> tuple[list[Peer], list[int]]:
        """live_peers and their ids (the checks of thousands of keys ask for each key)."""
        members = tuple(self.joined)
        if self._ring_cache is None or self._ring_cache[0] != members:
            ring = sorted((n.peer for n in self.joined.values()), key=lambda p: p.id)
            self._ring_cache = (members, ring, [p.id for p in ring])
        return self._ring_cache[1], self._ring_cache[2]

    def true_owner(self, key: int) -> Peer:
        ring, keys = self._ring()
        return ring[bisect.bisect_left(keys, key) % len(ring)]

    def ring_problems(self) -> list[str]:
        return ring_problems(self.joined.values())

    def ideal_problems(self) -> list[str]:
        return ideal_problems(self.joined.values())

    def check(self) -> None:
        """Record any invariant violation now (tests assert ``sim.violations == []``)."""
        self.checks += 1
        for problem in self.ring_problems():
            self.violations.append(f"t={asyncio.get_running_loop().time():.2f}: {problem}")

    async def wait_ideal(self, within: float, *, check_every: float = 0.5) -> float:
        """Wait until the ring is ideal, checking the invariants on the way.

        Returns the virtual seconds it took; raises InvariantViolation after ``within``.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            self.check()
            problems = self.ideal_problems()
            if not problems:
                return loop.time() - start
            if loop.time() - start > within:
                shown = "; ".join(problems[:5])
                raise InvariantViolation(
                    f"not ideal after {within} s ({len(problems)} problems): {shown}"
                )
            await asyncio.sleep(check_every)

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes))
        self.nodes.clear()
        self.joined.clear()
        self._members = None


def ring_problems(nodes: Iterable[Node]) -> list[str]:
    """Zave's invariants over these nodes, taken to be every live member of the ring."""
    members = {n.id: n for n in nodes}
    problems: list[str] = []
    best: dict[int, int | None] = {}
    for node in members.values():
        dist = [ids.distance(node.id, p.id) for p in node.leafset.successors]
        if any(d == 0 for d in dist):
            problems.append(f"{ids.short(node.id)} lists itself as a successor")
        if any(a >= b for a, b in itertools.pairwise(dist)):
            problems.append(f"{ids.short(node.id)} successor list is not ordered")
        live = next((p.id for p in node.leafset.successors if p.id in members), None)
        if live is None and node.leafset.successors:
            problems.append(f"{ids.short(node.id)} has no live successor")
        # An empty list is a ring of one (the first node before anyone joins): itself.
        best[node.id] = live if node.leafset.successors else node.id
    if len(members) <= 1 or problems:
        return problems
    # Walk the best-successor graph: every node must end in one and the same cycle.
    cycle_of: dict[int, int] = {}  # node -> the smallest id of the cycle it reaches
    for origin in members:
        path: list[int] = []
        on_path: dict[int, int] = {}
        cur: int | None = origin
        while cur is not None and cur not in cycle_of and cur not in on_path:
            on_path[cur] = len(path)
            path.append(cur)
            cur = best[cur]
        if cur is None:
            continue  # reported above
        if cur in cycle_of:
            label = cycle_of[cur]
        else:
            cycle = path[on_path[cur] :]
            label = min(cycle)
            turn = sum(
                ids.distance(a, b) for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True)
            )
            if turn != ids.RING and len(cycle) > 1:
                problems.append(
                    f"ring through {ids.short(label)} is not ordered: it winds "
                    f"{turn / ids.RING:.2f} times round the circle"
                )
        for n in path:
            cycle_of[n] = label
    rings = sorted(set(cycle_of.values()))
    if len(rings) > 1:
        problems.append(f"{len(rings)} rings instead of one")
    return problems


#: One node's leafset as the ideal-ring checks take it: its id, its successors' ids and its
#: predecessors' ids (nearest first), and L/2.
Leafsets = Iterable[tuple[int, list[int], list[int], int]]


def leafset_problems(leafsets: Leafsets) -> list[str]:
    """How these leafsets (one for every live member) differ from the ideal ring: each lists
    the true next L/2 nodes as successors and the true previous L/2 as predecessors, in order
    (empty: ideal)."""
    leafsets = list(leafsets)
    ring = sorted(node_id for node_id, *_ in leafsets)
    n = len(ring)
    index = {node_id: i for i, node_id in enumerate(ring)}
    problems = []
    for node_id, succs, preds, half in leafsets:
        i = index[node_id]
        k = min(half, n - 1)
        if succs != [ring[(i + j) % n] for j in range(1, k + 1)]:
            problems.append(f"{ids.short(node_id)} successors are not the true next {k}")
        if preds != [ring[(i - j) % n] for j in range(1, k + 1)]:
            problems.append(f"{ids.short(node_id)} predecessors are not the true previous {k}")
    return problems


def ideal_problems(nodes: Iterable[Node]) -> list[str]:
    """How these nodes (every live member) differ from the ideal state (empty: ideal)."""
    return leafset_problems(
        (
            node.id,
            [p.id for p in node.leafset.successors],
            [p.id for p in node.leafset.predecessors],
            node.leafset.half,
        )
        for node in nodes
    )


def status_problems(statuses: Iterable[dict[str, Any]], half: int = 8) -> list[str]:
    """ideal_problems from the status objects of every live member (node processes, asked
    over UDP); ``half``: their L/2 (8, the default leafset's)."""
    return leafset_problems(
        (
            int(st["id"], 16),
            [int(p["id"], 16) for p in st["successors"]],
            [int(p["id"], 16) for p in st["predecessors"]],
            half,
        )
        for st in statuses
    )
