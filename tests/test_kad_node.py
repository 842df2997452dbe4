"""A udpdht node answers the `kademlia` package's protocol on its own port (kad/service.py).

Against the real `kademlia` package on loopback: a `kademlia.network.Server` bootstraps from a
node of a udpdht ring, sets and gets through it, and `udpdht.Server` users see the same values
(issue #14, "Done when" 2). Then hostile kademlia datagrams, replayed against node processes on
both event loops, and ``--no-kad``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any

import msgpack
import pytest
from helpers import NodeProcess, Stranger, node_process, wait_until
from kademlia.network import Server as KademliaServer
from kademlia.storage import ForgetfulStorage

from udpdht import Client, ids
from udpdht.kad import codec
from udpdht.node import LOCAL_RING, Node, NodeConfig
from udpdht.routing import Peer, RingView
from udpdht.server import Server, digest
from udpdht.sim import ideal_problems

LOCAL = "127.0.0.1"
LOOPS = ["asyncio", "uvloop"] if importlib.util.find_spec("uvloop") else ["asyncio"]
Address = tuple[str, int]


# --- helpers ------------------------------------------------------------------------------------


@asynccontextmanager
async def kademlia(*bootstrap: Address, forgetful: bool = False) -> AsyncIterator[KademliaServer]:
    """A real kademlia node on loopback, bootstrapped from ``bootstrap``; stopped on exit.

    ``forgetful``: it keeps nothing itself (its storage forgets at once), so that its ``get``
    reads the network instead of the copy its own ``set`` kept when it was near the key."""
    server = KademliaServer(storage=ForgetfulStorage(ttl=0) if forgetful else None)
    await server.listen(0, interface=LOCAL)
    try:
        if bootstrap:
            assert await server.bootstrap(list(bootstrap)), "bootstrap found no node"
        yield server
    finally:
        server.stop()


def kad_port(server: KademliaServer) -> int:
    return int(server.transport.get_extra_info("sockname")[1])


@asynccontextmanager
async def udpdht_ring(n: int) -> AsyncIterator[list[Server]]:
    """``n`` udpdht.Servers in one ring (the ideal ring reached), stopped on exit."""
    servers: list[Server] = []
    try:
        for _ in range(n):
            server = Server(config=LOCAL_RING)
            servers.append(server)
            await server.listen(0, LOCAL)
        for server in servers[1:]:
            assert await server.bootstrap([(LOCAL, servers[0].port or 0)])
        nodes = [s.dht for s in servers if s.dht is not None]
        await wait_until(lambda: not ideal_problems(nodes), within=20)
        yield servers
    finally:
        await asyncio.gather(*(s.astop() for s in servers))


def addr_of(server: Server) -> Address:
    assert server.dht is not None
    return server.dht.addr


class KadStranger(Stranger):
    """A raw UDP socket that sends rpcudp datagrams by hand and never answers anything unless
    told: what an attacker (or a spoofed victim) has. Counts the bytes both ways."""

    @staticmethod
    def kad_request(method: Any, args: Any, msg_id: bytes | None = None) -> bytes:
        body: bytes = msgpack.packb([method, args], use_bin_type=True)
        return b"\x00" + (msg_id or os.urandom(20)) + body

    def replies(self, within: float, until: int | None = None) -> list[Any]:
        """The results of the replies (not requests) that arrive within ``within`` s (or
        until ``until`` have)."""
        results: list[Any] = []
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0 and len(results) != until:
            for data in self.datagrams(min(left, 0.05)):
                msg = codec.decode(data)
                if isinstance(msg, codec.KadReply):
                    results.append(msg.result)
        return results

    def answer_pings(self, within: float, to: Address, until: int = 1) -> list[Any]:
        """Answer every ping that arrives (as a kademlia node would: our id); return the
        results of the replies that arrive meanwhile (once ``until`` have)."""
        results: list[Any] = []
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0 and len(results) < until:
            for data in self.datagrams(min(left, 0.05)):
                msg = codec.decode(data)
                if isinstance(msg, codec.KadRequest) and msg.method == "ping":
                    self.send(codec.encode_reply(msg.msg_id, bytes(20)), to)
                elif isinstance(msg, codec.KadReply):
                    results.append(msg.result)
        return results


# --- pure parts -----------------------------------------------------------------------------


def test_xor_nearest_is_a_sort_by_xor_distance() -> None:
    rng = random.Random(5)
    for size in (1, 2, 7, 40, 300):
        own = Peer(rng.getrandbits(160), (LOCAL, 1))
        view = RingView(own)
        stale = set()
        for i in range(size):
            pid = rng.getrandbits(160) if i % 3 else own.id ^ rng.getrandbits(rng.randrange(160))
            view.add(Peer(pid, (LOCAL, 2 + i)), 0.0 if i % 7 == 0 else 10.0)
            if i % 7 == 0:
                stale.add(pid)
        fresh = [pid for pid in view._peers if pid not in stale]
        for _ in range(30):
            key = rng.getrandbits(160) if rng.random() < 0.5 else rng.choice(fresh)
            for count in (1, 5, 20):
                got = [p.id for p in view.xor_nearest(key, count, since=5.0)]
                assert got == sorted(fresh, key=lambda i: i ^ key)[:count]


# --- a kademlia client on a udpdht ring ---------------------------------------------------------


async def test_kademlia_sets_and_gets_100_keys_through_a_udpdht_ring_and_udpdht_reads_them() -> (
    None
):
    """Done when (2): a real kademlia Server bootstrapped from one node of a 10-node udpdht
    ring sets 100 keys and gets all 100 back; udpdht.Server.get through another node returns
    the same values; a value set through udpdht.Server is what kademlia's get returns."""
    async with udpdht_ring(10) as servers:
        ring = {addr_of(s) for s in servers}
        values: dict[str, Any] = {}
        kinds: list[Callable[[int], Any]] = [
            lambda i: f"value {i}",
            lambda i: i * 1001,
            lambda i: i / 7,
            lambda i: bytes([i]) * 9,
            lambda i: i % 2 == 0,
        ]
        for i in range(100):
            values[f"kad-key-{i}"] = kinds[i % len(kinds)](i)
        async with kademlia(addr_of(servers[0]), forgetful=True) as writer:
            for batch in range(0, 100, 10):
                keys = list(values)[batch : batch + 10]
                assert all(await asyncio.gather(*(writer.set(k, values[k]) for k in keys)))
            got = await asyncio.gather(*(writer.get(k) for k in values))
            assert dict(zip(values, got, strict=True)) == values
            # It learned udpdht nodes only: the ring is where values live.
            assert {tuple(a) for a in writer.bootstrappable_neighbors()} <= ring
        # A udpdht.Server user through another node sees every value, of the same type.
        for key, value in values.items():
            read = await servers[7].get(key)
            assert read == value and type(read) is type(value), key
        # The other way: set through udpdht.Server, read by a fresh kademlia node.
        await servers[4].set("set-by-udpdht", "hello kademlia")
        await servers[4].set(b"\x00bytes-key", 12345)
        async with kademlia(addr_of(servers[9])) as reader:
            assert await reader.get("set-by-udpdht") == "hello kademlia"
            assert await reader.get(b"\x00bytes-key") == 12345
            assert await reader.get("kad-key-42") == values["kad-key-42"]
            assert await reader.get("never-set") is None
        counts = [s.dht.kad.status() for s in servers if s.dht is not None and s.dht.kad]
        assert sum(c["requests"]["store"] for c in counts) >= 100
        assert sum(c["malformed"] + c["values_refused"] for c in counts) == 0


