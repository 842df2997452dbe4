"""The shell and the CLI on a network of the real `kademlia` package (``kad://H:P``).

Ten ``kademlia.network.Server``s run in the test's event loop on loopback; the udpdht side is
a shell Session in the same process, or the real ``udpdht`` command in a child process (the
loop keeps serving the network while the child runs). Also: the lookup and the routing table
alone (no sockets), and the words for what kademlia cannot do.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import random
import re
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kademlia.utils
import pytest
from helpers import ENV, closed_port
from kademlia.network import Server as KademliaServer
from prompt_toolkit.data_structures import Size
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput
from prompt_toolkit.output.vt100 import Vt100_Output

from shell.app import ShellCompleter, TerminalConsole, interact, prompt_text, toolbar_text
from shell.commands import KAD_COMMANDS, CommandError, arg_hint, help_text, parse
from shell.session import Session
from udpdht import Node
from udpdht.cli_node import _join_any
from udpdht.errors import DhtError, RpcTimeout
from udpdht.ids import digest
from udpdht.kad import codec
from udpdht.kad.client import KadClient
from udpdht.kad.crosscheck import WrongProtocol, speaks
from udpdht.kad.endpoint import KadEndpoint
from udpdht.kad.identity import claim
from udpdht.kad.lookup import Answer, Contact, RoutingTable, bucket_of, iterative_lookup
from udpdht.kad.target import KadAddr, parse_target
from udpdht.net import Address, format_addr
from udpdht.node import NodeConfig
from udpdht.rpc import RpcConfig
from udpdht.server import digest as server_digest

NETWORK_SIZE = 10


@dataclass
class KadNetwork:
    servers: list[KademliaServer]
    addrs: list[Address]

    @property
    def url(self) -> str:
        host, port = self.addrs[0]
        return f"kad://{host}:{port}"

    def holders(self, key: str) -> list[Any]:
        """The values the servers keep locally under ``key``."""
        dkey = kademlia.utils.digest(key)
        return [s.storage.get(dkey) for s in self.servers if s.storage.get(dkey) is not None]

    async def get_over_the_wire(self, server: int, key: str) -> Any:
        """kademlia's own get from one server, without its local copy (so it asks others)."""
        self.servers[server].storage.data.pop(kademlia.utils.digest(key), None)
        return await asyncio.wait_for(self.servers[server].get(key), 10)


@pytest.fixture
async def kad_network() -> AsyncIterator[KadNetwork]:
    for name in ("kademlia", "rpcudp"):  # their warnings about silent peers are expected here
        logging.getLogger(name).setLevel(logging.ERROR)
    servers: list[KademliaServer] = []
    try:
        for _ in range(NETWORK_SIZE):
            server = KademliaServer()
            servers.append(server)
            await server.listen(0, interface="127.0.0.1")
        addrs = [s.transport.get_extra_info("sockname")[:2] for s in servers]
        for server in servers[1:]:
            await asyncio.wait_for(server.bootstrap([addrs[0]]), 10)
        yield KadNetwork(servers, addrs)
    finally:
        for server in servers:
            server.stop()


async def _attached(net: KadNetwork, entry: int = 0) -> Session:
    session = Session()
    host, port = net.addrs[entry]
    await session.execute(parse(f"attach kad://{host}:{port}"))
    assert session.mode == "kad"
    return session


# --- keys, lookups, tables without sockets -----------------------------------------------------


@pytest.mark.parametrize("key", ["hello", "", "ünïcode", b"\x00bytes", "5"])
def test_digest_is_kademlias(key: str | bytes) -> None:
    assert digest(key) == kademlia.utils.digest(key) == server_digest(key)


def test_kad_addresses_parse() -> None:
    assert parse_target("kad://127.0.0.1:8468") == KadAddr("127.0.0.1", 8468)
    assert isinstance(parse_target("KAD://[::1]:1"), KadAddr)
    assert type(parse_target("127.0.0.1:7000")) is tuple
    with pytest.raises(ValueError, match="unknown scheme 'udp://'"):
        parse_target("udp://127.0.0.1:1")
    with pytest.raises(ValueError, match="after kad://"):
        parse_target("kad://nowhere")
    for typo in ("kad:/127.0.0.1:7200", "kad:127.0.0.1:7200", "kad:///127.0.0.1:7200"):
        with pytest.raises(ValueError) as err:
            parse_target(typo)
        assert str(err.value) == (
            f"bad address {typo!r}: write kad://HOST:PORT, with two slashes, for a kademlia "
            "network (HOST:PORT alone is a udpdht node)"
        )
    assert parse_target("kad:7200") == ("kad", 7200)  # a host named kad


