"""The Chord ring on the simulator: joins, lookups, crashes, leaves and churn, deterministic.

Every test checks Zave's invariants along the way (``sim.violations``) and ends in the ideal
state. Seeds that once exposed a bug stay here as regression cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from functools import partial

import pytest
from helpers import requests_from, wait_until

from udpdht import ids, wire
from udpdht.errors import DhtError, RemoteError
from udpdht.lookup import Lookup
from udpdht.maintenance import Maintenance
from udpdht.net import SimNetwork, check_peer_addr, run_virtual
from udpdht.node import Node, NodeConfig
from udpdht.replication import StoreConfig
from udpdht.routing import Peer
from udpdht.rpc import RpcEndpoint
from udpdht.sim import Sim


async def assert_lookups_correct(sim: Sim, count: int, seed: int) -> float:
    """``count`` lookups from random members to random keys; returns the mean hop count.

    They run concurrently: one after another they would take minutes of virtual time, while
    every node keeps up its maintenance (which is what costs real time).
    """
    rng = random.Random(seed)
    members = list(sim.joined.values())
    queries = [(rng.choice(members), rng.getrandbits(ids.BITS)) for _ in range(count)]
    found = await asyncio.gather(*(node.lookup_id(key) for node, key in queries))
    for (_, key), result in zip(queries, found, strict=True):
        assert result.owner.id == sim.true_owner(key).id, f"wrong owner for {ids.short(key)}"
    return sum(len(r.hops) for r in found) / count


def only_outside_failure_model(violations: list[str]) -> bool:
    """Zave's guarantee assumes no node loses all L/2 successors at once; when half the ring
    crashes, a few do. Until each finds a live successor the ring is outside the model, and
    what the checker sees then (such a node falls back on a far finger, and the nodes it skips
    may form a second cycle for a moment) is no violation of the guarantee. Every violation
    must be seen at an instant when some node had no live successor."""
    outside = {v.split(":")[0] for v in violations if "has no live successor" in v}
    return all(v.split(":")[0] in outside for v in violations)


@pytest.mark.slow
def test_1000_nodes_join_at_once_through_one_bootstrap() -> None:
    async def main() -> None:
        sim = Sim(seed=1)
        first = await sim.first()
        await sim.join_many(999, via=first)
        took = await sim.wait_ideal(within=120)
        assert sim.violations == []
        assert sim.checks > 5  # the invariants were checked all along, not just at the end
        assert took < 60, f"took {took} virtual seconds"
        await assert_lookups_correct(sim, 500, seed=2)
        # The fingers follow the leafsets, which lists passed on at once make ideal after 4
        # virtual s (8 before): lookups then took 6.1 hops, 3 s later 4.8 (4.7 at 10 s either
        # way).
        await asyncio.sleep(3)
        mean_hops = await assert_lookups_correct(sim, 500, seed=2)
        assert mean_hops <= 0.5 * 10  # ½·log2(1000): Chord's figure, leafset helps
        await sim.stop()

    run_virtual(main())


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_joins_one_by_one_and_in_waves_reach_the_ideal_ring(seed: int) -> None:
    async def main() -> None:
        sim = Sim(seed=seed)
        await sim.first()
        for _ in range(20):
            await sim.join()
        await sim.join_many(60, spread=5.0)  # joins through random members, overlapping
        await sim.wait_ideal(within=120)
        assert sim.violations == []
        await assert_lookups_correct(sim, 200, seed=seed)
        await sim.stop()

    run_virtual(main())


@pytest.mark.slow
def test_half_the_ring_crashes_at_once_and_it_repairs(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        sim = Sim(seed=6)
        await sim.build_ideal(600, maintenance=True)
        victims = sim.rng.sample(list(sim.joined.values()), 300)
        await sim.crash_many(victims)
        with caplog.at_level(logging.INFO, logger="udpdht"):
            took = await sim.wait_ideal(within=300)
        # No loop check takes a dead node that stale tables named for one of another loop
        # ("... another loop or ring; joining it": 40 such lines before it had to answer).
        dead = {str(v.peer) for v in victims}
        merges = [r.getMessage() for r in caplog.records if "another loop" in r.getMessage()]
        assert not [m for m in merges if any(d in m.split(" found ")[-1] for d in dead)]
        assert only_outside_failure_model(sim.violations), sim.violations[:5]
        assert sim.ring_problems() == []
        await assert_lookups_correct(sim, 300, seed=7)
        # 121 virtual s while a dead predecessor was dropped one every two rounds and the
        # calls beside the successor's made 4 sends each; 55 since (PROTOCOL.md 9.6, 9.8).
        assert took < 90, f"repair took {took} virtual seconds"
        await sim.stop()

    run_virtual(main())


def test_a_node_that_stalled_a_moment_ago_still_notices_its_predecessor_crash() -> None:
    # Every failure within STALL_GRACE (10 s) of a stall of the node's own loop was discounted,
    # calls begun after the stall too: a node that had been frozen itself a moment before took
    # 10 s more to drop its crashed predecessor, and writes of that range failed meanwhile (4
    # deletes in 58 through 4 node processes, one frozen after another). Only a stall during
    # a call now discounts its failure.
    async def main() -> None:
        sim = Sim(seed=31)
        await sim.build_ideal(8, maintenance=True)
        await asyncio.sleep(5)
        ring = sim.live_peers()
        pred, node = sim.joined[ring[2].id], sim.joined[ring[3].id]
        loop = asyncio.get_running_loop()
        node.endpoint.last_stall = loop.time()  # its loop was late a moment ago
        await sim.crash(pred)
        start = loop.time()
        await wait_until(lambda: node.leafset.predecessor != pred.peer, within=30)
        took = loop.time() - start
        assert took < node.STALL_GRACE
        await sim.stop()

    run_virtual(main())


def test_graceful_leave_closes_the_ring_at_once(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        sim = Sim(seed=8)
        await sim.build_ideal(40, maintenance=True)
        ring = sim.live_peers()
        leaver = sim.joined[ring[10].id]
        pred, succ = sim.joined[ring[9].id], sim.joined[ring[11].id]
        # (A round's end logs the neighbours it has not logged yet: both have had one.)
        told = (pred.maintenance, succ.maintenance)
        await wait_until(lambda: None not in told[0]._told + told[1]._told, within=10)
        caplog.clear()
        await sim.leave(leaver)
        # No maintenance round has run since: the neighbours were told directly.
        assert pred.leafset.successor == succ.peer
        assert succ.leafset.predecessor == pred.peer
        assert leaver.peer not in pred.leafset.successors + succ.leafset.predecessors
        # ... and their logs say who took its place at once, after the line that says it left
        # (a new user's trial: the new successor came only at the end of the next round).
        said = [(r.node, r.getMessage()) for r in caplog.records]  # type: ignore[attr-defined]
        for node, what, other in ((pred, "successor", succ), (succ, "predecessor", pred)):
            mine = [m for who, m in said if who == ids.short(node.id)]
            assert mine == [
                f"peer {leaver.peer} left",
                f"{what} is now {other.peer} (was {leaver.peer})",
            ]
        await sim.wait_ideal(within=30)
        assert sim.violations == []
        await sim.stop()

    with caplog.at_level(logging.INFO, logger="udpdht"):
        run_virtual(main())


async def four_in_a_row(sim: Sim) -> tuple[Node, Node, Node, Node]:
    """Four consecutive nodes of an ideal ring of 12 with no maintenance running (the tests
    of a `leaving` and of the lists around it)."""
    await sim.build_ideal(12, maintenance=False)
    ring = sim.live_peers()
    w, x, y, z = (sim.joined[ring[i].id] for i in (3, 4, 5, 6))
    return w, x, y, z


def test_a_list_that_still_names_a_node_that_left_does_not_bring_it_back() -> None:
    # tests/test_server.py once saw a leaver back in a neighbour's leafset right after its
    # `leaving`: a list sent before its sender heard of the leaving put it back for a round.
    async def main() -> None:
        sim = Sim(seed=9)
        p1, leaver, s1, s2 = await four_in_a_row(sim)
        await sim.leave(leaver)
        assert leaver.peer not in p1.leafset.peers() + s1.leafset.peers() + s2.leafset.peers()
        # s1's lists as they were before it heard: what its answers and notifies that crossed
        # the leaving carry.
        s1.leafset.set_predecessors([leaver.peer, *s1.leafset.predecessors])

        timeouts = p1.endpoint.stats.timeouts
        await s1.maintenance.notify(s2.peer)  # s1 tells s2 of its predecessors
        await p1.maintenance.stabilize()  # and answers p1's stabilize with them
        assert leaver.peer not in p1.leafset.peers() + s2.leafset.peers()
        assert p1.leafset.successor == s1.peer
        assert p1.endpoint.stats.timeouts == timeouts  # no walk to the leaver, no timeout
        await sim.stop()

    run_virtual(main())


def test_two_neighbours_leaving_at_once_do_not_hand_each_other_back() -> None:
    # A new-user trial of issue #11, a whole `udpdht cluster` stopped at once: a node logged "peer
    # A left", then "predecessor is now A" when B, A's successor, left a moment later with a
    # predecessor list made before it heard of A's leaving. The leaver's lists are taken
    # without the nodes that told us lately that they left, as every other list is.
    async def main() -> None:
        sim = Sim(seed=10)
        p, a, b, s = await four_in_a_row(sim)
        b_preds = list(b.leafset.predecessors)  # b's list before it heard of a's leaving
        await sim.leave(a)
        b.leafset.set_predecessors(b_preds)
        await sim.leave(b)
        assert s.leafset.predecessor == p.peer
        assert a.peer not in s.leafset.peers()
        await sim.stop()

    run_virtual(main())


def test_a_node_that_leaves_while_its_join_is_checked_is_not_taken_back() -> None:
    # An attacker-helper's race on real nodes: a node signalled right after joining sent its
    # `leaving` while the seed was still checking its notify (the joiner was in none of the
    # seed's tables yet, so the leaving was ignored); the seed then took it as its neighbour,
    # and once it failed its calls, the seed was "isolated" with no ring to rejoin, refusing
    # every key. The notifiers being checked count as known to `leaving`, and a notify whose
    # node left meanwhile is refused.
    async def main() -> None:
        sim = Sim(seed=12)
        seed = await sim.first()
        joiner = await sim.spawn()
        loop = asyncio.get_running_loop()
        check = seed.maintenance._verify_predecessor
        leaves: list[asyncio.Task[None]] = []

        async def check_then_leave(peer: Peer) -> list[Peer] | None:
            verified = await check(peer)  # it answers: it takes us for its successor
            if peer.id == joiner.id and not leaves:
                leaves.append(loop.create_task(joiner.leave()))  # its signal, just then
                # (Bounded, not wait_until: without the fix the leaving is never noted, and
                # the check must go on to show what the seed then does.)
                for _ in range(50):  # until its `leaving` is handled
                    if seed.maintenance.left_lately(joiner.id, loop.time()):
                        break
                    await asyncio.sleep(0.02)
            return verified

        seed.maintenance._verify_predecessor = check_then_leave  # type: ignore[method-assign]
        with contextlib.suppress(DhtError):
            await joiner.join(seed.addr)
        assert leaves
        with contextlib.suppress(DhtError):
            await leaves[0]
        await asyncio.sleep(10 * seed.config.stabilize_period)  # rounds, on virtual time
        assert joiner.peer not in seed.leafset.peers()
        assert not seed.isolated
        await seed.put(b"k", "v")  # a ring of one that serves
        assert await seed.get(b"k") == "v"
        await sim.stop()

    run_virtual(main())


def test_a_leaver_s_list_does_not_bring_back_a_node_we_found_dead() -> None:
    # A new-user trial: of three nodes, C was shut down; A found it dead and dropped it; then
    # B, which had not noticed yet, left, and A took B's successor list with C in it ("successor
    # is now C"): its next round waited out a timeout, and its own leave a moment later found
    # no successor to take its keys. A leaver's lists are now taken without the nodes we
    # declared dead lately (the leaver does not vouch for them: it is only passing on its list).
    async def main() -> None:
        sim = Sim(seed=11)
        a, b, c, d = await four_in_a_row(sim)
        await sim.crash(c)
        a.detector.declare_dead(c.id, asyncio.get_running_loop().time())
        a.leafset.remove(c.id)
        assert c.peer in b.leafset.successors  # b has not noticed
        await sim.leave(b)
        assert a.leafset.successor == d.peer
        assert c.peer not in a.leafset.peers()
        await sim.stop()

    run_virtual(main())


def test_a_node_remembers_only_the_newest_leavers() -> None:
    # Who left lately is kept 30 s, so that no list brings a leaver back (the tests above); a
    # stranger with many sockets, each a node we know for a moment (a notifier), could leave
    # under each of them faster than that. The memory is bounded: the newest leavers only.
    async def main() -> None:
        sim = Sim(seed=12)
        w, _, _, _ = await four_in_a_row(sim)
        w.maintenance.MAX_LEFT = 8
        strangers = [await RpcEndpoint.bind(sim.net, (sim.net.host, 0)) for _ in range(20)]
        gone = [Peer(ids.node_id_for(*s.addr), s.addr) for s in strangers]
        for stranger, peer in zip(strangers, gone, strict=True):
            w.memory.remember([peer], w.id)
            await stranger.call(w.addr, "leaving", {"id": ids.to_bytes(peer.id)})
            stranger.close()
        now = asyncio.get_running_loop().time()
        lately = [w.maintenance.left_lately(p.id, now) for p in gone]
        assert lately == [False] * 12 + [True] * 8
        await sim.stop()

    run_virtual(main())


@pytest.mark.parametrize("seed", [31, 37])
def test_the_other_node_of_a_ring_of_two_serves_alone_after_a_leave_that_crossed_its_round(
    seed: int,
) -> None:
    # A CI run of tests/test_cli_commands.py: after an admin's leave in a ring of two, the
    # node left behind refused every get ("lost contact with its ring"). Its stabilize had
    # asked the leaver a moment before the `leaving` came, and took the answer afterwards:
    # the leaver was its successor again, and it a member, until the leaver failed its calls.
    # (These seeds: the leave crosses a round; 5 of 180 such leaves failed.)
    async def main() -> None:
        sim = Sim(seed=seed, store_config=StoreConfig(replicas=3))
        a = await sim.first()
        b = await sim.join(a)
        await sim.wait_ideal(within=15)
        keys = [f"k{i}" for i in range(5)]
        for key in keys:
            await a.put(key, f"value of {key}")
        sim._forget(a)
        await a.leave()
        assert [await b.get(key) for key in keys] == [f"value of {k}" for k in keys]
        assert not b.isolated and not b.member  # a ring of one, rightly
        await sim.stop()

    run_virtual(main())


@pytest.mark.parametrize("how", ["stopped to start again", "told to leave"])
def test_a_node_stopped_to_start_again_stays_remembered_by_the_nodes_it_told(how: str) -> None:
    # A new-user trial of issue #11: a ring whose nodes were all sent SIGTERM at once left
    # its last node with no peer remembered (each `leaving` it heard made it forget one), so
    # it came back as a new ring of one. A node stopped to start again (`udpdht node` on a
    # signal) says it will be back, and stays remembered, as a node that crashed does; one
    # told to leave (an admin's `leave`) is forgotten.
    async def main() -> None:
        sim = Sim(seed=12)
        await sim.build_ideal(5, maintenance=False)
        ring = sim.live_peers()
        for node in sim.joined.values():
            node.memory.remember(node.leafset.peers(), node.id)
        leaver = sim.joined[ring[2].id]
        told = [n for n in sim.joined.values() if n is not leaver]
        sim._forget(leaver)
        await leaver.leave(forget=how == "told to leave")
        for node in told:
            assert leaver.peer not in node.leafset.peers()  # (gone from the ring at once)
            remembered = leaver.peer in node.memory.peers()
            assert remembered == (how == "stopped to start again"), node
        await sim.stop()

    run_virtual(main())


def test_a_finger_lookup_answered_with_a_node_that_left_does_not_make_it_a_finger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # tests/test_server.py once found a leaver still listed right after its leave, in a
    # 5-node ring where every node is told: an answer sent before its sender heard of the
    # leaving names it. Here every finger lookup is answered with the leaver.
    async def main() -> None:
        sim = Sim(seed=11)
        await sim.build_ideal(40, maintenance=False)
        ring = sim.live_peers()
        leaver, told = sim.joined[ring[10].id], sim.joined[ring[11].id]
        await sim.leave(leaver)
        assert leaver.peer not in told.fingers.distinct()

        async def stale_answer(key: int, **_: object) -> Lookup:
            return Lookup(leaver.peer, [], [])

        monkeypatch.setattr(told, "lookup_id", stale_answer)
        for _ in range(ids.BITS):  # every finger the leafset does not cover
            await told.maintenance.fix_fingers()
        assert leaver.peer not in told.fingers.distinct()
        await sim.stop()

    run_virtual(main())


def test_a_lookup_past_nodes_that_joined_a_moment_ago_finds_them_in_a_few_hops() -> None:
    # Right after 100 servers joined, one set in about three builds took 0.3-0.7 s and 360
    # finds: three nodes had joined just before B, which they had notified, while the nodes
    # before them still named B as their successor. B denied owning their keys and, knowing
    # no node before them, named none; the confirmed lookup wandered for its 64 hops and
    # returned B again. B now names the nearest node it knows past the key (the first of the
    # joiners), which contradicts the next claim for B and is asked first.
    async def main() -> None:
        sim = Sim(seed=12)
        await sim.build_ideal(60, maintenance=False)
        ring = [sim.joined[p.id] for p in sim.live_peers()]
        first, b = ring[31], ring[34]
        joiners = {n.id for n in ring[31:34]}
        for node in ring:
            if node.id in joiners or node is b:
                continue
            ls = node.leafset
            ls.set_successors([p for p in ls.successors if p.id not in joiners])
            ls.set_predecessors([p for p in ls.predecessors if p.id not in joiners])
            for joiner in joiners:
                node.fingers.remove(joiner)
                node.view.remove(joiner)
        b.leafset.set_predecessors([n.peer for n in reversed(ring[31:34])])
        key = first.id - 1  # the first joiner's: (ring[30], first]
        found = await ring[0].lookup_id(key, confirm=True)
        assert found.owner.id == first.id
        assert len(found.hops) <= 8, len(found.hops)
        await sim.stop()

    run_virtual(main())


def at_place(node: Node, side: str, k: int, peer: Node) -> bool:
    """Whether ``peer`` is the k-th entry (from 0) of ``node``'s predecessor or successor list."""
    found = node.leafset.predecessors if side == "preds" else node.leafset.successors
    return len(found) > k and found[k] == peer.peer