async def test_storing_the_same_value_again_makes_no_new_version() -> None:
    """kademlia stores each value on every node its crawl found (here all 5) at once: the ring
    keeps one version, and storing it again changes nothing; a new value is a new version."""
    async with udpdht_ring(5) as servers, kademlia(addr_of(servers[0])) as client:
        assert await client.set("same", "v1")
        async with Client(addr_of(servers[2])) as native:
            first = await native.get_record(digest("same"))
            assert await client.set("same", "v1")
            again = await native.get_record(digest("same"))
            assert (again.stamp, again.writer) == (first.stamp, first.writer)
            assert await client.set("same", "v2")
            changed = await native.get_record(digest("same"))
            assert changed.value == "v2" and changed.stamp > first.stamp
        unchanged = sum(s.dht.replicator.writes_unchanged for s in servers if s.dht)
        assert unchanged >= 2 * 4  # each set: one write, four stores found it there


async def test_find_node_names_ring_nodes_nearest_by_xor_and_not_the_asker() -> None:
    async with udpdht_ring(6) as servers:
        node = servers[0].dht
        assert node is not None and node.kad is not None
        # Every ring node answers the node's kademlia ping first: an answer waits only 0.5 s
        # for pings of peers not checked yet, which a slow machine can pass (that wait has its
        # own test: test_find_node_names_only_peers_that_answer_kademlia), and then names fewer
        # than all six.
        kad = node.kad
        others = [s.dht.peer for s in servers[1:] if s.dht is not None]
        for peer in others:
            kad.peers.check(peer)
        await wait_until(lambda: all(kad.peers.state(p) == "ok" for p in others), within=10.0)
        asker = KadStranger()
        try:
            key = os.urandom(20)
            asker.send(asker.kad_request("find_node", [os.urandom(20), key]), node.addr)
            # The answer is large for its request: it comes once we answer the node's ping.
            # (The socket blocks: in a thread, so that the nodes' loop runs meanwhile.)
            (contacts,) = await asyncio.to_thread(asker.answer_pings, 1.0, node.addr)
            ring = sorted(
                (s.dht.peer for s in servers if s.dht is not None),
                key=lambda p: p.id ^ int.from_bytes(key, "big"),
            )
            assert [(bytes(c[0]), c[1], c[2]) for c in contacts] == [
                (ids.to_bytes(p.id), *p.addr) for p in ring
            ]
            # ping and stun are small: answered at once, to anyone.
            asker.send(asker.kad_request("stun", []), node.addr)
            asker.send(asker.kad_request("ping", [os.urandom(20)]), node.addr)
            replies = await asyncio.to_thread(asker.replies, 1.0, 2)
            assert [LOCAL, asker.addr[1]] in replies
            assert ids.to_bytes(node.id) in replies
        finally:
            asker.close()