def test_the_kad_shell_offers_only_the_options_that_work() -> None:
    """help, the greyed hint and a usage mistake: no --ttl, no --meta on a kademlia network
    (and both on a udpdht node)."""
    shown = help_text(None, "kad")
    assert "--ttl" not in shown and "--meta" not in shown
    assert "  put KEY VALUE [--json]  " in shown
    put_help = help_text("put", "kad")
    assert put_help.startswith("usage: put KEY VALUE [--json]\n") and "8,192 bytes" in put_help
    assert help_text("get", "kad").startswith("usage: get KEY\n")
    assert arg_hint("put k", "kad") == " VALUE [--json]"
    assert arg_hint("put k", "udpdht") == " VALUE [--json] [--ttl SECONDS]"
    assert arg_hint("get ", "kad") == "KEY" and arg_hint("get ", "udpdht") == "KEY [--meta]"
    with pytest.raises(CommandError) as err:
        parse("put k", "kad")
    assert str(err.value) == "'put' needs a KEY and a VALUE; usage: put KEY VALUE [--json]"
    with pytest.raises(CommandError, match=r"usage: put KEY VALUE \[--json\] \[--ttl SECONDS\]$"):
        parse("put k")


def _random_network(size: int, seed: int) -> dict[bytes, Contact]:
    rng = random.Random(seed)
    ids = {rng.randbytes(20) for _ in range(size)}
    return {nid: Contact(nid, ("127.0.0.1", 1000 + i)) for i, nid in enumerate(sorted(ids))}


async def test_lookup_finds_the_k_nearest_and_keeps_its_trace() -> None:
    """On 300 simulated nodes that each know their 20 nearest and 20 others, the lookup ends
    with the true 20 nearest; the first round asks α = 3; a silent node is marked so."""
    nodes = _random_network(300, seed=1)
    rng = random.Random(2)
    silent = set(rng.sample(sorted(nodes), 10))

    def nearest_to(nid: bytes) -> list[bytes]:
        return sorted(nodes, key=lambda o: codec.distance(o, nid))[1:21]

    tables = {nid: nearest_to(nid) + rng.sample(sorted(nodes), 20) for nid in nodes}
    target = rng.randbytes(20)

    async def ask(c: Contact) -> Answer:
        if c.id in silent:
            return Answer("no answer", error="silent")
        near = sorted(tables[c.id], key=lambda o: codec.distance(o, target))[:20]
        return Answer("contacts", contacts=tuple(nodes[o] for o in near), rtt=0.001)

    start = [nodes[n] for n in rng.sample(sorted(set(nodes) - silent), 3)]
    clock = iter(range(10_000))
    trace = await iterative_lookup(target, start, ask, clock=lambda: float(next(clock)))
    live = sorted(set(nodes) - silent, key=lambda o: codec.distance(o, target))
    assert [c.id for c in trace.nearest] == live[:20]
    assert [q.round for q in trace.queries].count(1) == 3
    assert trace.stopped == "the 20 nearest answered"
    assert all(q.answer.outcome == "no answer" for q in trace.queries if q.peer.id in silent)
    assert trace.rounds == max(q.round for q in trace.queries)


async def test_answers_that_name_one_address_under_many_ids_get_it_asked_once() -> None:
    # A stranger's answers name a victim's address under ever new ids (each nearer the target):
    # the lookup asks that address once, not once per claimed id.
    target = b"\x00" * 20
    victim: Address = ("127.0.0.9", 7000)
    liar = Contact(b"\xff" * 20, ("127.0.0.8", 7000))
    claims = iter(range(1, 200))
    asked: list[Address] = []

    async def ask(c: Contact) -> Answer:
        asked.append(c.addr)
        fake = tuple(Contact(next(claims).to_bytes(20, "big"), victim) for _ in range(20))
        return Answer("contacts", contacts=fake, rtt=0.001)

    clock = iter(range(10_000))
    await iterative_lookup(target, [liar], ask, clock=lambda: float(next(clock)))
    assert asked.count(victim) == 1, asked