@pytest.mark.parametrize(("side", "within"), [("preds", 0.1), ("succs", 0.2)])
def test_a_join_reaches_its_neighbours_lists_in_round_trips(side: str, within: float) -> None:
    # preds: the joiner's notify changes its successor's predecessor list, which passes it on
    # to its own successor, and so on (PROTOCOL.md 9.7, step 7): the L/2 nodes after the
    # joiner know it within round trips. Left to the rounds, the second took 0.6-1.7 s and
    # the eighth 4.7-7.4 s (a round of its predecessor's each; 0.05-0.08 s with it).
    # succs: the joiner's predecessor walks to it at once (the join's notify and its `was`);
    # its changed successor list goes to its own predecessor (`succs`, 9.6, step 5a), and so on
    # back: the L/2 nodes before the joiner list it within round trips. Left to the rounds,
    # the second took 0.1-1.4 s and the eighth 8-9 s (0.09-0.16 s with it).
    async def main() -> None:
        for seed in (41, 42, 43):
            sim = Sim(seed=seed)
            nodes = await sim.build_ideal(24, maintenance=True)
            await asyncio.sleep(10)  # calm: rounds 1-3 s apart
            joiner = await sim.join(via=min(nodes, key=lambda n: n.id))
            ring = sim.live_peers()
            at = next(i for i, p in enumerate(ring) if p.id == joiner.id)
            # The L/2 nodes after it (their predecessors), or the L/2 before it (successors).
            step = 1 if side == "preds" else -1
            half = joiner.leafset.half
            near = [sim.joined[ring[(at + step * k) % len(ring)].id] for k in range(1, half + 1)]
            for k, node in enumerate(near):
                await wait_until(partial(at_place, node, side, k, joiner), within)
            await sim.stop()

    run_virtual(main())


