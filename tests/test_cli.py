"""The `udpdht` command as a user runs it: separate processes on loopback."""

from __future__ import annotations

import json
import random
import signal
import socket
import time

import pytest
from helpers import node_process, udpdht

from udpdht import BUILD as udpdht_build


def test_node_survives_garbage_flood_and_answers_status() -> None:
    with node_process() as node:
        rng = random.Random(99)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for i in range(5000):
                sock.sendto(rng.randbytes(rng.randint(0, 300)), node.addr)
                if i % 250 == 0:
                    time.sleep(0.005)  # let the node drain its socket buffer
        finally:
            sock.close()
        result = udpdht("status", "--node", node.addr_text, "--json")
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        assert status["addr"] == node.addr_text
        assert len(status["id"]) == 40
        # Each was dropped: undecoded past the source's rate limit, else as malformed.
        rpc = status["rpc"]
        assert rpc["dropped_malformed"] + rpc["rate_limited"] > 4000
        assert rpc["rate_limited"] > 0  # 5,000 in a blink: over the burst of one source
        for key in ("sent", "received", "retries", "timeouts", "duplicates"):
            assert isinstance(status["rpc"][key], int)
        assert status["build"] == udpdht_build  # (the node runs what this checkout has)
        human = udpdht("status", "--node", node.addr_text)
        assert human.returncode == 0 and status["id"] in human.stdout
        assert "state        " in human.stdout  # the shell's words (udpdht/render.py)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_node_stops_cleanly_on_signal(sig: signal.Signals) -> None:
    with node_process() as node:
        assert udpdht("status", "--node", node.addr_text).returncode == 0
        node.signal(sig)
        code, output = node.wait()
        assert code == 0, output
        assert "Traceback" not in output


@pytest.mark.slow  # 9 s: the client's 6 tries to a silent node
def test_status_of_silent_node_is_one_line_error() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))  # a port that is bound, so nothing else answers, but silent
    try:
        port = sock.getsockname()[1]
        result = udpdht("status", "--node", f"127.0.0.1:{port}", "--tries", "2")  # 0.9 s, not 9
    finally:
        sock.close()
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "did not answer" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("bad", ["nonsense", "127.0.0.1:99999", "127.0.0.1:x", "::1:7000"])
def test_malformed_address_is_usage_error(bad: str) -> None:
    result = udpdht("status", "--node", bad)
    assert result.returncode == 2
    assert "bad address" in result.stderr and "Traceback" not in result.stderr
