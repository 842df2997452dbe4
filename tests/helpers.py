"""Shared test helpers: waiting on conditions, and running `udpdht` as separate processes."""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from udpdht import Client

Address = tuple[str, int]

_LISTENING = re.compile(r"listening on (\S+):(\d+)")


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
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_DATA_HOME": _SANDBOX}


def udpdht(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run one `udpdht` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "udpdht", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


class NodeProcess:
    """A `udpdht node` child; always ended by the `node_process` context manager."""

    def __init__(self, proc: subprocess.Popen[str], addr: Address) -> None:
        self.proc = proc
        self.addr = addr

    @property
    def addr_text(self) -> str:
        return f"{self.addr[0]}:{self.addr[1]}"

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> tuple[int, str]:
        """Wait for exit; returns (exit code, everything it printed)."""
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out


def spawn(*args: str) -> subprocess.Popen[str]:
    """Start `udpdht ARGS` in the background, stdout and stderr together in one text pipe.

    The caller ends it (node_process does; a test using this directly must too).
    """
    return subprocess.Popen(
        [sys.executable, "-m", "udpdht", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
    )


@contextmanager
def node_process(*args: str, port: int = 0, startup_timeout: float = 20.0) -> Iterator[NodeProcess]:
    """Start `udpdht node --port PORT ARGS`, wait until it listens, end it on exit."""
    proc = spawn("node", "--port", str(port), *args)
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
        yield NodeProcess(proc, addr)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def data_dir(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _ideal(statuses: list[dict[str, Any]]) -> bool:
    """Whether these status objects (every live node) describe the ideal ring."""
    order = sorted(st["id"] for st in statuses)
    n = len(order)
    for st in statuses:
        i = order.index(st["id"])
        want_s = [order[(i + k) % n] for k in range(1, n)][:8]
        want_p = [order[(i - k) % n] for k in range(1, n)][:8]
        if [p["id"] for p in st["successors"]] != want_s:
            return False
        if [p["id"] for p in st["predecessors"]] != want_p:
            return False
    return True


async def statuses(nodes: list[NodeProcess]) -> list[dict[str, Any]]:
    """Every node's status, asked over UDP."""

    async def one(node: NodeProcess) -> dict[str, Any]:
        async with Client(node.addr) as client:
            return await client.status()

    return list(await asyncio.gather(*(one(n) for n in nodes)))


async def wait_processes_ideal(nodes: list[NodeProcess], within: float) -> None:
    """Wait until these node processes (every live one) form the ideal ring."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not _ideal(await statuses(nodes)):
        assert loop.time() < deadline, "the ring did not reach its ideal state in time"
        await asyncio.sleep(0.5)