async def test_find_node_names_only_peers_that_answer_kademlia() -> None:
    """A --no-kad node and a node that left are in the ring's tables (or were) but never in a
    find_node answer: a kademlia client bootstraps without waiting 5 s for either."""
    async with udpdht_ring(3) as servers:
        first = servers[0].dht
        assert first is not None and first.kad is not None
        async with Node(LOCAL, 0, config=NodeConfig(kad=False, stabilize_period=0.25)) as plain:
            await plain.join(first.addr)
            await wait_until(lambda: plain.addr in [p.addr for p in first.leafset.peers()])
            leaver = Server(config=LOCAL_RING)
            await leaver.listen(0, LOCAL)
            assert await leaver.bootstrap([first.addr]) and leaver.dht is not None
            gone = leaver.dht.addr
            await wait_until(lambda: gone in [p.addr for p in first.leafset.peers()])
            async with kademlia() as client:
                key = client.node.id
                ok, named = await client.protocol.find_node(first.addr, key, key)
                assert ok and gone in [(c[1], c[2]) for c in named]
                assert plain.addr not in [(c[1], c[2]) for c in named]  # --no-kad: left out
                assert plain.addr in [p.addr for p in first.kad.candidates(key)]  # (considered)
                await leaver.astop()  # a native "leaving" to its neighbours
                ok, named = await client.protocol.find_node(first.addr, key, key)
                assert ok and {(c[1], c[2]) for c in named} == {
                    addr_of(s) for s in servers
                }  # the node that left is dropped at once
                found = await client.bootstrap([first.addr])  # (nothing silent to wait 5 s for)
                assert {(c.ip, c.port) for c in found} == {addr_of(s) for s in servers}