async def test_find_value_stops_at_the_first_holder_or_goes_on() -> None:
    nodes = _random_network(50, seed=3)
    target = b"\x42" * 20
    holder = min(nodes, key=lambda o: codec.distance(o, target))
    everyone = tuple(nodes.values())

    async def ask(c: Contact) -> Answer:
        if c.id == holder:
            return Answer("value", value="v", contacts=everyone, rtt=0.001)
        return Answer("contacts", contacts=everyone, rtt=0.001)

    far = max(nodes, key=lambda o: codec.distance(o, target))
    first = await iterative_lookup(target, [nodes[far]], ask, method="find_value")
    assert first.found and first.value == "v" and first.holders == [nodes[holder]]
    assert first.stopped.endswith("had the value")
    full = await iterative_lookup(
        target, [nodes[far]], ask, method="find_value", stop_at_value=False
    )
    assert full.found and len(full.nearest) == 20 and full.nearest[0].id == holder


def test_routing_table_buckets_by_common_prefix() -> None:
    own = b"\x00" * 20
    table = RoutingTable(own, k=2)
    far = [Contact(bytes([0x80 + i]) + b"\x00" * 19, ("127.0.0.1", 2000 + i)) for i in range(3)]
    near = Contact(b"\x00" * 19 + b"\x01", ("127.0.0.1", 3000))
    for c in [*far, near]:
        table.seen(c)
    assert bucket_of(own, far[0].id) == 0 and bucket_of(own, near.id) == 159
    assert [i for i, _ in table.by_bucket()] == [159, 0]
    assert len(table) == 3  # bucket 0 holds k = 2: the least recently seen went
    assert far[0].id not in table and far[2].id in table
    table.failed(near.id)
    assert near.id not in table and len(table) == 2


# --- the shell on a kademlia network -----------------------------------------------------------


async def test_shell_puts_what_kademlia_gets_and_gets_what_it_sets(kad_network: KadNetwork) -> None:
    net = kad_network
    await net.servers[4].set("from-kademlia", "set by kademlia")
    session = await _attached(net)
    try:
        assert await session.execute(parse("get from-kademlia")) == "set by kademlia"
        out = await session.execute(parse("put from-udpdht 'put by udpdht'"))
        assert out == f"stored 'from-udpdht' on {NETWORK_SIZE} nodes nearest the key"
        assert await net.get_over_the_wire(7, "from-udpdht") == "put by udpdht"
        await session.execute(parse("put number --json 42"))
        assert await net.get_over_the_wire(2, "number") == 42
        with pytest.raises(CommandError, match="'absent': not found"):
            await session.execute(parse("get absent"))
    finally:
        await session.close()


async def test_shell_lookup_shows_who_was_asked_and_what_each_returned(
    kad_network: KadNetwork,
) -> None:
    net = kad_network
    await net.servers[1].set("traced", "here")
    session = await _attached(net, entry=3)
    try:
        text = await session.execute(parse("lookup traced"))
        lines = text.splitlines()
        assert lines[0].startswith("key      'traced' -> " + digest("traced").hex()[:16])
        assert lines[1].split() == ["round", "id", "address", "prefix", "rtt", "returned"]
        rows = [line for line in lines[2:] if line.startswith("  ") and line.split()[0].isdigit()]
        asked = {row.split()[2] for row in rows}
        assert asked == {f"127.0.0.1:{port}" for _, port in net.addrs}  # all ten: k = 20
        # kademlia's set stores on the nearest nodes its own crawl found: in a network this
        # young that may miss one, which then answers with contacts. Every node answered.
        assert all("no answer" not in row for row in rows)
        assert sum("the value" in row for row in rows) >= NETWORK_SIZE // 2
        assert any(line.startswith("value    here   (from ") for line in lines)
        assert f"stopped: the {NETWORK_SIZE} nearest answered" in lines[-2]
        session.format = "json"
        data = json.loads(await session.execute(parse("lookup traced")))
        assert data["key_id"] == digest("traced").hex() and data["value"] == "here"
        assert "value" in {q["outcome"] for q in data["queries"]} <= {"value", "contacts"}
        assert NETWORK_SIZE // 2 <= len(data["holders"]) <= NETWORK_SIZE
    finally:
        await session.close()