def test_a_node_that_left_and_joins_again_at_once_is_taken_back_at_once() -> None:
    # The other side of the test before: lists that name a node which left a moment ago are
    # taken without it, but a node that comes back that soon (a restart) says so itself.
    async def main() -> None:
        sim = Sim(seed=10)
        await sim.build_ideal(12, maintenance=True)
        ring = sim.live_peers()
        p1, leaver, s1 = (sim.joined[ring[i].id] for i in (3, 4, 5))
        await sim.leave(leaver)
        again = await sim.spawn(addr=leaver.addr)
        await again.join(s1.addr)
        sim.joined[again.id] = again
        assert s1.leafset.predecessor == again.peer
        # p1 walks to it in the early stabilize the join's notify starts: a round trip or two,
        # which may end just after the join returns.
        await wait_until(lambda: p1.leafset.successor == again.peer, within=0.2)
        # 2.5 s, as with no window at all; a window of 2 periods instead of half of one kept
        # the rest of the leafsets from taking it for 5.5 s.
        await sim.wait_ideal(within=4)
        await sim.stop()

    run_virtual(main())


@pytest.mark.parametrize("seed", [71, 72, 73])
def test_a_node_that_left_and_starts_again_alone_stays_a_ring_of_its_own(seed: int) -> None:
    # Found on a 6-node loopback ring: `udpdht leave`, then `udpdht node` without --bootstrap
    # on the same data dir warned "starting a new ring of one", and about 10 s later the ring
    # merged it back, its old records with it. Its former neighbours still remembered it: their
    # probes of remembered peers and their loop checks took it for a node of their ring cut off
    # from it. A node that left is forgotten; one that crashed is not (the next test).
    async def main() -> None:
        sim = Sim(seed=seed)
        nodes = await sim.build_ideal(6, maintenance=True)
        await wait_until(lambda: all(len(n.memory) == 5 for n in nodes), within=30)
        leaver = nodes[2]
        await sim.leave(leaver)  # an admin's leave: it forgets its peers too
        again = await sim.spawn(addr=leaver.addr)  # at its old address: its old id
        assert again.id == leaver.id
        # Many probe periods (PROBE_EVERY) and loop checks; the merge took 4 to 6 s before.
        await asyncio.sleep(60)
        assert again.leafset.peers() == [] and not again.isolated
        assert (await again.lookup_id(12345)).owner == again.peer  # a ring of one
        for node in sim.joined.values():
            assert again.peer not in [*node.leafset.peers(), *node.fingers.distinct()]
            assert node.maintenance.merges == 0
            assert leaver.id not in {p.id for p in node.memory.peers()}  # (what did it)
        await sim.wait_ideal(within=10)  # and the five are a ring of their own
        await sim.stop()

    run_virtual(main())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_ring_of_two_whose_node_restarts_forms_again_without_waiting_out_the_back_off(
    seed: int,
) -> None:
    # A new user's trial: a ring of two, one node killed and started again from its data dir:
    # the two took 17 s to be one ring again. The survivor, isolated, had backed off to 10 s
    # between rejoin attempts; the restarted one found it rejoining with a lower id and
    # waited for it to start the ring again, which it did only at its next attempt.
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sim = Sim(seed=seed)
        a, b = await sim.build_ideal(2, maintenance=True)
        # A ring of two for a round: members that remember each other.
        await wait_until(lambda: a.member and b.peer in a.memory.peers(), within=30)
        await sim.crash(b)
        await wait_until(lambda: a.isolated, within=30)
        longest = Maintenance.MAX_REJOIN_WAIT  # its back-off between rejoin attempts
        await wait_until(lambda: a.maintenance._rejoin_wait >= longest, within=60)
        again = await sim.spawn(addr=b.addr)  # as started again from its data dir:
        again.memory.remember([a.peer], again.id)  # it remembers its ring
        again.member = True
        start = loop.time()
        await wait_until(
            lambda: a.leafset.successor == again.peer and again.leafset.successor == a.peer,
            within=30,
        )
        assert loop.time() - start < 5  # 16-18 s before, 1.1-3.4 s now
        await sim.stop()

    run_virtual(main())


