"""The store on real sockets: `udpdht node` processes with data dirs, killed and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from helpers import (
    NodeProcess,
    node_process,
    primary_of,
    udpdht,
    wait_processes_ideal,
    wait_until,
)

from udpdht import Client, KeyNotFound, ValueTooLarge, ids
from udpdht import node as node_module
from udpdht.errors import Busy
from udpdht.storage import DiskStore

KEYS = [f"key-{i}" for i in range(500)]


async def put_keys(node: NodeProcess, keys: list[str]) -> None:
    async with Client(node.addr) as client:
        sem = asyncio.Semaphore(20)

        async def one(key: str) -> None:
            async with sem:
                await client.put(key, {"name": key, "n": len(key)})

        await asyncio.gather(*(one(k) for k in keys))


async def missing_keys(node: NodeProcess, keys: list[str]) -> list[str]:
    async with Client(node.addr) as client:
        sem = asyncio.Semaphore(20)

        async def one(key: str) -> str | None:
            async with sem:
                try:
                    value = await client.get(key)
                except KeyNotFound:
                    return key
                assert value == {"name": key, "n": len(key)}
                return None

        found = await asyncio.gather(*(one(k) for k in keys))
    return [k for k in found if k is not None]


async def stored(node: NodeProcess) -> int:
    async with Client(node.addr) as client:
        st = await client.status()
    count: int = st["store"]["primary"] + st["store"]["replica"]
    return count


@pytest.mark.slow
async def test_eight_nodes_survive_kill_restart_and_three_leaves(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:

        def start(name: str, *extra: str, port: int = 0) -> NodeProcess:
            data = tmp_path / name
            return stack.enter_context(node_process("--data-dir", str(data), *extra, port=port))

        first = start("n0")
        nodes = [first] + [start(f"n{i}", "--bootstrap", first.addr_text) for i in range(1, 8)]
        await wait_processes_ideal(nodes, within=30)
        await put_keys(nodes[1], KEYS)
        assert await missing_keys(nodes[2], KEYS) == []

        # SIGKILL one node and restart it on the same data dir and port: its store is back.
        victim = nodes[5]
        before = await stored(victim)
        assert before > 0
        victim.signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        port = victim.addr[1]
        reborn = start("n5", "--bootstrap", first.addr_text, port=port)
        assert await stored(reborn) >= before
        nodes[5] = reborn

        # SIGTERM three nodes one after another: each hands its keys over as it leaves.
        for leaver in (nodes[2], nodes[4], nodes[6]):
            leaver.signal(signal.SIGTERM)
            code, output = leaver.wait()
            assert code == 0 and "Traceback" not in output
        survivors = [nodes[i] for i in (0, 1, 3, 5, 7)]
        assert await missing_keys(survivors[0], KEYS) == []
        assert await missing_keys(survivors[-1], KEYS[::7]) == []


async def test_value_size_limits_on_real_sockets() -> None:
    with node_process() as a:
        async with Client(a.addr) as client:
            big = "x" * 59_995  # str 32 header: 5 bytes; 60,000 encoded in all
            await client.put("big", big)
            assert await client.get("big") == big
            with pytest.raises(ValueTooLarge):
                await client.put("huge", "x" * 70_000)
            with pytest.raises(KeyNotFound):
                await client.get("huge")


def test_put_get_delete_from_the_command_line() -> None:
    with node_process() as a:
        node = a.addr_text
        assert udpdht("put", "--node", node, "greeting", "hello world").returncode == 0
        got = udpdht("get", "--node", node, "greeting")
        assert got.returncode == 0 and got.stdout == "hello world\n"
        assert udpdht("put", "--node", node, "cfg", '{"a": [1, 2]}', "--json").returncode == 0
        assert udpdht("get", "--node", node, "cfg").stdout.strip() == '(map) {"a": [1, 2]}'
        bad = udpdht("put", "--node", node, "cfg", "{not json", "--json")
        assert bad.returncode == 2 and "not valid JSON" in bad.stderr
        deleted = udpdht("delete", "--node", node, "greeting")
        assert deleted.returncode == 0 and "deleted" in deleted.stdout
        gone = udpdht("get", "--node", node, "greeting")
        assert gone.returncode == 1 and "not found" in gone.stderr
        assert "Traceback" not in gone.stderr


async def test_store_calls_while_the_store_opens_are_busy_not_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Opening a large store takes seconds (off the loop, the socket already bound): a get that
    # comes meanwhile was answered "unknown method", and that answer was cached for its retries.
    opened = threading.Event()

    def slow_open(directory: Path) -> DiskStore:
        opened.wait(10)
        return DiskStore(directory)

    monkeypatch.setattr(node_module, "DiskStore", slow_open)
    node = node_module.Node("127.0.0.1", 0, data_dir=tmp_path)
    starting = asyncio.create_task(node.start())
    try:
        await wait_until(lambda: node._endpoint is not None, within=5)
        async with Client(node.addr) as client:
            with pytest.raises(Busy, match="opening its store"):
                await client.get("k")
            opened.set()
            await starting
            with pytest.raises(KeyNotFound):
                await client.get("k")
    finally:
        opened.set()
        await starting
        await node.stop()


def test_a_delete_a_replica_did_not_take_says_so() -> None:
    # A delete said "deleted" with no word of a replica that did not answer, where a put says
    # "on 2 of 3 nodes only". Here a replica is frozen (SIGSTOP) while the key is deleted
    # through its primary: the deletion holds (the primary answers "not found" after it), and
    # the warning says the last copy comes by repair.
    with (
        node_process() as a,
        node_process("--bootstrap", a.addr_text) as b,
        node_process("--bootstrap", a.addr_text) as c,
    ):
        nodes = [a, b, c]
        asyncio.run(wait_processes_ideal(nodes, within=15.0))
        assert udpdht("put", "--node", a.addr_text, "k", "v").returncode == 0
        key_id = ids.hash_key(b"k")
        primary = min(nodes, key=lambda n: ids.distance(key_id, n.id))
        frozen = next(n for n in nodes if n is not primary)
        frozen.signal(signal.SIGSTOP)
        try:
            done = udpdht("delete", "--node", primary.addr_text, "k")
        finally:
            frozen.signal(signal.SIGCONT)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "deleted 'k'\n"
        assert done.stderr == (
            f"udpdht: warning: 'k' is deleted on 2 of 3 nodes only: {frozen.addr_text} did not "
            "take it (no answer, or the ring is changing): repair deletes it there once the "
            "ring has settled\n"
        )
        assert udpdht("get", "--node", primary.addr_text, "k").returncode == 1


def test_puts_a_full_node_refused_say_so_and_ring_names_it() -> None:
    # A new user's report: a node with --max-store-bytes 1K in a ring, 200-byte puts. The ones
    # it refused as a replica said "stored" with a copy missing, and `ring` said the copies
    # still to make would settle within seconds, forever.
    with (
        node_process() as a,
        node_process("--bootstrap", a.addr_text) as b,
        node_process("--bootstrap", a.addr_text, "--max-store-bytes", "1K") as full,
    ):
        asyncio.run(wait_processes_ideal([a, b, full], within=15.0))
        # One record fits. The keys are picked by their primary: the ids are random, and a
        # node's share of the ring can be nine tenths of it (the test once put 60 keys in a
        # row, and in some runs full was the primary of all but one).
        # The first fills it; one is its own (refused outright, if any of a thousand keys
        # is); two are the others' (it refuses them as a replica: stored, with a warning).
        node_ids = [a.id, b.id, full.id]
        names = [f"q{i}" for i in range(1, 1000)]
        ours = [k for k in names if primary_of(k, node_ids) == full.id][:1]
        theirs = [k for k in names if primary_of(k, node_ids) != full.id][:2]
        done: dict[str, subprocess.CompletedProcess[str]] = {}
        for key in ["q0", *ours, *theirs]:
            done[key] = udpdht("put", "--node", a.addr_text, key, "x" * 200)
        refused = [k for k, d in done.items() if d.returncode != 0]
        assert refused == ours
        assert all(f"store full at {full.addr_text}" in done[k].stderr for k in refused)
        assert not any("store_write" in done[k].stderr for k in refused)  # (a user's trial)
        # (that it has no room for this value, not only how much it holds: a user's trial)
        assert all("bytes more, and " in done[k].stderr for k in refused)
        stored = [k for k, d in done.items() if d.returncode == 0]

        async def held_by_full() -> set[str]:
            async with Client(full.addr) as client:
                entries, _ = await client.keys()
            return {e["key"].decode() for e in entries}

        # (A ring of 3 with 3 copies of each key: every stored key belongs on the full node.)
        lacking = [k for k in stored if k not in asyncio.run(held_by_full())]
        assert lacking == theirs
        for key in stored:
            assert done[key].stdout == f"stored '{key}'\n"
            warning = done[key].stderr
            if key in lacking:
                assert "on 2 of 3 nodes only" in warning and f"{full.addr_text} is full" in warning
            else:
                assert warning == ""
        ring = udpdht("ring", "--node", a.addr_text)
        assert ring.returncode == 0
        assert f"{full.addr_text} is full (its quota or its disk)" in ring.stdout
        assert "settle within seconds" not in ring.stdout
        listed = json.loads(udpdht("ring", "--node", a.addr_text, "--json").stdout)["nodes"]
        assert [n["addr"] for n in listed if n["full"]] == [full.addr_text]
        status = udpdht("status", "--node", full.addr_text, "--json")
        assert json.loads(status.stdout)["store"]["full"] is True
        assert any("store full" in line for line in full.lines)  # its log says why


def test_a_node_whose_data_dir_was_deleted_hands_its_keys_over_and_leaves(tmp_path: Path) -> None:
    # A helper's trial: a node whose data dir was removed under it acknowledged every write
    # (SQLite writes on to the file it opened), and lost them all when it stopped. Then,
    # refusing them, it refused every write of its range as the primary until someone
    # restarted it (an operator's trial). It hands its keys over and leaves now, status 2.
    data = tmp_path / "gone"
    one = ("--replicas", "1")  # (its keys on it alone: read later only if it handed them over)
    with (
        node_process(*one) as a,
        node_process(*one, "--bootstrap", a.addr_text) as b,
        node_process(*one, "--bootstrap", a.addr_text, "--data-dir", str(data)) as gone,
    ):
        asyncio.run(wait_processes_ideal([a, b, gone], within=15.0))
        # Three keys of its own (picked by their primary: the ids are random), three not.
        node_ids = [a.id, b.id, gone.id]
        names = [f"k{i}" for i in range(1000)]
        keys = [k for k in names if primary_of(k, node_ids) == gone.id][:3]
        keys += [k for k in names if primary_of(k, node_ids) != gone.id][:3]
        for key in keys:
            assert udpdht("put", "--node", a.addr_text, key, "v").stderr == ""
        shutil.rmtree(data)
        # (Its store rounds look every 2.5-7.5 s.)
        assert gone.proc.wait(timeout=30) == 2
        assert "hands what it holds to its successors and leaves the ring" in gone.output()
        handed = re.findall(r"handed (\d+) records? to", gone.output())
        # One hand-off, of what it held: its 3 keys, or 2 when, the machine loaded, a put's
        # first target answered too late and the next target took the key (a CI run did).
        # Whatever it held, every key is read below.
        assert len(handed) == 1 and int(handed[0]) >= 1, gone.output()
        assert "Traceback" not in gone.output()
        assert "cannot write" not in gone.output()  # (no news at the stop: said already)
        for key in keys:  # nothing lost, its range served by the others
            got = udpdht("get", "--node", b.addr_text, key)
            assert (got.returncode, got.stdout) == (0, "v\n"), got.stderr
        asyncio.run(wait_processes_ideal([a, b], within=15.0))
        for i in range(6):  # every write whole: no range is left to a node that refuses
            done = udpdht("put", "--node", a.addr_text, f"new{i}", "v")
            assert (done.returncode, done.stderr) == (0, ""), done.stderr


async def test_a_value_damaged_on_a_primarys_disk_is_not_served(tmp_path: Path) -> None:
    # A helper's trial: bytes overwritten in a node's store file were served as the value
    # once that node was the key's primary, through every node, with exit 0; repair never
    # mended them. Here the primary's copy is damaged under the running node (another
    # connection writes the file, as the disk would): every get still gives the value, and
    # the node says what it found.
    with contextlib.ExitStack() as stack:
        dirs = [tmp_path / str(i) for i in range(3)]
        a = stack.enter_context(node_process("--data-dir", str(dirs[0])))
        b = stack.enter_context(
            node_process("--data-dir", str(dirs[1]), "--bootstrap", a.addr_text)
        )
        c = stack.enter_context(
            node_process("--data-dir", str(dirs[2]), "--bootstrap", a.addr_text)
        )
        nodes = [a, b, c]
        await wait_processes_ideal(nodes, within=30)
        # The key's primary: the first node at or after its id on the ring. (A key picked for
        # one given node was not found among a thousand when that node's share of the ring
        # was under a thousandth, in about 1 run in 500.)
        key = "precious"
        at = [n.id for n in nodes].index(primary_of(key, [n.id for n in nodes]))
        primary, others = nodes[at], nodes[:at] + nodes[at + 1 :]
        async with Client(primary.addr) as client:
            await client.put(key, "the value written")
            db = sqlite3.connect(dirs[at] / "store.sqlite3", timeout=10)
            try:
                with db:
                    db.execute(
                        "UPDATE blobs SET value = ? WHERE vid = "
                        "(SELECT vid FROM ring WHERE key = ?)",
                        (b"\xb1the value wrItten", key.encode()),
                    )
            finally:
                db.close()
        for node in nodes:
            async with Client(node.addr) as client:
                assert await client.get(key) == "the value written"
        await wait_until(lambda: "damaged on the disk" in primary.output(), within=10)
        assert not any("damaged on the disk" in n.output() for n in others)