async def test_shell_findnode_routing_whoami_and_ping(kad_network: KadNetwork) -> None:
    net = kad_network
    session = await _attached(net)
    try:
        target = net.servers[5].node.id
        text = await session.execute(parse(f"findnode {target.hex()}"))
        assert text.splitlines()[0] == f"target   {target.hex()}"
        nearest = next(line for line in text.splitlines() if line.startswith("nearest"))
        assert nearest.split()[1].rstrip(",") == f"127.0.0.1:{net.addrs[5][1]}"
        routing = await session.execute(parse("routing"))
        assert routing.splitlines()[-1].startswith(f"{NETWORK_SIZE} contacts in ")
        host, port = net.addrs[6]
        probe = await session.execute(parse(f"routing {host}:{port}"))
        assert probe.splitlines()[0].startswith(f"table of {host}:{port} (id ")
        assert f"{NETWORK_SIZE - 1} contacts in " in probe.splitlines()[-1]  # all but itself
        assert session.kad is not None
        who = await session.execute(parse("whoami"))
        assert session.kad.id.hex() in who
        assert f"127.0.0.1:{session.kad.addr[1] if session.kad.addr else 0}" in who  # stun
        out = await session.execute(parse(f"ping {host}:{port}"))
        node_id = net.servers[6].node.id.hex()[:8]
        assert out.startswith(f"{host}:{port} (id {node_id}) answered kademlia's ping in ")
    finally:
        await session.close()


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("delete k", "cannot do 'delete': it has no delete request"),
        ("put k v --ttl 60", "cannot do 'put --ttl': its store takes no TTL"),
        ("status", "cannot do 'status'"),
        ("stats", "cannot do 'stats'"),
        ("ring", "cannot do 'ring': a kademlia network is no ring"),
        ("leafset", "cannot do 'leafset'"),
        ("fingers", "cannot do 'fingers'"),
        ("leave", "cannot do 'leave'"),
        ("join 127.0.0.1:9", "cannot do 'join'"),
        ("nodes", "cannot do 'nodes'"),
        ("watch 1 status", "cannot do 'status'"),
    ],
)
async def test_what_kademlia_cannot_do_says_so(
    kad_network: KadNetwork, line: str, words: str
) -> None:
    session = await _attached(kad_network)
    try:
        assert session.kad is not None
        sent = session.kad.endpoint.stats.sent
        with pytest.raises(CommandError) as err:
            await session.execute(parse(line))
        assert "the kademlia protocol " + words in str(err.value)
        assert "\n" not in str(err.value)
        assert session.kad.endpoint.stats.sent == sent  # nothing was asked
    finally:
        await session.close()


async def test_a_list_is_refused_before_sending(kad_network: KadNetwork) -> None:
    session = await _attached(kad_network)
    try:
        assert session.kad is not None
        sent = session.kad.endpoint.stats.sent
        with pytest.raises(CommandError, match=r"not sent: kademlia stores only .* not list"):
            await session.execute(parse("put k --json '[1, 2]'"))
        with pytest.raises(CommandError, match="not dict"):
            await session.execute(parse("""put k --json '{"a": 1}'"""))
        assert session.kad.endpoint.stats.sent == sent
        assert kad_network.holders("k") == []
    finally:
        await session.close()


