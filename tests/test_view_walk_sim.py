"""A node of a small ring walks it to fill its ring view (maintenance.walk_view), on the simulator.

A coordinator sends a read or a write straight to the primary its view guesses; a view that
lacks the primary costs a refusal and a second round trip. In a ring of up to WALK_MAX nodes a
node whose view is in use walks the successor lists round the ring once its neighbourhood is
calm, so that its guesses are right the first time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from helpers import wait_until

from udpdht import ids, wire
from udpdht.maintenance import Maintenance
from udpdht.net import Address, run_virtual
from udpdht.node import Node
from udpdht.replication import StoreConfig
from udpdht.routing import Peer, RingView
from udpdht.sim import Sim

STORE = StoreConfig(replicas=3, sync_period=5.0)


def fresh_view(node: Node) -> set[int]:
    """The ids of the nodes the view would guess now (heard of within its 60 s)."""
    since = asyncio.get_running_loop().time() - RingView.TRUSTED_FOR
    return node.view.heard_since(since)


async def joined_ring(seed: int, nodes: int = 60) -> Sim:
    """A ring of ``nodes`` built by joins, on the simulator (not yet ideal)."""
    sim = Sim(seed=seed, store_config=STORE)
    await sim.first()
    await sim.join_many(nodes - 1, spread=3.0)
    return sim


async def views_whole(sim: Sim) -> set[int]:
    """Wait until the ring is ideal and every node's view holds all of it that it does not
    suspect (hearsay is not taken of a node it suspects); the ids of the ring's nodes."""
    await sim.wait_ideal(60)
    live = {n.id for n in sim.nodes}

    def whole(node: Node) -> bool:
        return fresh_view(node) >= {i for i in live if not node.detector.suspected(i)}

    await wait_until(lambda: all(whole(n) for n in sim.nodes), within=30)
    return live


def requests_seen(sim: Sim, keep: Callable[[wire.Request], bool]) -> list[tuple[Address, Address]]:
    """From now on, (source, destination) of every request that ``keep`` picks."""
    calls: list[tuple[Address, Address]] = []

    def watch(src: Address, dst: Address, data: bytes) -> bool:
        msg = wire.decode(data)
        if isinstance(msg, wire.Request) and keep(msg):
            calls.append((src, dst))
        return False

    sim.net.set_drop_filter(watch)
    return calls


def walk_calls(sim: Sim) -> list[tuple[Address, Address]]:
    """Every walk step from now on: a ``neighbors`` request without an ``id`` (stabilize and
    the loop check send theirs)."""
    return requests_seen(sim, lambda msg: msg.method == "neighbors" and "id" not in msg.args)


def hello_calls(sim: Sim) -> list[tuple[Address, Address]]:
    """Every ``hello`` request from now on."""
    return requests_seen(sim, lambda msg: msg.method == "hello")


async def reads_go_straight_to_primaries(sim: Sim, keys: int = 30) -> None:
    """Reads through nodes that never saw the keys go to the primary at once: no refusal."""
    nodes = sim.nodes
    for i in range(keys):
        await nodes[i].put(f"k{i}".encode(), i)
    refusals = sum(n.endpoint.stats.errors_sent for n in nodes)
    for i in range(keys):
        assert await nodes[(i + 7) % len(nodes)].get(f"k{i}".encode()) == i
    assert sum(n.endpoint.stats.errors_sent for n in nodes) == refusals


