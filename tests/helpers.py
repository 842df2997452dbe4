"""Shared test helpers: waiting on conditions, and running `udpdht` as separate processes."""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest

from udpdht import Client, ids, wire
from udpdht.sim import Sim, status_problems

Address = tuple[str, int]

_LISTENING = re.compile(r"listening on (\S+):(\d+)")


def closed_port(family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1") -> int:
    """A UDP port nothing listens on: free now, and below the kernel's range of ephemeral
    ports, so that no test running beside this one binds it meanwhile by asking for port 0.
    (A port bound and closed is handed out again: once a node of another test answered
    there, "unknown method", where the test expected "the port is closed".)"""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):  # bounded: a free port turns up within a few draws
        port = rng.randrange(10000, low) if low > 10100 else 0
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue  # taken: draw again
            chosen: int = s.getsockname()[1]
            return chosen
    raise RuntimeError("no free UDP port below the ephemeral range")


def load_script(monkeypatch: pytest.MonkeyPatch, name: str, path: Path) -> ModuleType:
    """The module of a script that is no package's (bench/rpc.py, setup.py), loaded under
    ``name`` for the test only (sys.modules takes it back after): imported by its file's
    name, it stayed there for every later test as ``rpc`` or ``setup``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


async def wait_until(cond: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``cond()`` holds, failing after ``within`` seconds of loop time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.01)


# Nodes started by tests never write under the real home directory.
_SANDBOX = tempfile.mkdtemp(prefix="udpdht-tests-")
atexit.register(shutil.rmtree, _SANDBOX, ignore_errors=True)
# Every `udpdht` command and node process a test runs (hundreds) keeps its compiled bytecode
# in the sandbox too: where PYTHONDONTWRITEBYTECODE is set (as on the development machine),
# each would otherwise compile the package from source again (70-80 ms of a 0.23 s
# `udpdht put`), and the checkout stays free of __pycache__ either way.
ENV = {
    # (and none of the user's UDPDHT_* settings: a test says what it runs with)
    **{
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("UDPDHT_")
    },
    "PYTHONPYCACHEPREFIX": os.path.join(_SANDBOX, "pycache"),
    "PYTHONUNBUFFERED": "1",
    "XDG_DATA_HOME": _SANDBOX,
    "XDG_STATE_HOME": _SANDBOX,  # (the shell's history, the kad:// client's identity)
}


def udpdht(
    *args: str,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run one `udpdht` command to completion (``env``: variables to add to its environment;
    ``prefix``: what runs it, e.g. ``ip netns exec NS``)."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "udpdht", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**ENV, **(env or {})},
    )


class NodeProcess:
    """A `udpdht node` child; always ended by the `node_process` context manager.

    A thread keeps reading what it prints (a full pipe would block the node mid-log).
    """

    def __init__(self, proc: subprocess.Popen[str], addr: Address, seen: list[str]) -> None:
        self.proc = proc
        self.addr = addr
        self.lines = seen
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        """Everything it printed so far."""
        return "".join(self.lines)

    @property
    def id(self) -> int:
        return ids.node_id_for(*self.addr)

    @property
    def addr_text(self) -> str:
        return f"{self.addr[0]}:{self.addr[1]}"

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> tuple[int, str]:
        """Wait for exit; returns (exit code, everything it printed)."""
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return self.proc.returncode, self.output()


def spawn(
    *args: str,
    loop: str = "auto",
    prefix: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """Start `udpdht ARGS` in the background, stdout and stderr together in one text pipe;
    ``loop``: the event loop it runs on (auto, asyncio or uvloop: $UDPDHT_LOOP); ``prefix``:
    what runs it (e.g. ``ip netns exec NS``, which execs it: the child is the node itself).

    The caller ends it (node_process does; a test using this directly must too).
    """
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "udpdht", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**ENV, "UDPDHT_LOOP": loop, **(env or {})},
    )


@contextmanager
def node_process(
    *args: str,
    port: int = 0,
    startup_timeout: float = 20.0,
    loop: str = "auto",
    prefix: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[NodeProcess]:
    """Start `udpdht node --port PORT ARGS`, wait until it listens, end it on exit (``env``:
    variables to add to its environment)."""
    proc = spawn("node", "--port", str(port), *args, loop=loop, prefix=prefix, env=env)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + startup_timeout
        seen: list[str] = []
        addr: Address | None = None
        while addr is None:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("node did not start:\n" + "".join(seen))
            line = proc.stdout.readline()
            seen.append(line)
            match = _LISTENING.search(line)
            if match:
                addr = (match.group(1), int(match.group(2)))
        yield NodeProcess(proc, addr, seen)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def primary_of(key: str, ring: Sequence[int]) -> int:
    """The id of ``key``'s primary among these node ids: the first at or after the key's id
    on the ring."""
    at = ids.hash_key(key.encode())
    return min((i for i in ring if i >= at), default=min(ring))


def data_dir(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def is_ideal(statuses: list[dict[str, Any]], half: int = 8) -> bool:
    """Whether these status objects (every live node) describe the ideal ring (``half``: L/2,
    the length of each leafset list)."""
    return not status_problems(statuses, half)


async def statuses(nodes: list[NodeProcess]) -> list[dict[str, Any]]:
    """Every node's status, asked over UDP."""

    async def one(node: NodeProcess) -> dict[str, Any]:
        async with Client(node.addr) as client:
            return await client.status()

    return list(await asyncio.gather(*(one(n) for n in nodes)))