async def test_kad_refusals_get_meta_size_and_formats(kad_network: KadNetwork) -> None:
    session = await _attached(kad_network)
    try:
        assert session.kad is not None
        sent = session.kad.endpoint.stats.sent
        with pytest.raises(CommandError) as err:
            await session.execute(parse("get k --meta", "kad"))
        assert str(err.value).startswith("the kademlia protocol cannot do 'get --meta': ")
        with pytest.raises(CommandError) as err:
            await session.execute(parse("put big " + "x" * 9000))
        assert str(err.value) == (
            "not sent: the value is 9,000 bytes; a kademlia request is at most 8,192 bytes "
            "(kademlia's rpcudp refuses larger ones), so a value of about 8 KB at most"
        )
        assert session.kad.endpoint.stats.sent == sent  # nothing was asked
        assert await session.execute(parse("format json")) == (
            "lookup and findnode now print as json"
        )
        assert json.loads(await session.execute(parse("lookup nosuch")))["value"] is None
        await session.execute(parse("format plain"))
        lines = (await session.execute(parse("lookup nosuch"))).splitlines()
        fields = dict(line.split("\t", 1) for line in lines)
        assert fields["holders"] == "-" and fields["value"] == "-"
        assert all(value for value in fields.values())  # every line has a value field
    finally:
        await session.close()


async def test_shell_ping_and_routing_to_a_closed_port_say_so_at_once(
    kad_network: KadNetwork,
) -> None:
    port = closed_port()
    session = await _attached(kad_network)
    try:  # (the words come only from the port's probe: not after the ping's 4 tries, 3.5 s)
        for line in (f"ping 127.0.0.1:{port}", f"routing 127.0.0.1:{port}"):
            with pytest.raises(CommandError) as err:
                await session.execute(parse(line, "kad"))
            assert str(err.value) == (
                f"nothing is listening at 127.0.0.1:{port} (its host says the port is closed); "
                "is a kademlia node running there?"
            )
    finally:
        await session.close()


async def test_help_completion_prompt_and_toolbar_follow_the_mode(
    kad_network: KadNetwork,
) -> None:
    session = Session()
    with pytest.raises(CommandError, match="'findnode' works only on a kademlia network"):
        await session.execute(parse("findnode " + "0" * 40))
    assert "on a kademlia network ('attach kad://HOST:PORT'): findnode, routing too" in (
        help_text()
    )
    session = await _attached(kad_network)
    try:
        shown = help_text(None, "kad")
        assert "not on a kademlia network: delete, status" in shown
        assert not any(line.split()[:1] == ["leave"] for line in shown.splitlines())
        completer = ShellCompleter(session)
        names = {w for w, _ in completer._candidates([])}
        assert names == set(KAD_COMMANDS)
        assert {w for w, _ in completer._candidates(["ping"])} == {
            f"127.0.0.1:{p}" for _, p in kad_network.addrs
        }
        assert "kad" in "".join(text for _, text, *_ in prompt_text(session))
        bar = "".join(text for _, text, *_ in toolbar_text(session, 120))
        assert f"kademlia via 127.0.0.1:{kad_network.addrs[0][1]}" in bar
        assert f"contacts {NETWORK_SIZE}" in bar
        async with Node("127.0.0.1", 0) as node:
            text = format_addr(node.addr)
            out = await session.execute(parse(f"attach {text}"))
            assert out.startswith(f"attached to {text}") and session.mode == "udpdht"
            assert (
                session.kad is None
                and "".join(t for _, t, *_ in prompt_text(session)) == "udpdht> "
            )
    finally:
        await session.close()


async def test_the_client_answers_what_kademlia_nodes_ask(kad_network: KadNetwork) -> None:
    """welcome_if_new makes kademlia nodes call any newcomer back: the client answers."""
    async with KadClient(kad_network.addrs[0]) as client:
        assert client.addr is not None
        me = ("127.0.0.1", client.addr[1])
        proto = kad_network.servers[3].protocol
        asker = kad_network.servers[3].node.id
        assert await proto.ping(me, asker) == (True, client.id)
        key = digest("pushed")
        assert await proto.store(me, asker, key, "value") == (True, True)
        assert await proto.find_value(me, asker, key) == (True, {"value": "value"})
        ok, contacts = await proto.find_node(me, asker, key)
        assert ok and 0 < len(contacts) <= codec.K
        assert all(c[1:] != list(kad_network.addrs[3]) for c in contacts)  # not the asker
        assert await proto.stun(me) == (True, list(kad_network.addrs[3]))
        other = KadEndpoint()
        await other.bind("127.0.0.1", 0)
        try:  # a list: no answer (as kademlia's own nodes give none to what they cannot serve)
            with pytest.raises(RpcTimeout):
                await other.call(me, "store", asker, key, [1], deadline=0.3)
        finally:
            other.close()
        assert client.endpoint.stats.refused == 1 and client.local[key] == "value"


