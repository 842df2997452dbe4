"""Where a node is reached: wildcard binds, --advertise, dual stack; one node per data dir.

Issue #12: a node bound to 0.0.0.0 advertised 0.0.0.0 (useless to its peers), and two nodes
could share a data dir.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import closed_port, has_ipv6_loopback, node_process, udpdht, wait_until

from udpdht import Client, ids
from udpdht.datadir import DataDir, DataDirError, remembered_address


def test_a_data_dir_takes_one_node_and_remembers_its_address(tmp_path: Path) -> None:
    first = DataDir.open(tmp_path)
    with pytest.raises(DataDirError, match=f"in use by another node \\(pid {os.getpid()}\\)"):
        DataDir.open(tmp_path)
    first.claim(("10.1.2.3", 7000))
    first.claim(("10.1.2.3", 7000))  # the same address again is fine
    with pytest.raises(DataDirError, match=r"belongs to the node at 10\.1\.2\.3:7000"):
        first.claim(("10.1.2.4", 7000))
    first.claim(("10.1.2.4", 7000), moved=True)
    assert remembered_address(tmp_path) == ("10.1.2.4", 7000)
    first.close()
    DataDir.open(tmp_path).close()  # free again once closed (a dead process frees it too)


def test_a_wildcard_node_without_an_address_to_advertise_is_refused() -> None:
    done = udpdht("node", "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2
    assert "add --advertise HOST[:PORT]" in done.stderr
    assert done.stderr.count("\n") == 1


async def test_wildcard_nodes_advertise_their_address_and_form_one_ring() -> None:
    # A seed on 0.0.0.0 named by --advertise; a dual-stack node on :: (IPv4 peers arrive as
    # ::ffff:a.b.c.d and are a.b.c.d to the node); one on 0.0.0.0 with only --bootstrap,
    # which advertises the address its host sends from towards the bootstrap.
    hosts = ["0.0.0.0", "::" if has_ipv6_loopback() else "0.0.0.0", "0.0.0.0"]
    with node_process("--host", hosts[0], "--advertise", "127.0.0.1") as seed:
        assert seed.addr[0] == "127.0.0.1"
        assert shows(seed.output, f"listening on 127.0.0.1:{seed.addr[1]} (bound to 0.0.0.0:")
        boot = ["--bootstrap", seed.addr_text]
        with (
            node_process("--host", hosts[1], "--advertise", "127.0.0.1", *boot) as dual,
            node_process("--host", hosts[2], *boot) as routed,
        ):
            await wait_until(lambda: "advertising 127.0.0.1:" in routed.output(), within=10)
            assert "the address this host sends from towards 127.0.0.1" in routed.output()
            nodes = [seed, dual, routed]
            want = {ids.to_hex(n.id) for n in nodes}

            async def ring() -> set[str]:
                seen: set[str] = set()
                for n in nodes:
                    async with Client(n.addr) as c:
                        st = await c.status()
                    assert st["addr"] == n.addr_text  # what peers see: not the wildcard
                    seen |= {st["id"], *(p["id"] for p in st["successors"])}
                return seen

            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while await ring() != want:
                assert loop.time() < deadline, "the three wildcard nodes did not form a ring"
                await asyncio.sleep(0.3)
            # Settled, as `udpdht cluster` waits before "ready": this test is about addresses.
            # (Once, under a loaded make test, a get right after the ring formed said "not
            # found" for the put before it: a consistency bug while a ring settles, open.)
            while not all(await asyncio.gather(*(settled(n.addr) for n in nodes))):
                assert loop.time() < deadline + 20, "the three wildcard nodes did not settle"
                await asyncio.sleep(0.3)
            async with Client(dual.addr) as c:
                await c.put("wild", "card")
            async with Client(routed.addr) as c:
                assert await c.get("wild") == "card"


async def settled(addr: tuple[str, int]) -> bool:
    async with Client(addr) as c:
        return bool((await c.status())["settled"])


def test_a_second_node_on_a_taken_data_dir_is_refused(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    with node_process("--data-dir", d) as first:
        done = udpdht("node", "--port", "0", "--data-dir", d)
        assert done.returncode == 2
        assert f"data dir {d} is in use by another node (pid {first.proc.pid})" in done.stderr
        assert first.proc.poll() is None  # the running node is untouched


def test_a_second_node_on_a_port_in_use_is_told_the_port_not_the_data_dir(
    tmp_path: Path,
) -> None:
    # Each port has its default data dir: "give each node its own --data-dir" sent a user on
    # to "address already in use" (a new user's trial).
    env = {"XDG_DATA_HOME": str(tmp_path)}
    with node_process(port=closed_port(), env=env) as first:
        port = first.addr[1]
        done = udpdht("node", "--port", str(port), env=env)
        assert done.returncode == 2
        assert done.stderr.endswith(
            f"udpdht: error: another node (pid {first.proc.pid}) runs on port {port} already: "
            f"its data dir {tmp_path / 'udpdht' / str(port)} is in use; give this one another "
            "--port\n"
        )
        assert first.proc.poll() is None


def test_the_data_dir_keeps_the_node_at_its_address(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    with node_process("--data-dir", d, "--advertise", "127.0.0.1") as first:
        port = first.addr[1]
    # Another address (a new ephemeral port) for the same data dir: refused, then allowed.
    done = udpdht("node", "--port", "0", "--advertise", "127.0.0.1", "--data-dir", d)
    assert done.returncode == 2
    assert f"belongs to the node at 127.0.0.1:{port}" in done.stderr
    assert "--new-address" in done.stderr
    with node_process("--data-dir", d, "--advertise", "127.0.0.1", "--new-address") as moved:
        assert moved.addr[1] != port
    assert remembered_address(d) == moved.addr
    # On a wildcard without --advertise, the remembered address is the one advertised.
    with node_process("--host", "0.0.0.0", "--data-dir", d, port=moved.addr[1]) as again:
        assert again.addr == moved.addr
        assert shows(again.output, "advertising 127.0.0.1:", "the address its data dir remembers")


def shows(
    output: Callable[[], str], *texts: str, within: float = 10.0, any_of: bool = False
) -> bool:
    """Whether a process's ``output()`` has every one of ``texts`` (``any_of``: one of them)
    within ``within`` s."""
    found = any if any_of else all
    deadline = time.monotonic() + within
    while not found(t in output() for t in texts):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_node_that_joined_names_its_successor_once() -> None:
    # A new-user trial of issue #11: "joined the ring: successor X" was followed, at the end of the
    # first maintenance round, by "successor is now X".
    with node_process() as seed, node_process("--bootstrap", seed.addr_text) as joiner:
        successor = f"{ids.short(seed.id)}@{seed.addr_text}"
        assert shows(joiner.output, f"joined the ring: successor {successor}")
        assert shows(joiner.output, "predecessor is now")  # that round's end: it logs both
        assert "successor is now" not in joiner.output()


def test_a_wildcard_node_says_so_when_its_host_sends_from_another_address() -> None:
    # Bound to 0.0.0.0 and advertising 127.0.0.2, it sends to 127.0.0.1 from 127.0.0.1: its
    # peers would drop all of it (the id is SHA-1 of 127.0.0.2:port). It warns at start.
    with node_process() as seed:
        args = ["--host", "0.0.0.0", "--advertise", "127.0.0.2", "--bootstrap", seed.addr_text]
        with node_process(*args) as node:
            assert shows(node.output, "this host sends to 127.0.0.1 from 127.0.0.1, not from")
            assert "--host 127.0.0.2" in node.output()


async def test_a_wildcard_node_with_no_route_to_its_bootstrap_says_that(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No route: the kernel names no source address (route_from falls back to loopback). The
    # error says so, not "add --advertise". (Nothing is sent: the check is before the node.)
    import argparse

    from udpdht import cli_node
    from udpdht.cli import UsageError

    monkeypatch.setattr(cli_node, "route_from", lambda v6, target=None: "127.0.0.1")
    args = argparse.Namespace(
        advertise=None, host="0.0.0.0", port=7000, bootstrap=[("10.255.255.1", 7000)]
    )
    with pytest.raises(UsageError, match=r"no route to the bootstrap 10\.255\.255\.1"):
        await cli_node._advertised(args, None)


async def test_a_wildcard_node_that_moved_advertises_its_new_address_with_new_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's trial: a compose peer recreated on another host address, with its data
    # volume and --new-address, advertised the address its data dir remembered; its ring never
    # listed it. --new-address says the node moved: the address is the one it sends from.
    import argparse

    from udpdht import cli_node

    data = DataDir.open(tmp_path)
    data.claim(("10.231.0.3", 7009))
    data.close()
    monkeypatch.setattr(cli_node, "route_from", lambda v6, target=None: "10.231.0.4")

    def args(new_address: bool) -> argparse.Namespace:
        return argparse.Namespace(
            advertise=None,
            host="0.0.0.0",
            port=7009,
            bootstrap=[("10.231.0.1", 7000)],
            new_address=new_address,
        )

    addr, why = await cli_node._advertised(args(True), tmp_path)
    assert addr == ("10.231.0.4", 0) and why is not None and "sends from" in why
    addr, why = await cli_node._advertised(args(False), tmp_path)  # (then warned: sent from .4)
    assert addr == ("10.231.0.3", 7009) and why == "the address its data dir remembers"


def test_a_restarted_node_that_rejoined_ignores_a_dead_bootstrap(
    tmp_path: Path, silent_port: int
) -> None:
    # It remembers its ring: --bootstrap is where to go when none of those answers, not a
    # join that must succeed (a dead bootstrap made it exit after rejoining).
    d = str(tmp_path / "data")
    with node_process() as seed:
        with node_process("--data-dir", d, "--bootstrap", seed.addr_text) as first:
            port = first.addr[1]
            assert shows(first.output, "joined the ring")  # (its signal handlers are set)
            first.signal(signal.SIGTERM)
            assert first.wait()[0] == 0
        boot = f"127.0.0.1:{silent_port}"
        with node_process("--data-dir", d, "--bootstrap", boot, port=port) as again:
            # (It says the address was heard, and when it would be tried.)
            assert shows(
                again.output, f"rejoins through it, or through {boot} if it does not answer"
            )
            # Back in the ring: by its own rejoin, or taken back by the seed first, whose call
            # to the node that left, still being resent, reached the restarted one at its
            # address (under load: 1 run in 40, the seed's stabilize adopted it).
            back = "takes this node for its successor: back in a ring"
            assert shows(again.output, "joined the ring", back, any_of=True)
            assert again.proc.poll() is None