async def test_a_value_kademlia_cannot_hold_is_invisible_to_it() -> None:
    """A list written natively is no kademlia value: find_value answers as if absent."""
    async with udpdht_ring(3) as servers, kademlia(addr_of(servers[0])) as client:
        assert await servers[1].set_digest(digest("a-list"), [1, 2, 3])
        assert await client.get("a-list") is None
        node = servers[0].dht
        assert node is not None and node.kad is not None
        assert node.kad.status()["not_kademlia_values"] >= 1


async def test_no_kad_leaves_kademlia_datagrams_unanswered() -> None:
    async with Node(port=0, config=NodeConfig(kad=False)) as node:
        stranger = KadStranger()
        try:
            stranger.send(stranger.kad_request("ping", [os.urandom(20)]), node.addr)
            assert await asyncio.to_thread(stranger.datagrams, 0.5) == []
            assert node.status()["kad"] == {"enabled": False}
            assert node.endpoint.stats.dropped_malformed == 1
        finally:
            stranger.close()


# --- node processes: the same, then attacks, on both event loops --------------------------------

# Three node processes per event loop, shared by the tests below: 10-15 s each loop.
slow = pytest.mark.slow


@pytest.fixture(params=LOOPS, scope="module")
def ring(request: pytest.FixtureRequest) -> Iterator[list[NodeProcess]]:
    """Three `udpdht node` processes in one ring (memory stores), on the given event loop."""
    loop = str(request.param)
    with ExitStack() as stack:
        first = stack.enter_context(node_process(loop=loop))
        nodes = [first]
        for _ in range(2):
            nodes.append(
                stack.enter_context(node_process("--bootstrap", first.addr_text, loop=loop))
            )
        yield nodes


async def status(node: NodeProcess) -> dict[str, Any]:
    async with Client(node.addr) as client:
        return await client.status()


async def still_serves(nodes: list[NodeProcess], tag: str) -> None:
    """What a user checks after an attack: every process runs without a traceback, a native
    client puts and gets, and a real kademlia node bootstraps, sets and gets."""
    for node in nodes:
        assert node.proc.poll() is None, node.output()[-2000:]
    value = f"{tag}-{os.urandom(4).hex()}"
    async with Client(nodes[0].addr) as client:
        await client.put(f"native-{tag}", value)
    async with Client(nodes[1].addr) as client:
        assert await client.get(f"native-{tag}") == value
    async with kademlia(nodes[2].addr) as kad:
        assert await kad.set(f"kad-{tag}", value)
    async with kademlia(nodes[0].addr, forgetful=True) as kad:
        assert await kad.get(f"kad-{tag}") == value
    for node in nodes:
        assert "Traceback" not in node.output(), node.output()[-3000:]


@slow
async def test_node_processes_serve_kademlia_and_udpdht_reads_its_values(
    ring: list[NodeProcess],
) -> None:
    async with kademlia(ring[0].addr, forgetful=True) as kad:
        keys = {f"proc-{i}": f"v{i}" for i in range(30)}
        assert all(await asyncio.gather(*(kad.set(k, v) for k, v in keys.items())))
        assert await asyncio.gather(*(kad.get(k) for k in keys)) == list(keys.values())
    async with Client(ring[2].addr) as client:
        for key, value in keys.items():
            assert await client.get(digest(key)) == value
    st = await status(ring[0])
    assert st["kad"]["enabled"] and st["kad"]["requests"]["store"] >= 30


