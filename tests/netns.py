"""A test bed of K "hosts" made from Linux network namespaces, joined by a switch.

Layout (one instance; N is the instance's number, claimed as described below)::

    namespace udpdht-N-sw (the switch)      namespace udpdht-N-TOKEN-hI (host I, one per host)
      br0  <- h0, h1, ... hK-1 (veth ends)     eth0 = 10.213.N.(I+1)/24, lo up
      br1  <- the ends of a cut-off group      (the other end of veth hI)

Nothing is created in the root namespace: every veth pair is created with its two ends
directly in the switch and the host namespaces, and the bridges live in the switch, so
interface names cannot collide with the machine's or another instance's. Traffic between hosts
stays on the switch; a host reaches nothing else (the hosts have no route out).

Uniqueness across parallel test workers (pytest-xdist): an instance claims its number N by
creating the switch namespace ``udpdht-N-sw`` (``ip netns add`` fails when the name exists, so
the claim is atomic); N picks the subnet 10.213.N.0/24 and names everything else, and the host
namespaces also carry a random token.

Partitions (no netem, nft or iptables on the machines this was written for; neither is needed):

* :meth:`NetnsHosts.cut` / :meth:`NetnsHosts.restore` take host I's switch-side veth end down
  and up: host I loses every other host (its own address and ``lo`` keep working).
* :meth:`NetnsHosts.cut_group` moves the switch-side ends of a group of hosts from ``br0`` to a
  second bridge ``br1``: the group reaches the rest no more, its members still reach each
  other ("2 hosts against 3"). :meth:`NetnsHosts.heal` puts every end back on ``br0``, up.

Hosts are numbered from 0 (``cut_group([3, 4])`` cuts off the fourth and fifth host).

Everything is deleted on exit, also after an exception or Ctrl-C, and by an atexit hook if the
interpreter ends without the context being left: processes still inside a namespace are killed
(by pid, as ``ip netns pids`` lists them), then the namespaces are deleted, which removes the
veths and bridges in them. An instance killed with SIGKILL can leave its namespaces behind:
``ip netns list | grep udpdht-`` shows them, ``ip netns del NAME`` removes one.

:func:`netns_available` says whether this machine allows it (root, ``ip``, namespaces and
bridges); tests skip with its one-line reason elsewhere.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

PREFIX = "udpdht-"  # every namespace this module creates starts with it
SUBNET = "10.213"  # 10.213.N.0/24 for instance N
PORT_UP_TIMEOUT = 5.0  # seconds to wait for a host's eth0 to report carrier


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; a failure raises RuntimeError with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


@functools.cache
def netns_available() -> tuple[bool, str]:
    """(True, "") when this process can build the test bed, else (False, why) in one line."""
    if os.geteuid() != 0:
        return False, "network namespace tests need root"
    if shutil.which("ip") is None:
        return False, "network namespace tests need the `ip` command (iproute2)"
    probe = f"{PREFIX}probe-{secrets.token_hex(4)}"
    try:
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return False, f"cannot create a network namespace: {made.stderr.strip()}"
        bridge = _ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if bridge.returncode != 0:
            return False, f"cannot create a bridge in a namespace: {bridge.stderr.strip()}"
    finally:
        gone = _ip("netns", "del", probe, check=False)
    if gone.returncode != 0 and probe in namespaces():
        return False, f"cannot delete a network namespace: {gone.stderr.strip()}"
    return True, ""


def namespaces() -> set[str]:
    """The names `ip netns list` shows."""
    out = _ip("netns", "list").stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


class NetnsHosts:
    """K hosts on one switch; a context manager that deletes all it made on exit."""

    def __init__(self, count: int, *, claim_tries: int = 64) -> None:
        if not 1 <= count <= 254:
            raise ValueError(f"count must be 1..254, got {count}")
        self.count = count
        self.claim_tries = claim_tries
        self.number = -1  # the claimed instance number N (see the module doc)
        self.switch = ""
        self.hosts: list[str] = []  # host namespace names, index = host number
        self.addrs: list[str] = []  # host addresses, index = host number
        self.created: list[str] = []  # namespaces that exist now, in creation order
        self._procs: list[subprocess.Popen[Any]] = []
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> NetnsHosts:
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _claim(self) -> None:
        """Take a free instance number N by creating its switch namespace (atomic)."""
        for number in random.SystemRandom().sample(range(256), min(self.claim_tries, 256)):
            name = f"{PREFIX}{number}-sw"
            made = _ip("netns", "add", name, check=False)
            if made.returncode == 0:
                self.number, self.switch = number, name
                self.created.append(name)
                return
            if "File exists" not in made.stderr:
                raise RuntimeError(f"ip netns add {name}: {made.stderr.strip()}")
        raise RuntimeError(f"no free test network: {self.claim_tries} switch names were taken")

    def _build(self) -> None:
        self._claim()
        token = secrets.token_hex(3)
        sw = self.switch
        for bridge in ("br0", "br1"):
            _ip("-n", sw, "link", "add", bridge, "type", "bridge")
            _ip("-n", sw, "link", "set", bridge, "up")
        for i in range(self.count):
            ns = f"{PREFIX}{self.number}-{token}-h{i}"
            _ip("netns", "add", ns)
            self.created.append(ns)
            self.hosts.append(ns)
            addr = f"{SUBNET}.{self.number}.{i + 1}"
            self.addrs.append(addr)
            _ip("link", "add", f"h{i}", "netns", sw, "type", "veth", "peer", "eth0", "netns", ns)
            _ip("-n", sw, "link", "set", f"h{i}", "master", "br0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        for i in range(self.count):
            self._wait_carrier(i)

    def _wait_carrier(self, i: int) -> None:
        """Wait until host i's eth0 is up with carrier (bounded)."""
        deadline = time.monotonic() + PORT_UP_TIMEOUT
        while "LOWER_UP" not in _ip("-n", self.hosts[i], "link", "show", "eth0").stdout:
            if time.monotonic() > deadline:
                raise RuntimeError(f"host {i}: eth0 has no carrier after {PORT_UP_TIMEOUT} s")
            time.sleep(0.02)

    def close(self) -> None:
        """Kill what runs in the namespaces, delete them (idempotent; also the atexit hook)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        failures = []
        for ns in reversed(self.created):  # the hosts first, the switch last
            self._kill_inside(ns)
            gone = _ip("netns", "del", ns, check=False)
            if gone.returncode != 0:
                failures.append(f"{ns}: {gone.stderr.strip()}")
        self.created.clear()
        if failures:
            raise RuntimeError("could not delete network namespaces: " + "; ".join(failures))

    @staticmethod
    def _kill_inside(ns: str) -> None:
        """SIGKILL every process still in namespace ``ns`` (ours: the namespace is)."""
        for _ in range(10):  # bounded: a process may start another while we kill
            pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split()]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    @property
    def names(self) -> list[str]:
        """Every namespace name of this instance (the switch first)."""
        return [self.switch, *self.hosts] if self.switch else []

    # --- running things on a host ---------------------------------------------------------

    def prefix(self, i: int) -> list[str]:
        """The argv prefix that runs a command on host i: ``ip netns exec NS``."""
        return ["ip", "netns", "exec", self.hosts[i]]

    def run(self, i: int, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` on host i (``subprocess.Popen`` keywords pass through).

        The caller should end it; whatever still runs when the test bed closes is killed.
        """
        proc: subprocess.Popen[Any] = subprocess.Popen([*self.prefix(i), *argv], **popen)
        self._procs.append(proc)
        return proc

    # --- partitions -----------------------------------------------------------------------

    def _port(self, i: int, *args: str) -> None:
        if not 0 <= i < self.count:
            raise IndexError(f"no host {i}: hosts are 0..{self.count - 1}")
        _ip("-n", self.switch, "link", "set", f"h{i}", *args)

    def cut(self, i: int) -> None:
        """Take host i's link down (at the switch): it reaches no other host."""
        self._port(i, "down")

    def restore(self, i: int) -> None:
        """Bring host i's link up again (on whichever bridge it was)."""
        self._port(i, "up")
        self._wait_carrier(i)
        self._forget_neighbours()

    def _forget_neighbours(self) -> None:
        """Flush every host's ARP cache after a cut ends.

        Addresses a host tried to reach during the cut sit INCOMPLETE, and what it sends them
        waits for the next ARP retry (up to a second later); flushed, the first datagram asks
        again at once, so the link is whole when restore/heal return.
        """
        for ns in self.hosts:
            _ip("-n", ns, "neigh", "flush", "all")

    def cut_group(self, group: Iterable[int]) -> None:
        """Isolate ``group`` from the other hosts; its members still reach each other."""
        for i in group:
            self._port(i, "master", "br1")

    def heal(self) -> None:
        """Undo every cut: all links up, all hosts on one bridge."""
        for i in range(self.count):
            self._port(i, "master", "br0", "up")
        for i in range(self.count):
            self._wait_carrier(i)
        self._forget_neighbours()
