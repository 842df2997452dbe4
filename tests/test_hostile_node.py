"""A user's client against a node run by a stranger, which answers whatever it likes.

The nodes' side of the wire was attacked many times (test_attacks.py); these tests turn it
round: the CLI, the shell and the Client must say in one line that an answer makes no sense,
never end in a traceback, never allocate what a number in the answer asks for, never print
escape sequences a node sent, and never report a write that a node did not make. The fake
node is a plain UDP socket in a thread, answering each method with a canned answer (a
helper's audit found each of these on the code before).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from helpers import ENV, udpdht

from udpdht import Client, Node, wire
from udpdht.errors import BadAnswer, DecodeError, ValueTooLarge

NODE_ID = bytes(range(20))
ESC = "\x1b]0;TITLE\x07\x1b[2J"
STATUS: dict[str, Any] = {
    "id": NODE_ID.hex(),
    "addr": "127.0.0.1:1",
    "predecessor": None,
    "successors": [],
    "predecessors": [],
    "fingers": [],
    "store": {"primary": 0, "replica": 0},
}


class Error:
    """An error reply: ``code`` and ``message``."""

    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message


@contextlib.contextmanager
def fake_node(answers: dict[str, Any]) -> Iterator[str]:
    """A node at 127.0.0.1:PORT (yielded as text) that answers each method of ``answers``
    with its answer (an Error: an error reply), a ping with its id, anything else not at all.
    Ends with the block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                data, addr = sock.recvfrom(65536)
                msg = wire.decode(data)
            except (TimeoutError, OSError, ValueError, DecodeError):
                continue
            if type(msg) is not wire.Request:
                continue
            answer = answers.get(msg.method, {"id": NODE_ID} if msg.method == "ping" else None)
            if isinstance(answer, Error):
                sock.sendto(wire.encode_error(msg.rid, answer.code, answer.message), addr)
            elif answer is not None or msg.method in answers:
                sock.sendto(wire.encode_reply(msg.rid, answer), addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        done.set()
        thread.join(timeout=5)
        sock.close()


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The one error line a command ended with (asserted: no traceback, exit 1)."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.startswith("udpdht: error: ") and done.stderr.count("\n") == 1
    return done.stderr


async def test_a_writer_named_by_a_number_allocates_nothing() -> None:
    # A get answered with the version [1, 2**30]: the writer was bytes(2**30), 2.1 GB for a
    # 30-byte answer (bytes(N) of an int N), and the get printed its value all the same.
    huge = {"value": b"\xa1v", "version": [1, 1 << 30]}
    with fake_node({"get": huge, "put": huge}) as addr:
        async with Client(addr) as client:
            with pytest.raises(BadAnswer, match="no valid version"):
                await client.get_record("k")
            with pytest.raises(BadAnswer, match="no valid version"):
                await client.put("k", "v")  # (no version: not a write)


@pytest.mark.parametrize(
    ("answers", "command"),
    [
        ({"status": {}}, ["status"]),
        ({"status": {**STATUS, "store": None}}, ["status"]),
        ({"status": [1, 2]}, ["status"]),
        ({"get": {"value": 5, "version": [1, NODE_ID]}}, ["get", "k"]),
        (
            {"get": {"value": b"\xa1v", "version": [1, NODE_ID], "expires": 1e300}},
            ["get", "k", "--meta"],
        ),
        ({"put": {"stored": False}}, ["put", "k", "v"]),
        ({"put": None}, ["put", "k", "v"]),
        ({"delete": {"existed": "no"}}, ["delete", "k"]),
        ({"lookup": {"owner": 3}}, ["lookup", "k"]),
        # (A ValueError in reading the answer: a usage error, exit 2; a maintainer's review.)
        ({"lookup": {"owner": ["x", "h", 1], "hops": [], "successors": []}}, ["lookup", "k"]),
        ({"store_scan": {"items": [[b"k", b"v", 1]], "next": None}}, ["keys"]),
        ({"store_scan": {"items": [[1]], "next": None}}, ["keys"]),
        ({"store_scan": {"items": [], "next": b"a"}}, ["keys"]),  # (never moves on)
    ],
)
def test_an_answer_that_makes_no_sense_is_one_line_not_a_traceback(
    answers: dict[str, Any], command: list[str]
) -> None:
    with fake_node(answers) as addr:
        done = udpdht(*command, "--node", addr, "--tries", "2", timeout=30)
    one_line_error(done)
    assert "stored" not in done.stdout and "deleted" not in done.stdout


async def real_status() -> dict[str, Any]:
    async with Node("127.0.0.1", 0) as node:
        return node.status()


def test_escape_sequences_a_node_sends_are_shown_not_played() -> None:
    status = asyncio.run(real_status())
    status.update(addr=f"127.0.0.1:1{ESC}", id=NODE_ID.hex() + ESC)
    with fake_node({"status": status, "get": Error(3, f"boom{ESC}")}) as addr:
        shown = udpdht("status", "--node", addr, timeout=30)
        failed = udpdht("get", "k", "--node", addr, timeout=30)
    assert shown.returncode == 0 and "\x1b" not in shown.stdout
    assert "\\x1b]0;TITLE\\x07" in shown.stdout
    assert "\x1b" not in one_line_error(failed) and "boom\\x1b" in failed.stderr


async def test_a_stored_string_with_escape_sequences_prints_them_escaped() -> None:
    async with Node("127.0.0.1", 0) as node:
        await node.put("k", f"hello{ESC}")
        addr = f"127.0.0.1:{node.addr[1]}"
        shown = await _run("get", "k", "--node", addr)
        raw = await _run("get", "k", "--raw", "--node", addr)
    assert shown.stdout == "hello\\x1b]0;TITLE\\x07\\x1b[2J\n"
    assert raw.stdout == f"hello{ESC}"  # (--raw: the bytes as they are)


async def test_keys_pages_through_more_than_a_page_in_ring_order() -> None:
    # Each page must move the scan on (a stranger's pages that did not kept 'keys' going for
    # half an hour); the order is the ring's (key ids), not the keys' bytes.
    async with Node("127.0.0.1", 0) as node:
        for i in range(1500):  # about three pages of 60 KB
            await node.put(f"key-{i:05d}", "x" * 40)
        async with Client(node.addr) as client:
            listed, after = await client.keys(2000)
    assert after is None and len(listed) == 1500


def test_the_shell_goes_on_after_an_answer_it_cannot_read(tmp_path: Path) -> None:
    status = asyncio.run(real_status())
    with fake_node({"status": status, "lookup": {"owner": 3}}) as addr:
        done = subprocess.run(
            [sys.executable, "-m", "udpdht", "shell", "--attach", addr],
            input="lookup k\nstatus\nquit\n",
            capture_output=True,
            text=True,
            timeout=60,
            env={**ENV, "XDG_DATA_HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path)},
        )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr == "line 1: cannot read the node's answer (KeyError: 'hops')\n"
    assert f"address      {status['addr']}" in done.stdout  # (the status after it ran)


async def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """``udpdht ARGS`` without blocking the loop that serves the node it asks."""
    return await asyncio.to_thread(udpdht, *args, timeout=30)


async def test_a_value_nested_too_deep_is_refused_and_never_breaks_a_reader() -> None:
    # A helper's audit: a list nested 500 deep, which msgpack takes, was stored, and every
    # `udpdht get` and the shell's get of it ended in a RecursionError.
    deep: list[Any] = []
    inner = deep
    for _ in range(499):
        inner.append([])
        inner = inner[0]
    async with Node("127.0.0.1", 0) as node, Client(node.addr) as client:
        with pytest.raises(ValueTooLarge, match="100 levels deep at most"):
            await client.put("deep", deep)
        # (another program's write, packed without our check)
        await client.call("put", {"key": b"deep", "value": msgpack.packb(deep), "ttl": None})
        done = await _run("get", "deep", "--node", f"127.0.0.1:{node.addr[1]}")
    assert "over 100 levels deep" in one_line_error(done)


async def test_a_ring_answer_that_does_not_name_its_node_is_refused() -> None:
    # A reviewer's finding: the check that an answer names the node called (one place now,
    # Node.call_peer) let a `neighbors` or a `ping` answer with no id through, which the ring
    # walk and stabilize had refused. Other methods' answers need not name their node.
    from udpdht.net import parse_addr
    from udpdht.routing import Peer

    answers: dict[str, Any] = {
        "ping": {},
        "neighbors": {"succs": [], "preds": []},
        "store_read": {"records": []},
    }
    with fake_node(answers) as where:
        async with Node("127.0.0.1", 0) as node:
            peer = Peer(int.from_bytes(NODE_ID, "big"), parse_addr(where))
            for method in ("ping", "neighbors"):
                with pytest.raises(ValueError, match=r"answered .* with another node's id"):
                    await node.call_peer(peer, method, {}, tries=1)
            assert await node.call_peer(peer, "store_read", {"keys": []}, tries=1) == {
                "records": []
            }
    # Nor one that is no map at all: a process on a dead node's port answering pings with 1
    # kept it alive (the attack's second helper).
    with fake_node({"ping": 1, "find": []}) as where:
        async with Node("127.0.0.1", 0) as node:
            peer = Peer(int.from_bytes(NODE_ID, "big"), parse_addr(where))
            for method in ("ping", "find"):
                with pytest.raises(ValueError, match=r"answered .* with no map"):
                    await node.call_peer(peer, method, {}, tries=1)