# --- the real command, in a child process --------------------------------------------------------


async def _udpdht(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "udpdht",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**ENV, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate((stdin or "").encode()), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_on_a_kademlia_network(kad_network: KadNetwork) -> None:
    net = kad_network
    await net.servers[2].set("greeting", "hello from kademlia")
    code, out, err = await _udpdht("get", "--node", net.url, "greeting")
    assert (code, out, err) == (0, "hello from kademlia\n", "")
    code, out, _ = await _udpdht("put", "--node", net.url, "cli-key", "cli value")
    assert (code, out) == (0, f"stored 'cli-key' on {NETWORK_SIZE} nodes nearest the key\n")
    assert net.holders("cli-key") == ["cli value"] * NETWORK_SIZE
    code, out, _ = await _udpdht("lookup", "--json", "greeting", env={"UDPDHT_NODE": net.url})
    data = json.loads(out)
    assert code == 0 and data["value"] == "hello from kademlia" and data["rounds"] >= 1
    code, out, _ = await _udpdht("ping", "--node", net.url, "--json")
    assert code == 0 and json.loads(out)["id"] == net.servers[0].node.id.hex()
    for args, words in [
        (("status",), "cannot do 'status'"),
        (("delete", "greeting"), "cannot do 'delete'"),
        (("put", "k", "v", "--ttl", "5"), "cannot do 'put --ttl'"),
        (("put", "k", "[1]", "--json"), "not sent: kademlia stores only"),
        (
            ("put", "k", "x" * 20000),
            "not sent: the value is 20,000 bytes; a kademlia request is at most 8,192 bytes",
        ),
        (("get", "k", "--meta"), "cannot do 'get --meta'"),
        (("keys",), "cannot do 'keys'"),
    ]:
        code, out, err = await _udpdht(*args[:1], "--node", net.url, *args[1:])
        assert code == 2 and out == "", args
        assert err.startswith("udpdht: error: ") and words in err and err.count("\n") == 1


async def test_cli_names_a_silent_kademlia_node(silent_port: int) -> None:
    code, _, err = await _udpdht(
        "get", "--node", f"kad://127.0.0.1:{silent_port}", "k", "--tries", "1"
    )
    assert code == 1
    assert err.startswith(f"udpdht: error: 127.0.0.1:{silent_port} did not answer (1 try, ")
    assert err.endswith("; is a kademlia node running there?\n")


async def test_shell_attach_kad_in_a_child(kad_network: KadNetwork) -> None:
    """``udpdht shell --attach kad://H:P`` reading commands from a pipe."""
    net = kad_network
    await net.servers[8].set("shell-get", "from kademlia")
    script = "get shell-get\nput shell-put 'from the shell'\nlookup shell-put\ndelete shell-put\n"
    code, out, err = await _udpdht("shell", "--attach", net.url, stdin=script)
    assert code == 1, err  # the delete failed
    lines = out.splitlines()
    assert lines[0] == "from kademlia"
    assert lines[1] == f"stored 'shell-put' on {NETWORK_SIZE} nodes nearest the key"
    assert lines[2].startswith("key      'shell-put' -> ")
    assert any(line.startswith("value    from the shell") for line in lines)
    assert err.strip() == (
        "line 4: the kademlia protocol cannot do 'delete': it has no delete request; its nodes "
        "keep a value until they drop it (a week, in the kademlia package), so 'put' the key "
        "again to replace the value"
    )
    assert net.holders("shell-put") == ["from the shell"] * NETWORK_SIZE


async def test_typed_session_on_a_kademlia_network(kad_network: KadNetwork) -> None:
    """A person at the prompt: the prompt says kademlia; commands run."""
    session = await _attached(kad_network)
    buf = io.StringIO()
    screen = io.StringIO()
    lines = ["put typed 'by hand'", "get typed", "status", "lookup typed", "quit"]
    try:
        with create_pipe_input() as pipe:
            pipe.send_text("".join(line + "\r" for line in lines))
            code = await interact(
                session,
                TerminalConsole(PlainTextOutput(buf)),
                input=pipe,
                output=Vt100_Output(screen, lambda: Size(rows=40, columns=100)),
            )
    finally:
        await session.close()
    out = buf.getvalue().replace("\r\n", "\n")
    assert code == 0
    assert f"stored 'typed' on {NETWORK_SIZE} nodes nearest the key\n" in out
    assert "by hand\n" in out
    assert "the kademlia protocol cannot do 'status'" in out
    assert "key      'typed' -> " in out
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # (colours, moves)
    assert "udpdht kad> put typed" in shown  # (the bottom bar: test_help_completion_prompt...)
    assert kad_network.holders("typed") == ["by hand"] * NETWORK_SIZE


# --- the wrong protocol (kad/crosscheck.py) ------------------------------------------------------


async def test_a_command_in_the_wrong_protocol_says_which_to_use() -> None:
    """A kademlia node asked in udpdht's protocol, a --no-kad udpdht node asked in kademlia's:
    the CLI and the shell's attach say which to use, not "is a node running there?"."""
    logging.getLogger("rpcudp").setLevel(logging.ERROR)  # ("received datagram too small")
    kad = KademliaServer()
    await kad.listen(0, interface="127.0.0.1")
    try:
        kad_port = kad.transport.get_extra_info("sockname")[1]
        async with (
            Node("127.0.0.1", 0, config=NodeConfig(kad=False)) as plain,
            Node("127.0.0.1", 0) as both,
        ):
            port = plain.addr[1]
            assert await speaks(("127.0.0.1", kad_port)) == "kademlia"
            assert await speaks(plain.addr) == "udpdht"
            assert await speaks(both.addr) == "both"
            code, out, err = await _udpdht("get", "--node", f"127.0.0.1:{kad_port}", "k")
            assert (code, out) == (1, "")
            assert err == (
                f"udpdht: error: 127.0.0.1:{kad_port} answers kademlia's protocol, not "
                f"udpdht's: use --node kad://127.0.0.1:{kad_port}\n"
            )
            for tries in ((), ("--tries", "1")):  # (also when the silence ends it sooner)
                code, out, err = await _udpdht(
                    "get", "--node", f"kad://127.0.0.1:{port}", "k", *tries
                )
                assert (code, out) == (1, "")
                assert err == (
                    f"udpdht: error: 127.0.0.1:{port} is a udpdht node that does not answer "
                    f"kademlia (started with --no-kad?): use --node 127.0.0.1:{port}\n"
                )
            # `udpdht node --bootstrap` a kademlia node: not "is a node running there?" (a
            # new user's trial)
            async with Node("127.0.0.1", 0, rpc_config=RpcConfig(tries=2, initial_rto=0.1)) as n:
                with pytest.raises(DhtError) as info:
                    await _join_any(n, [("127.0.0.1", kad_port)])
            assert str(info.value) == (
                f"could not join the ring: 127.0.0.1:{kad_port} answers kademlia's protocol, "
                "not udpdht's: a udpdht node joins a ring of udpdht nodes; kademlia's nodes "
                "can bootstrap from a udpdht node instead (docs/kademlia-interop.md)"
            )
            session = Session()
            try:
                with pytest.raises(WrongProtocol, match=f"use 'attach kad://127.0.0.1:{kad_port}'"):
                    await session.attach(("127.0.0.1", kad_port), within=0.5)
                with pytest.raises(WrongProtocol, match=f"use 'attach 127.0.0.1:{port}'$"):
                    await session.attach(KadAddr("127.0.0.1", port), within=0.5)
            finally:
                await session.close()
    finally:
        kad.stop()


async def test_asking_a_kademlia_node_in_the_wrong_protocol_leaves_one_contact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check pings in kademlia's protocol, and a kademlia node adds whoever pings it. With
    # a new id each time, each mistake left one more dead contact, and lookups on that
    # network waited for each (a new user's trial: 406 ms instead of 9 after two).
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    logging.getLogger("rpcudp").setLevel(logging.ERROR)
    kad = KademliaServer()
    await kad.listen(0, interface="127.0.0.1")
    try:
        kad_port = kad.transport.get_extra_info("sockname")[1]
        for _ in range(3):
            assert await speaks(("127.0.0.1", kad_port)) == "kademlia"
        contacts = [n for b in kad.protocol.router.buckets for n in b.get_nodes()]
        mine = claim(tmp_path / "udpdht")
        mine.release()
        assert [(bytes(n.id), n.port) for n in contacts] == [(mine.id, mine.port)]
    finally:
        kad.stop()


# --- one identity per user (kad/identity.py) -----------------------------------------------------


def test_the_kad_identity_is_kept_and_not_fought_over(tmp_path: Path) -> None:
    first = claim(tmp_path)
    assert first.owner and first.port is None
    first.bound(40123)
    beside = claim(tmp_path)  # a command running at the same time: the id, not the port
    assert (beside.id, beside.port, beside.owner) == (first.id, None, False)
    beside.bound(40999)  # (not its to record)
    first.release()
    again = claim(tmp_path)
    assert (again.id, again.port, again.owner) == (first.id, 40123, True)
    again.release()
    (tmp_path / "kad_identity").write_text("not json")
    fresh = claim(tmp_path)  # a damaged record: a new identity, recorded
    assert fresh.owner and fresh.id != first.id and claim(tmp_path).id == fresh.id
    fresh.release()


async def test_cli_commands_leave_one_contact_not_one_each(
    kad_network: KadNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each kad:// command is the same id on the same port: the network keeps one contact for
    the user, however many commands ran (not one silent ghost per command)."""
    net = kad_network
    monkeypatch.setenv("XDG_STATE_HOME", ENV["XDG_STATE_HOME"])  # (the commands' state dir)
    for _ in range(3):
        code, _, err = await _udpdht("get", "--node", net.url, "nosuch")
        assert code == 1 and "not found" in err
    own = {s.node.id for s in net.servers}
    strangers = {
        (c.id, c.ip, c.port)
        for s in net.servers
        for bucket in s.protocol.router.buckets
        for c in bucket.get_nodes()
        if c.id not in own
    }
    assert len(strangers) == 1, strangers
    async with _attached_as_user(net) as session:  # the shell is the same user too
        assert session.kad is not None and session.kad.addr is not None
        ((node_id, _, port),) = strangers
        assert (session.kad.id, session.kad.addr[1]) == (node_id, port)
        assert "(yours, kept in " in await session.execute(parse("whoami"))


@asynccontextmanager
async def _attached_as_user(net: KadNetwork) -> AsyncIterator[Session]:
    session = Session(kad_identity=True)
    try:
        await session.execute(parse(net.url.join(["attach ", ""])))
        yield session
    finally:
        await session.close()


async def test_a_stranger_cannot_push_real_contacts_out_of_the_clients_table(
    kad_network: KadNetwork,
) -> None:
    # A review measured it: 20 pings from one address, each under a new id in one bucket,
    # emptied that bucket of the nodes that had answered us. Requests now only add a sender
    # where there is room, and each address once.
    client = KadClient(kad_network.addrs[0])
    await client.open()
    try:
        await client.find_node(client.id)
        before = {c.addr for c in client.table.contacts()}
        assert len(before) >= NETWORK_SIZE - 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.bind(("127.0.0.1", 0))
            assert client.addr is not None
            for i in range(40):  # ids sharing no prefix with ours, then ids next to ours
                claimed = bytes([client.id[0] ^ 0x80]) + i.to_bytes(19, "big")
                if i >= 20:
                    claimed = client.id[:19] + bytes([client.id[19] ^ (i - 19)])
                ping = codec.encode_request(os.urandom(20), "ping", [claimed])
                stranger.sendto(ping, ("127.0.0.1", client.addr[1]))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while client.endpoint.stats.answered < 40:  # every ping was answered
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
            strangers = [c for c in client.table.contacts() if c.addr == stranger.getsockname()]
        assert len(strangers) <= 1
        assert before <= {c.addr for c in client.table.contacts()}
    finally:
        await client.close()