def test_a_strangers_ping_does_not_cut_an_isolated_nodes_back_off() -> None:
    # The other side of the test before: only a peer it remembers (or a bootstrap address)
    # makes an isolated node try to rejoin at once; anyone else's pings could otherwise make
    # it try every round, 8 pings each.
    async def main() -> None:
        sim = Sim(seed=4)
        a, b = await sim.build_ideal(2, maintenance=True)
        await wait_until(lambda: a.member and b.peer in a.memory.peers(), within=30)
        await sim.crash(b)
        longest = Maintenance.MAX_REJOIN_WAIT
        await wait_until(lambda: a.isolated and a.maintenance._rejoin_wait >= longest, 60)
        stranger = await sim.spawn()
        next_try = a.maintenance._next_rejoin
        for _ in range(5):
            reply = await stranger.endpoint.call(a.addr, "ping", {})
            assert reply.get("isolated") is True
        assert a.maintenance._next_rejoin == next_try
        assert a.maintenance._rejoin_wait >= longest
        await sim.stop()

    run_virtual(main())


def test_nodes_that_stop_together_to_start_again_keep_each_other_in_mind() -> None:
    # `udpdht node` on SIGTERM leaves but keeps its peers, so that a restart rejoins: a whole
    # ring stopped at once (docker compose down, then up) finds itself again through them. The
    # `leaving` of the others, arriving meanwhile, must not take them out of its memory.
    async def main() -> None:
        sim = Sim(seed=75)
        nodes = await sim.build_ideal(6, maintenance=True)
        await wait_until(lambda: all(len(n.memory) == 5 for n in nodes), within=30)
        await asyncio.gather(*(n.leave(forget=False) for n in nodes))
        for node in nodes:
            assert len(node.memory) == 5

    run_virtual(main())


