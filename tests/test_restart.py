"""A node restarted on its data dir rejoins its ring by itself (issue #12).

The data dir remembers the peers the node knew; started again without --bootstrap, after a
crash or after SIGTERM (a restart, an upgrade: the node leaves gracefully but keeps them), it
rejoins through them and takes writes for its range again.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from helpers import NodeProcess, data_dir, node_process, statuses

from udpdht import Client, ids


async def ring_of(nodes: list[NodeProcess], within: float = 20.0) -> None:
    """Wait until each node's successor is the next of these nodes by id."""
    order = sorted(nodes, key=lambda n: n.id)
    want = {
        ids.to_hex(n.id): ids.to_hex(order[(i + 1) % len(order)].id) for i, n in enumerate(order)
    }
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        sts = await statuses(nodes)
        got = {st["id"]: (st["successors"] or [{"id": None}])[0]["id"] for st in sts}
        if got == want:
            return
        assert loop.time() < deadline, f"no ring of {len(nodes)} within {within} s: {got}"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_a_restarted_node_rejoins_through_the_peers_it_remembers(
    tmp_path: Path, how: str
) -> None:
    dirs = [data_dir(tmp_path, f"n{i}") for i in range(3)]
    with node_process("--data-dir", dirs[0]) as a:
        boot = ["--bootstrap", a.addr_text]
        with node_process("--data-dir", dirs[2], *boot) as c:
            with node_process("--data-dir", dirs[1], *boot) as b:
                await ring_of([a, b, c])
                async with Client(a.addr) as client:
                    for i in range(30):
                        await client.put(f"k{i}", i)
                # The peers file is written every 30 s and at exit: a crash loses what came
                # after the last write, so this test waits for the first save.
                if how == "SIGKILL":
                    await wait_saved(Path(dirs[1]) / "peers.json")
                    b.proc.kill()
                else:
                    b.signal(signal.SIGTERM)
                    assert b.wait()[0] == 0
            with node_process("--data-dir", dirs[1], port=b.addr[1]) as again:  # no --bootstrap
                assert again.addr == b.addr
                assert "remembers 2 peers of its ring; rejoins through them" in again.output()
                await ring_of([a, again, c])
                async with Client(c.addr) as client:
                    for i in range(30):
                        assert await client.get(f"k{i}") == i
                    await client.put("after", "restart")
                async with Client(again.addr) as client:
                    assert await client.get("after") == "restart"


async def wait_saved(path: Path, within: float = 40.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await asyncio.to_thread(path.exists):
        assert loop.time() < deadline, f"{path} was not written within {within} s"
        await asyncio.sleep(0.1)
