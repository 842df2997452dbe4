"""Admin requests: a cookie, an HMAC per request, replays refused; the daemon obeys them."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import stat
import time
from pathlib import Path

import pytest
from helpers import node_process, spawn, udpdht

from udpdht import Client, KeyNotFound, Node, Unauthorized, ids
from udpdht.admin import COOKIE_FILE, Verifier, local_cookie_path, read_cookie, sign
from udpdht.net import route_from

ME, OTHER = b"\x01" * 20, b"\x02" * 20  # the ids of the node verifying, and of another


def test_verifier_accepts_genuine_and_refuses_the_rest() -> None:
    cookie = os.urandom(32)
    verifier = Verifier(cookie, ME)
    now = 1_000_000.0
    args = sign(cookie, "admin_join", {"addr": ["127.0.0.1", 7000]}, now, ME)
    assert verifier.verify("admin_join", args, now + 1) == {"addr": ["127.0.0.1", 7000]}
    with pytest.raises(Unauthorized, match="replayed"):
        verifier.verify("admin_join", args, now + 2)
    with pytest.raises(Unauthorized, match="wrong cookie"):
        verifier.verify("admin_join", sign(os.urandom(32), "admin_join", {}, now, ME), now)
    with pytest.raises(Unauthorized, match="wrong cookie"):  # signed for another method
        verifier.verify("admin_shutdown", sign(cookie, "admin_leave", {}, now, ME), now)
    with pytest.raises(Unauthorized, match="another node"):  # for another node, same cookie
        verifier.verify("admin_leave", sign(cookie, "admin_leave", {}, now, OTHER), now)
    tampered = {**sign(cookie, "admin_join", {"addr": ["a", 1]}, now, ME), "addr": ["b", 2]}
    with pytest.raises(Unauthorized, match="wrong cookie"):
        verifier.verify("admin_join", tampered, now)
    with pytest.raises(Unauthorized, match="clock"):
        verifier.verify("admin_leave", sign(cookie, "admin_leave", {}, now - 600, ME), now)
    with pytest.raises(Unauthorized, match="credentials"):
        verifier.verify("admin_leave", {}, now)


async def test_admin_over_udp_good_wrong_missing_and_replayed_cookie() -> None:
    a, b = Node(port=0), Node(port=0)
    await a.start()
    await b.start()
    try:
        assert b.cookie is not None
        async with Client(b.addr, cookie=os.urandom(32)) as wrong:
            with pytest.raises(Unauthorized, match="wrong cookie"):
                await wrong.join(a.addr)
        async with Client(b.addr) as anonymous:
            with pytest.raises(Unauthorized, match="cookie"):
                await anonymous.join(a.addr)  # refused before sending
            with pytest.raises(Unauthorized, match="credentials"):
                await anonymous.call("admin_leave", {})  # and by the node if sent anyway
            with pytest.raises(KeyNotFound):  # reads stay public: an answer, not Unauthorized
                await anonymous.get("public")
        async with Client(b.addr, cookie=b.cookie) as admin:
            succ = await admin.join(a.addr)
            assert succ is not None and succ.id == a.id
            # A captured admin request, sent again, is refused.
            signed = sign(b.cookie, "admin_leave", {}, time.time(), ids.to_bytes(b.id))
            await admin.call("admin_leave", signed)
            with pytest.raises(Unauthorized, match="replayed"):
                await admin.call("admin_leave", signed)
        await asyncio.wait_for(b.finished.wait(), 10)  # the first one made it leave
        assert a.leafset.successors == []  # and it told a on its way out
    finally:
        await a.stop()
        await b.stop()


async def test_a_client_takes_the_cookie_as_its_file_gives_it_and_addresses_as_text(
    tmp_path: Path,
) -> None:
    """A new user's trial: the cookie file's contents (64 hex digits and a newline) were taken
    for the secret, and the node answered "the signature does not match"; ``join("H:P")`` and
    ``ping("H:P")`` raised "too many values to unpack", though the README says they take it."""
    async with Node(port=0) as a, Node(port=0, data_dir=tmp_path) as b:
        host, port = a.addr
        text = f"{host}:{port}"
        cookie_file = tmp_path / COOKIE_FILE
        for cookie in (cookie_file.read_bytes(), str(cookie_file), tmp_path):
            async with Client(f"{b.addr[0]}:{b.addr[1]}", cookie=cookie) as c:
                node_id, _ = await c.ping(text)
                assert node_id == a.id
        async with Client(b.addr, cookie=cookie_file.read_bytes()) as c:
            succ = await c.join(text)
            assert succ is not None and succ.id == a.id
    with pytest.raises(ValueError, match="64 hex digits"):
        Client(("127.0.0.1", 1), cookie=b"not a cookie")
    other = tmp_path / "other"
    other.write_text("hello\n")
    with pytest.raises(ValueError, match="not a udpdht cookie file"):
        Client(("127.0.0.1", 1), cookie=str(other))


async def test_a_second_leave_does_not_start_a_second_hand_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A maintainer's review: each admin leave started a leave 50 ms later, and the second
    # cancelled the first's tasks in the middle of its hand-off.
    caplog.set_level(logging.INFO)
    async with Node(port=0) as a, Node(port=0) as b:
        await b.join(a.addr)
        await b.put("kept", 1)
        async with Client(b.addr, cookie=b.cookie) as admin:
            await admin.leave()
            await admin.leave()
        await asyncio.wait_for(b.finished.wait(), 10)
        assert caplog.text.count("leaving the ring at an admin's request") == 1
        assert await a.get("kept") == 1  # handed over


def test_a_local_nodes_cookie_is_looked_for_where_this_environment_puts_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Docker image sets UDPDHT_DATA_DIR (and UDPDHT_PORT); a node with the data dir set
    # and the default port has no UDPDHT_PORT (a review: its cookie was not looked for).
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("UDPDHT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("UDPDHT_PORT", raising=False)
    assert local_cookie_path("127.0.0.1", 7000) == tmp_path / "data" / COOKIE_FILE
    default = tmp_path / "xdg" / "udpdht" / "7001" / COOKIE_FILE
    assert local_cookie_path("localhost", 7001) == default  # (another node of the host)
    monkeypatch.setenv("UDPDHT_PORT", "7001")
    assert local_cookie_path("::1", 7001) == tmp_path / "data" / COOKIE_FILE
    assert local_cookie_path("192.0.2.1", 7001) is None  # (another host's node)
    # A node bound to this host's own address, not the loopback (an operator's trial: taken
    # for another host's, "pass --cookie"). Asked by binding it: nothing is sent.
    own = route_from(False)  # (this host's address towards the outside, or the loopback's)
    assert local_cookie_path(own, 7001) == tmp_path / "data" / COOKIE_FILE
    assert local_cookie_path("0.0.0.0", 7001) is None


async def test_daemon_leaves_on_admin_request_and_cookie_is_private(tmp_path: Path) -> None:
    with node_process("--data-dir", str(tmp_path / "a")) as a:
        cookie_path = tmp_path / "a" / COOKIE_FILE
        assert stat.S_IMODE(cookie_path.stat().st_mode) == 0o600
        # The data dir it made is its user's alone: the store's files in it (0644 with
        # umask 022) were readable by every user of the host (an operator's trial).
        assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
        cookie = read_cookie(cookie_path)
        with node_process("--data-dir", str(tmp_path / "b")) as b:
            async with Client(b.addr, cookie=read_cookie(tmp_path / "b" / COOKIE_FILE)) as c:
                await c.join(a.addr)
                await c.put("k", "v")
            async with Client(a.addr, cookie=cookie) as c:
                await c.leave()
            code, output = a.wait()
            assert code == 0 and "Traceback" not in output
            assert "leaving the ring at an admin's request" in output
            async with Client(b.addr) as c:
                assert await c.get("k") == "v"  # handed over before a left


def test_cluster_runs_one_ring_and_stops_on_ctrl_c() -> None:
    proc = spawn("cluster", "3")
    try:
        assert proc.stdout is not None
        addrs: list[str] = []
        deadline = time.monotonic() + 30
        while len(addrs) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            match = re.match(r"node \d+: (\S+)", line)
            if match:
                addrs.append(match.group(1))
        assert len(addrs) == 3
        assert udpdht("put", "--node", addrs[0], "k", "hello").returncode == 0
        got = udpdht("get", "--node", addrs[2], "k")
        assert got.stdout == "hello\n"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_a_file_that_is_not_a_cookie_is_named_so_binary_or_text(tmp_path: Path) -> None:
    # A new user's binary file gave "'utf-8' codec can't decode byte 0x82 ...".
    for name, content in (("binary", bytes(range(128, 160))), ("text", b"not hex at all\n")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match="is not a udpdht cookie file"):
            read_cookie(path)
