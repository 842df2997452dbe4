"""The namespace test bed itself (tests/netns.py): hosts reach each other, cuts separate them,
and nothing is left behind."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import pytest
from netns import NetnsHosts, namespaces, netns_available

ok, why = netns_available()
pytestmark = pytest.mark.skipif(not ok, reason=why)

PORT = 9999
# Answers every datagram with its own address (stops when the test bed kills it).
ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(100)
    s.sendto(sys.argv[1].encode(), peer)
"""
# Sends one datagram to each address, prints those that answered within the time.
PROBE = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for a in sys.argv[2:]:
    s.sendto(b"?", (a, int(sys.argv[1])))
s.settimeout(0.1)
got, deadline = set(), time.monotonic() + 0.5
while time.monotonic() < deadline and len(got) < len(sys.argv) - 2:
    try:
        got.add(s.recv(100).decode())
    except TimeoutError:
        pass
print(" ".join(sorted(got)))
"""


@contextlib.contextmanager
def echoing(count: int) -> Iterator[NetnsHosts]:
    """A test bed of ``count`` hosts, each answering on PORT; checks nothing is left after."""
    with NetnsHosts(count) as hosts:
        names = hosts.names
        procs = [
            hosts.run(
                i,
                [sys.executable, "-c", ECHO, hosts.addrs[i], str(PORT)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(count)
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            yield hosts
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(timeout=10)
    assert not namespaces() & set(names)


def matrix(hosts: NetnsHosts) -> list[set[int]]:
    """For each host, the other hosts it reaches (all hosts probe at once)."""
    probes = [
        hosts.run(
            i,
            [sys.executable, "-c", PROBE, str(PORT), *(a for a in hosts.addrs if a != own)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, own in enumerate(hosts.addrs)
    ]
    return [{hosts.addrs.index(a) for a in p.communicate(timeout=30)[0].split()} for p in probes]


def test_hosts_reach_each_other_until_cut() -> None:
    with echoing(4) as hosts:
        assert len(set(hosts.addrs)) == 4 and all(a.startswith("10.213.") for a in hosts.addrs)
        everyone = set(range(4))
        assert matrix(hosts) == [everyone - {i} for i in range(4)]

        hosts.cut(1)
        assert matrix(hosts) == [{2, 3}, set(), {0, 3}, {0, 2}]
        hosts.restore(1)
        assert matrix(hosts) == [everyone - {i} for i in range(4)]

        # Two against two: each pair still talks within itself.
        hosts.cut_group([2, 3])
        assert matrix(hosts) == [{1}, {0}, {3}, {2}]
        hosts.heal()
        assert matrix(hosts) == [everyone - {i} for i in range(4)]


def test_nothing_is_left_after_an_exception() -> None:
    names: list[str] = []
    with pytest.raises(KeyError), NetnsHosts(2) as hosts:
        names = hosts.names
        hosts.run(0, ["sleep", "60"])  # still running when the bed closes: killed
        assert set(names) <= namespaces()
        raise KeyError("boom")
    assert len(names) == 3
    assert not namespaces() & set(names)


def test_parallel_instances_do_not_share_names_or_subnets() -> None:
    with NetnsHosts(1) as a, NetnsHosts(1) as b:
        assert a.number != b.number
        assert not set(a.names) & set(b.names)
        assert a.addrs[0].rsplit(".", 1)[0] != b.addrs[0].rsplit(".", 1)[0]