def test_a_node_that_crashed_and_starts_again_alone_is_merged_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What the memory of peers is for: a crash sends no `leaving`, so the ring remembers the
    # node, and takes it back when it comes back alone (a lost peers.json, --new-ring). A
    # stranger cannot make the ring forget it: `leaving` counts only from the node's address.
    async def main() -> None:
        sim = Sim(seed=74)
        nodes = await sim.build_ideal(6, maintenance=True)
        await wait_until(lambda: all(len(n.memory) == 5 for n in nodes), within=30)
        victim = nodes[2]
        await sim.crash(victim)
        await sim.wait_ideal(within=30)  # the five closed the ring round it
        witness = nodes[0]
        assert victim.peer in witness.memory.peers()
        assert victim.peer not in [*witness.leafset.peers(), *witness.fingers.distinct()]
        stranger = await RpcEndpoint.bind(sim.net, (sim.net.host, 0))
        with pytest.raises(RemoteError, match="only the leaving node"):
            await stranger.call(witness.addr, "leaving", {"id": ids.to_bytes(victim.id)})
        stranger.close()
        assert victim.peer in witness.memory.peers()
        again = await sim.spawn(addr=victim.addr)
        sim.joined[again.id] = again
        await sim.wait_ideal(within=30)
        await sim.stop()

    with caplog.at_level(logging.INFO, logger="udpdht"):
        run_virtual(main())
    said = [r.getMessage() for r in caplog.records]
    # The node that found it names it once, as what it is: the start of the lookup, and the
    # node found (a ring of one answers for every place itself).
    found = [m for m in said if "another loop or ring" in m]
    assert found, said
    assert all("found that node itself" in m for m in found), found
    # And the node taken in says so, beyond a new predecessor.
    assert any("this ring of one joins that ring" in m for m in said), said


@pytest.mark.parametrize("seed", range(5))
def test_lookup_skips_a_dead_hop(seed: int) -> None:
    async def main() -> None:
        sim = Sim(seed=seed)
        await sim.build_ideal(300)  # maintenance off: nobody repairs behind the lookup's back
        rng = random.Random(seed)
        for _ in range(1000):
            start = rng.choice(list(sim.joined.values()))
            key = rng.getrandbits(ids.BITS)
            done, candidates = start.local_find(key)
            if not done and candidates[0] != sim.true_owner(key):
                break
        else:
            raise AssertionError("no lookup with a first hop found")
        await sim.crash(sim.joined[candidates[0].id])  # the best next hop is dead
        found = await start.lookup_id(key)
        assert found.owner == sim.true_owner(key)
        assert candidates[0].id not in [h.peer.id for h in found.hops]
        assert candidates[0] not in start.fingers.distinct()  # and the requester forgot it
        await sim.stop()

    run_virtual(main())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12])
def test_churn_keeps_one_correct_ring(seed: int) -> None:
    async def main() -> None:
        sim = Sim(seed=seed)
        await sim.build_ideal(150, maintenance=True)
        # Faster than the paper's top rate: an event every ~0.7 s against 1 s stabilization.
        stats = await sim.churn(90, joins_per_s=0.7, crashes_per_s=0.35, leaves_per_s=0.35)
        assert stats.joins > 40 and stats.crashes > 20 and stats.leaves > 20
        assert sim.violations == []
        await sim.wait_ideal(within=120)
        assert sim.violations == []
        await assert_lookups_correct(sim, 200, seed=seed)
        await sim.stop()

    run_virtual(main())


def test_one_node_ring_and_two_node_ring() -> None:
    async def main() -> None:
        sim = Sim(seed=13)
        first = await sim.first()
        found = await first.lookup_id(12345)
        assert found.owner.id == first.id and found.hops == []
        second = await sim.join(first)
        await sim.wait_ideal(within=10)
        assert first.leafset.successors == [second.peer]
        assert second.leafset.predecessors == [first.peer]
        for key in (first.id, second.id, first.id + 1, second.id + 1):
            key &= ids.MASK
            assert (await first.lookup_id(key)).owner == sim.true_owner(key)
            assert (await second.lookup_id(key)).owner == sim.true_owner(key)
        await sim.leave(second)
        assert first.leafset.successors == [] and first.leafset.predecessors == []
        await sim.stop()

    run_virtual(main())


def test_same_seed_same_run() -> None:
    def run(seed: int) -> tuple[float, list[int], int]:
        async def main() -> tuple[float, list[int], int]:
            sim = Sim(seed=seed, loss=0.05)
            first = await sim.first()
            await sim.join_many(30, via=first, spread=2.0)
            took = await sim.wait_ideal(within=120)
            ring = [p.id for p in sim.live_peers()]
            sent = sim.net.stats.sent
            await sim.stop()
            return took, ring, sent

        return run_virtual(main())

    # (Seed 13: with 5 % loss, a join through one node that 29 others join through at once
    # fails now and then, in about one seed in ten; seed 14 came to be one of those.)
    assert run(13) == run(13)


def test_status_reports_the_ring() -> None:
    async def main() -> None:
        sim = Sim(seed=15, config=NodeConfig(leafset=4))
        nodes = await sim.build_ideal(10)
        node: Node = nodes[0]
        status = node.status()
        ring = sim.live_peers()
        i = [p.id for p in ring].index(node.id)
        assert status["predecessor"]["id"] == ids.to_hex(ring[i - 1].id)
        assert [s["id"] for s in status["successors"]] == [
            ids.to_hex(ring[(i + k) % 10].id) for k in (1, 2)
        ]
        assert len(status["predecessors"]) == 2
        fingers = [f["id"] for f in status["fingers"]]
        assert len(fingers) == len(set(fingers)) >= 2
        await sim.stop()

    run_virtual(main())