def test_the_nodes_of_a_small_ring_walk_it_and_guess_every_primary_right() -> None:
    async def main() -> None:
        sim = await joined_ring(seed=5)
        calls = walk_calls(sim)
        # Every view holds the whole ring (the joiners' hellos, section 9.6d, then walks; with
        # neither: about half of it).
        live = await views_whole(sim)
        # (A walk can end early: a node failed.)
        await wait_until(lambda: sum(n.maintenance.walks >= 1 for n in sim.nodes) >= 57, within=30)
        # Status says so: the nodes a guess may name, and the walks that came round.
        views = [n.status()["view"] for n in sim.nodes]
        assert all(v["nodes"] >= len(live) - 2 for v in views), views
        walked = [v for v in views if v["walks"] >= 1]
        assert all(0 <= v["last_walk_s"] <= 60 for v in walked), views
        # A walk is about N / (L/2) calls, and a node walks a few times as the ring grows.
        per_node = len(calls) / len(sim.nodes)
        assert 0 < per_node <= 4 * (len(live) // 8 + 4), per_node
        await reads_go_straight_to_primaries(sim)
        sim.net.set_drop_filter(None)
        await sim.stop()

    run_virtual(main())


def test_a_ring_larger_than_walk_max_is_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Maintenance, "WALK_MAX", 20)  # (a ring of 60 stands for one of 600)

    async def main() -> None:
        sim = Sim(seed=6, store_config=STORE)
        calls = walk_calls(sim)
        nodes = await sim.build_ideal(60, maintenance=True)
        await asyncio.sleep(30)  # (young nodes: a walk would come in this time)
        # (Each node's estimate of the ring's size, from its leafset, is above 20.)
        assert min(n.leafset.ring_size() for n in nodes) > 20
        assert calls == []
        sim.net.set_drop_filter(None)
        await sim.stop()

    run_virtual(main())


def test_a_liars_successor_list_costs_a_walk_one_failed_call() -> None:
    # A node of the ring answers a walk's `neighbors` with nodes that do not exist (any
    # address, with the id it hashes to), placed after itself. A walk that reaches it takes
    # them as guesses and steps to the last, which does not answer: the walk ends there, after
    # one call's sends to it, and that node leaves the view at once.
    async def main() -> None:
        sim = Sim(seed=7, store_config=STORE)
        nodes = await sim.build_ideal(40, maintenance=True)
        walker = nodes[0]
        ring = sorted(nodes, key=lambda n: ids.distance(walker.id, n.id))
        liar = ring[16]  # the walk's second step: ring[8] names ring[9..16], then ring[16]
        addrs = ((f"10.254.{i // 250}.{i % 250 + 1}", 7000) for i in range(10_000))
        candidates = (Peer(ids.node_id_for(*a), a) for a in addrs)
        fakes = [p for p in candidates if ids.in_interval(p.id, liar.id, walker.id)][:8]
        fakes.sort(key=lambda p: ids.distance(liar.id, p.id))
        honest = liar.maintenance._rpc_neighbors

        def lying_neighbors(args: dict[str, Any], src: Address) -> dict[str, Any]:
            reply = honest(args, src)
            if "id" not in args:  # a walk's step
                reply["succs"] = [p.to_wire() for p in fakes]
            return reply

        liar.endpoint.register("neighbors", lying_neighbors, idempotent=True)
        to_fakes: list[Address] = []

        def watch(src: Address, dst: Address, data: bytes) -> bool:
            if src == walker.addr and dst in {p.addr for p in fakes}:
                to_fakes.append(dst)
            return False

        sim.net.set_drop_filter(watch)
        assert await walker.maintenance.walk_view() == 2  # ring[8] and the liar answered
        assert fakes[-1].addr in to_fakes  # the walk's step to the last fake
        # Each fake costs at most one call (two sends): the walk's, or a finger's guess.
        assert max(to_fakes.count(a) for a in to_fakes) <= 2
        assert fakes[-1].id not in fresh_view(walker)
        sim.net.set_drop_filter(None)
        await sim.stop()

    run_virtual(main())


def test_a_walk_round_the_ring_spares_the_probes_of_the_peers_it_passed() -> None:
    # Every node remembers the peers its leafset held (for a restart, and to find the other
    # side after a partition: probe_remembered asks those absent from its tables whether
    # they are in another ring, a `neighbors` and a lookup each). A walk that came round the
    # ring passed through them: none is left to probe, until one is declared dead.
    async def main() -> None:
        sim = await joined_ring(seed=8)
        await views_whole(sim)
        # (Views fill on hearsay too: a node that joined last may not have walked round yet.)
        await wait_until(lambda: all(n.maintenance.walks > 0 for n in sim.nodes), within=30)

        def outside_tables(node: Node) -> list[Peer]:
            tables = {p.id for p in [*node.leafset.peers(), *node.fingers.distinct()]}
            return [p for p in node.memory.peers() if p.id not in tables]

        # (Remembered peers outside the tables are there to probe: joins pushed them out.)
        assert sum(len(outside_tables(n)) for n in sim.nodes) >= len(sim.nodes)
        assert all(n.maintenance.absent_peers() == [] for n in sim.nodes)
        node = next(n for n in sim.nodes if outside_tables(n))
        peer = outside_tables(node)[0]
        node.peer_failed(peer)
        node.peer_failed(peer)  # (two failures in a row: declared dead)
        assert peer in node.maintenance.absent_peers()
        await sim.stop()

    run_virtual(main())