@pytest.mark.slow  # ten node processes started one after another: about 15 s
async def test_done_when_2_on_ten_node_processes() -> None:
    """Issue #14's "Done when" (2) on `udpdht node` processes: a kademlia node bootstrapped
    from one node of ten sets 100 keys and gets all 100 back; udpdht reads them through
    another node, and kademlia reads what udpdht wrote."""
    with ExitStack() as stack:
        first = stack.enter_context(node_process())
        nodes = [first] + [
            stack.enter_context(node_process("--bootstrap", first.addr_text)) for _ in range(9)
        ]
        await wait_until_all_joined(nodes)
        values = {f"ten-{i}": f"value {i}" if i % 2 else i for i in range(100)}
        async with kademlia(nodes[0].addr, forgetful=True) as kad:
            for batch in range(0, 100, 10):
                keys = list(values)[batch : batch + 10]
                assert all(await asyncio.gather(*(kad.set(k, values[k]) for k in keys)))
            assert await asyncio.gather(*(kad.get(k) for k in values)) == list(values.values())
            async with Client(nodes[6].addr) as client:
                for key, value in values.items():
                    assert await client.get(digest(key)) == value
                await client.put(digest("from-udpdht"), "native")
            assert await kad.get("from-udpdht") == "native"
        for node in nodes:
            assert "Traceback" not in node.output()


async def wait_until_all_joined(nodes: list[NodeProcess], within: float = 30.0) -> None:
    """Until every node knows a successor and a predecessor (each has joined the ring)."""
    deadline = time.monotonic() + within
    while True:
        sts = await asyncio.gather(*(status(n) for n in nodes))
        if all(st["successors"] and st["predecessors"] for st in sts):
            return
        assert time.monotonic() < deadline, "the nodes did not all join in time"
        await asyncio.sleep(0.2)


def hostile() -> list[bytes]:
    """Kademlia datagrams no node should act on (each a separate case)."""
    me, key = os.urandom(20), os.urandom(20)
    req = KadStranger.kad_request
    deep = b"\x91" * 60_000 + b"\xc0"  # [[[[...]]]], as deep as one datagram holds
    return [
        b"\x00",  # truncated: a header only
        b"\x00" + os.urandom(10),
        b"\x01" + os.urandom(20),  # a reply with no body
        b"\x00" + os.urandom(20) + b"\xdd\xff\xff\xff\xff",  # an array of 2**32-1 items
        b"\x00" + os.urandom(20) + b"\xdf\xff\xff\xff\xff",  # a map of 2**32-1 pairs
        b"\x00" + os.urandom(20) + b"\x92\xa4ping\x91" + deep,  # deep nesting in the args
        b"\x00" + os.urandom(20) + deep,
        b"\x00" + os.urandom(20) + b"\xc1",  # never used in msgpack
        b"\x00" + os.urandom(20) + msgpack.packb(msgpack.ExtType(5, b"x")),
        req("ping", [12345]),  # wrong types
        req("ping", ["x" * 20]),
        req("ping", [os.urandom(21)]),
        req("ping", []),
        req("ping", [me, me]),
        req("find_node", [me, "k" * 20]),
        req("find_node", [me]),
        req("find_value", [me, None]),
        req("find_value", [me, key, key]),
        req("store", [me, key, [1, 2]]),  # values kademlia cannot hold
        req("store", [me, key, None]),
        req("store", [me, key, {"a": 1}]),
        req("store", [me, b"short", "v"]),
        req("store", [me, key, "x" * 9000]),  # over the 8 KB a kademlia request may carry
        req(b"ping", [me]),  # a method that is not a string
        req("no_such_method", [me]),
        req("ping", {"id": me}),  # args not an array
        req(["ping"], [me]),
        # A reply to no call of ours, with contacts whose addresses are nonsense.
        b"\x01" + os.urandom(20) + msgpack.packb([[me, "127.0.0.1\x00", 80], [me, "::", 0]]),
    ]


@slow
async def test_hostile_kademlia_datagrams_are_dropped_and_the_node_serves_on(
    ring: list[NodeProcess],
) -> None:
    target = ring[1]
    before = (await status(target))["kad"]
    attacker = KadStranger()
    try:
        for data in hostile():
            attacker.send(data, target.addr)
        for _ in range(3):  # and replayed
            for data in hostile():
                attacker.send(data, target.addr)
        assert attacker.replies(1.0) == []  # not one of them is answered
    finally:
        attacker.close()
    after = (await status(target))["kad"]
    assert after["malformed"] > before["malformed"]
    assert after["values_refused"] > before["values_refused"]
    assert after["endpoint"]["dropped_malformed"] > before["endpoint"]["dropped_malformed"]
    assert after["endpoint"]["unknown_method"] > before["endpoint"]["unknown_method"]
    await still_serves(ring, "hostile")