def test_lookup_is_iterative_with_a_trace() -> None:
    async def main() -> None:
        sim = Sim(seed=16, latency=(0.02, 0.02))
        await sim.build_ideal(500)
        node = next(iter(sim.joined.values()))
        far = (node.id + ids.RING // 2) & ids.MASK
        # The first call to each peer on the way costs one more round trip: its answer is
        # larger than three times the request, so the peer first has us prove our address
        # (rpc.py). The second lookup takes the same path with the tokens in hand.
        await node.lookup_id(far)
        loop = asyncio.get_running_loop()
        start = loop.time()
        found = await node.lookup_id(far)
        assert found.owner == sim.true_owner(far)
        assert 1 <= len(found.hops) <= 9
        for hop in found.hops:
            assert hop.rtt_s == pytest.approx(0.04, abs=1e-6)  # 20 ms each way, exactly
        assert loop.time() - start == pytest.approx(0.04 * len(found.hops), abs=1e-6)
        await sim.stop()

    run_virtual(main())


def split_into_two_loops(sim: Sim, nodes: list[Node], seed: int) -> None:
    """Make ``nodes`` two loops whose nodes alternate round the ring, each ideal on its own;
    each node remembers one node of the other loop (as a bootstrap gives)."""
    ring = sorted(nodes, key=lambda n: n.id)
    odd, even = ring[0::2], ring[1::2]
    sim.install_ideal_routing(odd)
    sim.install_ideal_routing(even)
    rng = random.Random(seed)
    for mine, other in ((odd, even), (even, odd)):
        for node in mine:
            node.memory.remember([rng.choice(other).peer], node.id)
    assert sim.ideal_problems()  # two loops, not one ring


def test_two_interleaved_loops_become_one_ring() -> None:
    # Many joins at once can leave the ring winding twice around the id space: two loops
    # whose nodes alternate, each consistent on its own (every predecessor and successor
    # pair agrees), which stabilization alone never undoes. Found through udpdht.Server
    # after 100 joins in a chain: reads of keys stored in the other loop said "not found".
    # Each node knows one node of the other loop (a remembered peer, as a bootstrap gives).
    async def main() -> None:
        sim = Sim(seed=17)
        split_into_two_loops(sim, await sim.build_ideal(40, maintenance=True), seed=17)
        await sim.wait_ideal(within=120)
        await sim.stop()

    run_virtual(main())


def test_a_loop_check_ends_where_its_route_reaches_our_own_neighbourhood() -> None:
    """A loop check asks a node from elsewhere who follows us. Where that node's route leads
    into our own leafset, the answer there comes from the same loop as ours: the check ends
    with our own tables' answer (one find, not the ~2.8 of a whole lookup: 100 servers just
    built made 392 finds in their first second), and still finds nothing amiss in one ring."""

    async def main() -> None:
        sim = Sim(seed=23)
        await sim.first()
        for _ in range(63):  # by joins: each node remembers the peers joins pushed out
            await sim.join()
        await sim.wait_ideal(within=120)
        for node in list(sim.joined.values())[:16]:
            sent = requests_from(sim, node.addr, "find")
            assert await node.maintenance.check_loop(near=True) is False
            assert len(sent) == 1  # the node from elsewhere alone
            ours = {p.addr for p in node.leafset.peers()}
            assert sent[0] not in ours
        sim.net.set_drop_filter(None)
        await sim.stop()

    run_virtual(main())


@pytest.mark.parametrize("seed", [1, 2])
def test_a_loop_check_cut_short_finds_every_loop_a_whole_lookup_finds(seed: int) -> None:
    """Two interleaved loops whose fingers still span the whole ring (filled before the loops
    parted): a farther node of our leafset routes by its fingers, into the other loop. Cut
    short there, checks missed 1-2 loops in 100 that a whole lookup found (a helper's review);
    cut short only at our nearest neighbours, which answer from their lists, none."""

    async def main() -> None:
        sim = Sim(seed=seed)
        nodes = await sim.build_ideal(100)
        fingers = {n.id: list(n.fingers.entries) for n in nodes}
        split_into_two_loops(sim, nodes, seed=seed)
        for n in nodes:
            for i, p in enumerate(fingers[n.id]):
                if p is not None and p.id != n.id:
                    n.fingers.set(i, p)
        ring = sorted(nodes, key=lambda n: n.id)
        rng = random.Random(seed)
        found = 0
        finds = {"whole": 0, "short": 0}
        for mine, other in ((ring[0::2], ring[1::2]), (ring[1::2], ring[0::2])):
            for node in mine:
                start, succ = rng.choice(other), node.leafset.successor
                assert succ is not None
                key = (node.id + 1) % ids.RING
                got = {}
                for kind, near in (("whole", set[int]()), ("short", node.maintenance._near())):
                    sent = requests_from(sim, node.addr, "find")
                    got[kind] = await node.lookup_id(
                        key, start=start.addr, confirm=False, near=near
                    )
                    finds[kind] += len(sent)
                loop = [
                    ids.in_interval(got[k].owner.id, node.id, succ.id) for k in ("whole", "short")
                ]
                assert loop[1] or not loop[0], f"{node.peer}: the short check missed a loop"
                found += loop[1]
        sim.net.set_drop_filter(None)
        assert found >= 60  # (most checks from the other loop find it)
        assert finds["short"] < finds["whole"]  # and the cut saved finds
        await sim.stop()

    run_virtual(main())


def test_the_sim_network_has_addresses_for_more_than_55535_nodes() -> None:
    """Each new machine gets an address of its own, distinct and valid for a peer, well past
    the 55,535 ports of one host above 10000; one host alone still gives every free port."""

    async def main() -> None:
        net = SimNetwork(seed=7)
        machines = [
            (await net.bind((net.host, 0), asyncio.DatagramProtocol())) for _ in range(60_000)
        ]
        addrs = [t.get_extra_info("sockname") for t in machines]
        assert len(set(addrs)) == len(addrs) == 60_000
        assert len({host for host, _ in addrs}) == 60_000  # one machine each
        for host, port in addrs:
            assert check_peer_addr(host, port) == (host, port)
            assert host.startswith("10.")
        one_host = [
            (await net.bind(("10.0.0.1", 0), asyncio.DatagramProtocol())).get_extra_info("sockname")
            for _ in range(60_000)
        ]
        assert len(set(one_host)) == 60_000
        assert all(1024 <= port <= 65535 for _, port in one_host)
        with pytest.raises(OSError):
            for _ in range(65535):
                await net.bind(("10.0.0.1", 0), asyncio.DatagramProtocol())

    run_virtual(main())


def test_a_calm_ring_costs_less_and_still_repairs_a_crash_at_once() -> None:
    # Nothing changes: rounds come half as often, fingers are refreshed rarely, and a
    # predecessor that notified us is not pinged. The datagrams of a 16-node ring at rest,
    # store sync included, were 6.2 per node per second before; a crash brings the full rate
    # back, and the ring is ideal again within seconds.
    async def main() -> None:
        sim = Sim(seed=21)
        nodes = await sim.build_ideal(16, maintenance=True)
        calm = Maintenance.CALM_ROUNDS
        await wait_until(lambda: all(n.maintenance.calm >= calm for n in nodes), within=60)
        before = sim.net.stats.sent
        await asyncio.sleep(60)
        rate = (sim.net.stats.sent - before) / 60 / 16
        assert rate < 3.5, f"{rate:.2f} datagrams per node per second at rest"
        await sim.crash(nodes[7])
        # Every node of 16 has the dead one in its leafset and finds out for itself: 11.5-15.5 s
        # over seeds 20-27 (this seed, 21: 15.5 s).
        took = await sim.wait_ideal(within=20.0)
        assert took < 20.0
        await sim.stop()

    run_virtual(main())


def test_a_quiet_ring_backs_its_loop_checks_off_and_still_finds_a_loop() -> None:
    # A quiet ring ran a loop check from a random far node in a quarter of its rounds: at
    # 100 nodes, 2.95 datagrams per node per second at rest, a third of them those checks'
    # lookups. Each check that finds nothing now halves the share, down to 1/32 (2.08; with
    # quiet anti-entropy rounds spaced out too, 1.47; 50 nodes: 2.73 before both, 1.47). A
    # loop that forms later is still found and joined into one ring.
    async def main() -> None:
        sim = Sim(seed=21)
        nodes = await sim.build_ideal(50, maintenance=True)

        def backed_off() -> bool:  # 90 % at the floor (after 89 virtual s; all: 206)
            floor = Maintenance.LOOP_CHECK_MIN
            return sum(n.maintenance.loop_share == floor for n in nodes) >= 0.9 * len(nodes)

        await wait_until(backed_off, 300)
        before = sim.net.stats.sent
        await asyncio.sleep(30.0)
        rate = (sim.net.stats.sent - before) / 30 / len(nodes)
        assert rate < 2.0, f"{rate:.2f} datagrams per node per second at rest"
        split_into_two_loops(sim, nodes, seed=21)
        await sim.wait_ideal(within=120)
        await sim.stop()

    run_virtual(main())


def test_a_finger_far_past_its_owner_is_refreshed_from_a_node_before_it() -> None:
    # After many joins a finger can lie far past the owner of its start: asked first, it
    # routes clockwise from there, round the ring (about log n hops). A node heard from just
    # before the start finds the owner in its successor list: one hop.
    async def main() -> None:
        sim = Sim(seed=5)
        nodes = await sim.build_ideal(300)
        ring = sorted(nodes, key=lambda n: n.id)
        node = ring[0]
        i = ids.BITS - 2  # a quarter of the ring away: far outside its leafset
        start = node.fingers.start(i)
        owner = sim.true_owner(start)
        at = [n.id for n in ring].index(owner.id)
        node.fingers.set(i, ring[(at + 40) % len(ring)].peer)  # 40 nodes past the owner
        now = asyncio.get_running_loop().time()
        node.view.add(ring[at - 2].peer, now)  # heard from, two nodes before the start
        hops: list[int] = []
        node.lookup_observers.append(lambda found, _: hops.append(len(found.hops) if found else -1))
        node.maintenance._next_finger = i
        await node.maintenance.fix_fingers()
        assert node.fingers.entries[i] == owner
        assert hops == [1]
        await sim.stop()

    run_virtual(main())


def test_a_quiet_ring_stabilizes_without_notifies_and_stays_agreed() -> None:
    # Once the ring is ideal, a successor notes its predecessor's `neighbors` call (`succ`)
    # as the notify it would get: rounds send no notify, and every node's range still counts
    # as agreed by both neighbours.
    async def main() -> None:
        sim = Sim(seed=21)
        nodes = await sim.build_ideal(12, maintenance=True)
        await asyncio.sleep(10.0)
        sent: list[str | None] = []

        def watch(src: tuple[str, int], dst: tuple[str, int], data: bytes) -> bool:
            msg = wire.decode(data)
            sent.append(msg.method if isinstance(msg, wire.Request) else None)
            return False

        sim.net.set_drop_filter(watch)
        await asyncio.sleep(10.0)
        sim.net.set_drop_filter(None)
        assert sent.count("neighbors") >= len(nodes)  # stabilize went on
        assert "notify" not in sent
        assert all(n.maintenance.agreed() for n in nodes)
        assert sim.ideal_problems() == []
        await sim.stop()

    run_virtual(main())


@pytest.mark.parametrize("seed", [1, 2])
def test_joins_one_after_another_leave_a_whole_ring_without_waiting_for_rounds(seed: int) -> None:
    """Each join tells the nodes around it (the successor's former predecessor, via ``was``;
    early stabilize walks to the joiner), so the ring is whole as the joins return, not a
    round or more later: with no maintenance rounds at all, after 60 joins one after another
    through random members, every node's successor and predecessor are the true ones."""

    async def main() -> None:
        sim = Sim(seed=seed)
        members = [await sim.spawn(maintenance=False)]
        for _ in range(60):
            node = await sim.spawn(maintenance=False)
            await node.join(sim.rng.choice(members).addr)
            members.append(node)
        ring = sorted(n.id for n in members)

        def wrong() -> list[str]:
            out = []
            for node in members:
                i = ring.index(node.id)
                succ, pred = node.leafset.successor, node.leafset.predecessor
                if succ is None or succ.id != ring[(i + 1) % len(ring)]:
                    out.append(f"{ids.short(node.id)} successor")
                if pred is None or pred.id != ring[i - 1]:
                    out.append(f"{ids.short(node.id)} predecessor")
            return out

        # The early stabilizes under way end within a few round trips (no round runs, ever);
        # past the deadline, the assertion shows which pointers are wrong.
        with contextlib.suppress(AssertionError):
            await wait_until(lambda: not wrong(), within=1.0)
        assert wrong() == []
        await asyncio.gather(*(n.stop() for n in members))

    run_virtual(main())


def test_joins_after_crashes_go_through_live_members_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Sim.join picks its via from a list it keeps beside ``joined`` (made per join, it was
    # quadratic in the ring's size): a crashed member must leave it, or joins time out on it.
    vias: list[tuple[str, int]] = []
    real_join = Node.join

    async def join(node: Node, via: tuple[str, int]) -> None:
        vias.append(via)
        await real_join(node, via)

    async def main() -> None:
        sim = Sim(seed=3)
        await sim.first()
        await sim.join_many(11)
        await sim.wait_ideal(within=60)
        for victim in list(sim.joined.values())[::2]:
            await sim.crash(victim)
        await sim.wait_ideal(within=60)  # (a join through the ring mid-repair may time out)
        monkeypatch.setattr(Node, "join", join)
        for _ in range(12):
            await sim.join()
        live = {n.addr for n in sim.joined.values()}
        assert len(vias) == 12 and all(via in live for via in vias)
        assert len(sim.joined) == 6 + 12
        await sim.stop()

    run_virtual(main())


def test_a_node_joining_a_large_ring_takes_its_first_fingers_from_its_successor() -> None:
    # A node that joined had no fingers: its maintenance looked one up a round (log n
    # rounds), and its own lookups took the long way meanwhile. Its successor now names its
    # farthest fingers in the answer the joining node asks for its lists.
    async def main() -> None:
        sim = Sim(seed=31)
        nodes = await sim.build_ideal(400)
        node = await sim.spawn(maintenance=False)  # (no round: what the join itself brought)
        await node.join(nodes[0].addr)
        sim._admit(node)
        far = [
            i
            for i in range(ids.BITS)
            if not node.leafset.covers(node.fingers.start(i))
            and ids.distance(node.id, node.fingers.start(i)) < ids.RING // 2
        ]
        right = [
            i
            for i in far
            if (f := node.fingers.entries[i]) is not None
            and f.id == sim.true_owner(node.fingers.start(i)).id
        ]
        assert len(far) >= 4  # (400 nodes: about 5 fingers between the leafset and half-way)
        assert len(right) >= len(far) - 1, (len(right), len(far))
        # So its lookups are as short as an older node's at once.
        rng = random.Random(31)
        keys = [rng.getrandbits(ids.BITS) for _ in range(100)]
        ours = await asyncio.gather(*(node.lookup_id(k, confirm=False) for k in keys))
        theirs = await asyncio.gather(*(nodes[1].lookup_id(k, confirm=False) for k in keys))
        for key, found in zip(keys, ours, strict=True):
            assert found.owner.id == sim.true_owner(key).id
        mean = sum(len(f.hops) for f in ours) / len(keys)
        assert mean <= sum(len(f.hops) for f in theirs) / len(keys) + 0.5, mean
        await sim.stop()

    run_virtual(main())


def test_a_node_joining_a_large_ring_costs_fewer_lookups_in_its_first_half_minute() -> None:
    # Without fingers from its successor, a node joining a ring of 400 sent 18 finds in its
    # first 30 s for its join and fingers (a finger lookup every round until each was found);
    # with them, 9 (seeds 34, 35: 19 and 24 before, 9 and 12 with). Its loop checks, one per
    # change of its neighbourhood while young, are left out: 10 to 24 more, by the seed,
    # whatever the fingers.
    async def main() -> None:
        sim = Sim(seed=33)
        nodes = await sim.build_ideal(400, maintenance=True)
        await asyncio.sleep(5)
        node = await sim.spawn()
        node.maintenance._check_loop_soon = lambda *_: None  # type: ignore[method-assign]
        finds = requests_from(sim, node.addr, "find")
        await node.join(nodes[0].addr)
        sim._admit(node)
        await asyncio.sleep(30)
        assert len(finds) <= 12, len(finds)
        sim.net.set_drop_filter(None)
        assert (await assert_lookups_correct(sim, 100, seed=33)) <= 4.5
        await sim.stop()

    run_virtual(main())


@pytest.mark.slow  # 300 nodes joining, then two virtual minutes of their rounds: 8 s
def test_a_ring_at_rest_probes_its_remembered_peers_less_often_until_one_dies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each node probes the peers it remembers but no longer has in its tables (joins pushed
    # them out), one every PROBE_EVERY (5 s): the net for a partition that healed (section
    # 9.6b). 300 nodes joined: 6.5 probes a node in the minute after the ring was ideal. Each
    # probe that finds its own ring again now doubles the wait, up to 8 times; a peer
    # declared dead brings the first pace back at once.
    probes: list[tuple[float, int]] = []
    honest = Maintenance.probe_remembered

    async def counted(self: Maintenance) -> None:
        if self.absent_peers():
            probes.append((asyncio.get_running_loop().time(), self.node.id))
        await honest(self)

    monkeypatch.setattr(Maintenance, "probe_remembered", counted)

    async def main() -> None:
        sim = Sim(seed=34)
        await sim.first()
        await sim.join_many(299, spread=10.0)
        await sim.wait_ideal(within=60)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(60)
        assert len(probes_since(start)) / len(sim.joined) < 3.5
        victim = sim.nodes[7]
        told = [n for n in sim.joined.values() if victim.peer in n.leafset.peers()]
        await sim.crash(victim)
        crashed = loop.time()
        await sim.wait_ideal(within=30)  # (each of them declared it dead)
        await asyncio.sleep(2 * Maintenance.PROBE_EVERY)
        by_told = [i for _, i in probes_since(crashed) if i in {n.id for n in told}]
        others = len(probes_since(crashed)) - len(by_told)
        rate_told = len(by_told) / len(told)
        rate_others = others / (len(sim.joined) - len(told))
        print(
            f"probes a node since the crash: {rate_told:.2f} by its neighbours, "
            f"{rate_others:.2f} by the others"
        )
        assert rate_told > 2.6 * rate_others  # (without pulling the next probe in: 2.2 times)
        await sim.stop()

    def probes_since(t0: float) -> list[tuple[float, int]]:
        return [(t, i) for t, i in probes if t >= t0]

    run_virtual(main())


@pytest.mark.parametrize("seed", [81, 82])
def test_a_join_right_after_its_successor_crashed_waits_for_the_repair(seed: int) -> None:
    # A node joining just before a node that had crashed a moment ago was told, by a ring
    # that had not noticed yet, that the dead node was its successor: the join failed after
    # 4.7 s with "<the dead node> did not answer ...; is a node running there?", a node the
    # user never named (a new user's trial, real processes). It tries again while the ring
    # repairs, and joins.
    async def main() -> None:
        sim = Sim(seed=seed, config=NodeConfig(verify_ids=False))
        nodes = await sim.build_ideal(8, maintenance=True)
        victim = sorted(nodes, key=lambda n: n.id)[3]
        await sim.crash(victim)
        joiner = await sim.spawn(node_id=(victim.id - 1) % ids.RING)
        via = next(n for n in nodes if n is not victim)
        await joiner.join(via.addr)  # (raised RpcTimeout for the dead node before)
        sim._admit(joiner)
        await sim.wait_ideal(within=30)
        assert joiner.leafset.successor is not None
        assert joiner.leafset.successor.id != victim.id
        await sim.stop()

    run_virtual(main())