async def wait_processes_ideal(nodes: list[NodeProcess], within: float, half: int = 8) -> None:
    """Wait until these node processes (every live one) form the ideal ring."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not is_ideal(await statuses(nodes), half):
        assert loop.time() < deadline, "the ring did not reach its ideal state in time"
        await asyncio.sleep(0.5)


class Stranger:
    """A raw UDP socket on loopback that speaks the wire format by hand: what an attacker has.

    It never retries and never answers a retry token unless told to; ``ask`` returns the kind
    of the first answer (``"reply"``, ``"error"``, ``"retry"`` or ``None`` for none) with its
    payload, and counts every byte it sent and received.
    """

    KINDS = {1: "reply", 2: "error", 3: "retry"}

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM
        )
        self.sock.bind((host, 0))
        self.addr: Address = self.sock.getsockname()[:2]
        self.sent = 0
        self.received = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Stranger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def id(self) -> bytes:
        """The id that matches this socket's address (SHA-1 of "host:port")."""
        return ids.to_bytes(ids.node_id_for(*self.addr))

    @staticmethod
    def request(
        method: str, args: dict[str, Any], rid: int = 1, token: bytes | None = None
    ) -> bytes:
        body: list[Any] = [1, 0, rid, method, args]
        if token is not None:
            body.append(token)
        return bytes(msgpack.packb(body, use_bin_type=True))

    def send(self, data: bytes, to: Address) -> None:
        self.sent += len(data)
        self.sock.sendto(data, to)

    def answers(
        self, within: float = 1.0, *, until_first: bool = False
    ) -> list[tuple[str | None, Any, int]]:
        """Every datagram that arrives within ``within`` seconds: (kind, payload, size)."""
        out: list[tuple[str | None, Any, int]] = []
        for data in self.datagrams(within, until=1 if until_first else None):
            msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
            kind = self.KINDS.get(msg[1])
            out.append((kind, msg[3] if kind != "error" else (msg[3], msg[4]), len(data)))
        return out

    def datagrams(self, within: float, *, until: int | None = None) -> list[bytes]:
        """Every datagram that arrives within ``within`` seconds (or until ``until`` have)."""
        out: list[bytes] = []
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0 and len(out) != until:
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            self.received += len(data)
            out.append(data)
        return out

    def ask(
        self,
        to: Address,
        method: str,
        args: dict[str, Any],
        *,
        within: float = 2.0,
        token: bytes | None = None,
    ) -> tuple[str | None, Any, int]:
        """One request, the first answer (or ``(None, None, 0)``)."""
        self.send(self.request(method, args, rid=random.getrandbits(63), token=token), to)
        got = self.answers(within, until_first=True)
        return got[0] if got else (None, None, 0)

    def ask_proven(
        self, to: Address, method: str, args: dict[str, Any], *, within: float = 2.0
    ) -> tuple[str | None, Any, int]:
        """``ask``, sent again with the token a ``retry`` gives (a method that needs its
        source's address proven: ``store_push``, ``leaving``): the first answer after."""
        kind, answer, size = self.ask(to, method, args, within=within)
        if kind != "retry":
            return kind, answer, size
        return self.ask(to, method, args, within=within, token=answer)


_METRICS_LINE = re.compile(r"^metrics: (http://\S+/metrics)$", re.MULTILINE)


def metrics_url(node: NodeProcess, within: float = 10.0) -> str:
    """The address the node serves its metrics at, from its start-up line."""
    deadline = time.monotonic() + within
    while (match := _METRICS_LINE.search(node.output())) is None:
        assert time.monotonic() < deadline, "no metrics line:\n" + node.output()
        assert node.proc.poll() is None, "the node exited:\n" + node.output()
        time.sleep(0.02)
    return match.group(1)


def has_ipv6_loopback() -> bool:
    """Whether this machine can bind ::1 (IPv6 tests are skipped where it cannot)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def requests_from(sim: Sim, src: Address, method: str) -> list[Address]:
    """A list that from now on gets the destination of every ``method`` request ``src`` sends
    (the network's drop filter, dropping nothing; ``set_drop_filter(None)`` ends it)."""
    sent: list[Address] = []

    def watch(source: Address, dst: Address, data: bytes) -> bool:
        msg = wire.decode(data) if source == src else None
        if isinstance(msg, wire.Request) and msg.method == method:
            sent.append(dst)
        return False

    sim.net.set_drop_filter(watch)
    return sent