@slow
async def test_a_spoofed_find_node_gets_the_victim_no_more_than_three_times_its_size(
    ring: list[NodeProcess],
) -> None:
    """The victim never answers (it did not ask): what reaches it is the node's pings and the
    answers no larger than three times their request, not the 7 KB value; once an address
    answers a ping, the answers come, and a replayed request is answered again a bounded
    number of times."""
    async with Client(ring[0].addr) as client:
        await client.put(digest("big"), "x" * 7000)  # a find_value answer of 7 KB
    victim = KadStranger()
    try:
        requests = [
            victim.kad_request("find_node", [os.urandom(20), os.urandom(20)]) for _ in range(20)
        ]
        requests += [victim.kad_request("find_value", [os.urandom(20), digest("big")])] * 5
        for data in requests:
            victim.send(data, ring[0].addr)
        got = victim.datagrams(2.5)  # (a probe gives up after 2 s)
        smallest = min(len(d) for d in requests)
        # Pings, and answers small enough (find_node in a ring of 3): never the 7 KB value.
        assert got and all(len(d) <= 3 * smallest for d in got)
        assert victim.received <= 3 * victim.sent
    finally:
        victim.close()
    # An address that answers the ping gets its answers (the victim's is not probed again for
    # 10 s: a client that answers does so at once).
    honest = KadStranger()
    try:
        data = honest.kad_request("find_value", [os.urandom(20), digest("big")], os.urandom(20))
        honest.send(data, ring[0].addr)
        assert {"value": "x" * 7000} in honest.answer_pings(3.0, ring[0].addr)
        for _ in range(20):  # the same request again: at most 8 more answers
            honest.send(data, ring[0].addr)
        assert 1 <= len(honest.replies(1.0)) <= 8
    finally:
        honest.close()
    st = (await status(ring[0]))["kad"]
    assert st["guard"]["probe_failures"] >= 1 and st["guard"]["dropped"] >= 1
    await still_serves(ring, "spoofed")


@slow
async def test_a_flood_of_find_value_from_one_source_does_not_starve_the_others(
    ring: list[NodeProcess],
) -> None:
    target = ring[2]
    flooder = KadStranger()
    sent = 0
    try:
        keys = [os.urandom(20) for _ in range(50)]
        # A burst first, then a steady stream while the others use the node.
        for _ in range(2000):
            flooder.send(
                flooder.kad_request("find_value", [os.urandom(20), random.choice(keys)]),
                target.addr,
            )
            sent += 1

        async def flood() -> None:
            nonlocal sent
            for _ in range(40):
                for _ in range(50):
                    flooder.send(
                        flooder.kad_request("find_value", [os.urandom(20), random.choice(keys)]),
                        target.addr,
                    )
                    sent += 1
                await asyncio.sleep(0.05)

        flooding = asyncio.ensure_future(flood())
        started = time.monotonic()
        await still_serves([target, *ring[:2]], "flood")
        assert time.monotonic() - started < 15
        await flooding
        # It never answered a ping: of the answers only those within 3x their request came.
        flooder.datagrams(1.0)
        assert flooder.received <= 3 * flooder.sent
    finally:
        flooder.close()
    for node in ring:
        assert node.proc.poll() is None


@slow
@pytest.mark.parametrize("loop", LOOPS)
def test_no_kad_option_on_a_node_process(loop: str) -> None:
    with node_process("--no-kad", loop=loop) as node:
        stranger = KadStranger()
        try:
            stranger.send(stranger.kad_request("ping", [os.urandom(20)]), node.addr)
            assert stranger.datagrams(0.5) == []
        finally:
            stranger.close()
        st = asyncio.run(status(node))
        assert st["kad"] == {"enabled": False}
        assert st["rpc"]["dropped_malformed"] >= 1