@pytest.mark.parametrize("seed", [11, 12, 54])
def test_nodes_joined_one_after_another_name_the_whole_ring_as_their_joins_end(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As bench/ops.py builds 100 servers: each joins as soon as the one before has. Each
    # takes its successor's view and says hello to every node it names (introduce), so that
    # right after the build every view names the whole ring without a walk (in bench/ops.py
    # the first come 2-3 s later): gets through any node go to the primary at once. (Before:
    # a node's view held about half of the ring, and a get drew a refusal one time in two.)
    monkeypatch.setattr(Maintenance, "_walk_if_due", lambda self, now: None)

    async def main() -> None:
        sim = Sim(seed=seed, store_config=STORE)
        calls = hello_calls(sim)
        await sim.first()
        for _ in range(39):
            await sim.join()

        def introduced() -> bool:  # (and the hellos checked: _check_hello)
            return all(
                (n.maintenance._intro is None or n.maintenance._intro.done())
                and not n.maintenance._hello_checks
                for n in sim.nodes
            )

        await wait_until(introduced, within=5)
        live = {n.id for n in sim.nodes}
        missing = {
            n.addr: live - fresh_view(n) - {p.id for p in n.leafset.peers()} for n in sim.nodes
        }
        assert all(not m for m in missing.values()), {a: len(m) for a, m in missing.items() if m}
        # One hello per node a joiner found, no more: N(N-1)/2 for N nodes built this way.
        assert len(calls) <= len(live) * (len(live) - 1) // 2
        await reads_go_straight_to_primaries(sim)
        sim.net.set_drop_filter(None)
        await sim.stop()

    run_virtual(main())


def test_nodes_joining_at_once_through_one_node_introduce_few_of_themselves() -> None:
    # 100 nodes join through one at the same moment: most take the same node for their
    # successor, whose view names all of them. Each saying hello to all would be 5,810 calls
    # (measured without the limit), in a ring not in order yet; a node gives VIEW_STARTS first
    # pages of its view a period, and the rest walk once their neighbourhood is calm.
    async def main() -> None:
        sim = Sim(seed=1, store_config=STORE)
        calls = hello_calls(sim)
        first = await sim.first()
        await sim.join_many(100, via=first)
        await sim.wait_ideal(60)
        assert len(calls) < 1000, len(calls)
        sim.net.set_drop_filter(None)
        await views_whole(sim)  # (and the walks fill every view)
        await sim.stop()

    run_virtual(main())


def test_a_hello_that_goes_unanswered_casts_no_doubt_on_a_node() -> None:
    # A hello has one try and comes while a ring is busy with joins: unanswered, it only takes
    # the node out of the joiner's view (a guess), and tells its failure detector nothing (two
    # such, and live nodes were declared dead: 200 servers joining through one, in one process,
    # formed no ring in 3 minutes).
    async def main() -> None:
        sim = Sim(seed=13, store_config=STORE)
        nodes = await sim.build_ideal(30, maintenance=True)
        joiner = await sim.spawn()
        owner = next(n for n in nodes if n.id == sim.true_owner(joiner.id).id)
        ring = sorted(nodes, key=lambda n: ids.distance(owner.id, n.id))
        deaf = ring[1]  # (the owner's successor: in the joiner's successor list)

        dropped: list[bytes] = []

        def drop(src: Address, dst: Address, data: bytes) -> bool:
            msg = wire.decode(data)
            if dst == deaf.addr and isinstance(msg, wire.Request) and msg.method == "hello":
                dropped.append(data)
                return True
            return False

        sim.net.set_drop_filter(drop)
        await joiner.join(owner.addr)
        sim._admit(joiner)
        assert joiner.maintenance._intro is not None
        assert await joiner.maintenance._intro > 0  # (the others answered)
        assert len(dropped) == 1
        assert not joiner.detector.suspected(deaf.id)
        assert deaf.peer in joiner.leafset.successors
        sim.net.set_drop_filter(None)
        await sim.stop()

    run_virtual(main())
