"""The network seam: real UDP sockets, or an in-memory network on virtual time.

Everything above this module sees one interface, :class:`Network`, whose ``bind`` attaches an
``asyncio.DatagramProtocol`` to an address and returns a datagram transport. The RPC endpoint
and the node run unchanged on either implementation:

* :class:`UdpNetwork` binds real sockets with ``loop.create_datagram_endpoint``;
* :class:`SimNetwork` delivers datagrams in memory with latency, loss, duplication, reordering
  and partitions drawn from a seeded RNG, and is meant to run on a :class:`VirtualClockLoop`,
  whose clock jumps straight to the next deadline instead of waiting for it (the idea of trio's
  ``MockClock``). A thousand-node ring then runs minutes of protocol time in seconds, and the
  same seed gives the same run.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import itertools
import math
import os
import random
import selectors
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

Address = tuple[str, int]
#: An Address where it is passed on as it came (the socket's tuple, or a Peer's): compiled
#: (README "A compiled build"), a ``tuple[str, int]`` argument is unpacked into a C struct and
#: packed into a new tuple wherever it is used as an object (a dict key, a set's member,
#: another call's argument), and that was 5 % of a caller's instructions a call in rpc.py. A
#: tuple of any length stays the one object. mypy takes either type for the other.
AddrObj = tuple[Any, ...]
T = TypeVar("T")


# --- addresses ---------------------------------------------------------------------------------


def parse_addr(text: str, *, allow_port_zero: bool = False) -> Address:
    """``"HOST:PORT"`` or ``"[V6]:PORT"`` -> ``(host, port)``; ValueError with a clear message."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"bad address {text!r}: expected [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"bad address {text!r}: expected HOST:PORT")
        if ":" in host:
            raise ValueError(f"bad address {text!r}: write IPv6 addresses as [HOST]:PORT")
    if not port_text.isdigit():
        raise ValueError(f"bad address {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"bad address {text!r}: port must be {low}..65535")
    return host, port


_GOOD_HOSTS: dict[str, bool] = {}  # host text -> whether it may name a peer (a cache)
#: Hosts _GOOD_HOSTS keeps at most (a stranger may send many distinct strings). Above the
#: hosts a ring has, or every new destination of every node is parsed again (4,096 did that
#: in a simulated ring of 10,000 hosts: 4 % of its CPU).
GOOD_HOSTS_MAX = 32_768
#: The longest canonical IP address text (an IPv6 address with an IPv4 tail).
MAX_HOST_TEXT = 45


def peer_host_ok(host: object) -> bool:
    """Whether ``host`` may name a peer: the canonical text of a unicast IPv4 or IPv6 address.

    This is the gate between what a stranger writes in a datagram and ``sendto``. Anything else
    could close an asyncio transport (a NUL byte raises ValueError inside it, which asyncio
    treats as fatal), block the event loop on DNS (a host name), reach every host at once
    (broadcast, multicast) or ourselves (0.0.0.0), or give one host two ids (``::ffff:1.2.3.4``
    beside ``1.2.3.4``, ``127.000.0.1``, upper-case hex, a zone id).
    """
    if type(host) is not str or len(host) > MAX_HOST_TEXT:
        return False  # (before the cache: it would keep a stranger's 60 KB strings)
    ok = _GOOD_HOSTS.get(host)
    if ok is None:
        ok = _check_host(host)
        if len(_GOOD_HOSTS) >= GOOD_HOSTS_MAX:
            _GOOD_HOSTS.clear()
        _GOOD_HOSTS[host] = ok
    return ok


def _check_host(host: str) -> bool:
    if not host or not host.isascii():
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if str(ip) != host or ip.is_unspecified or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return ip != ipaddress.IPv4Address("255.255.255.255")
    return ip.ipv4_mapped is None and ip.scope_id is None


def check_peer_addr(host: object, port: object) -> Address:
    """``(host, port)`` as a peer's address, or ValueError saying what is wrong."""
    if not peer_host_ok(host):
        raise ValueError("a peer's host must be a unicast IP address, written canonically")
    if type(port) is not int or not 0 < port <= 65535:
        raise ValueError("a peer's port must be an integer 1..65535")
    assert isinstance(host, str)
    return host, port


def format_addr(addr: tuple[Any, ...]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve(addr: Address) -> Address:
    """The canonical IP-literal form of an address, resolving a host name if needed.

    Replies are matched on the address a request went to, and the kernel reports senders as IP
    literals, so callers at the edge (CLI, Client, Server) resolve once, here.
    """
    host, port = addr
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        why = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        raise ValueError(f"cannot resolve host {host!r}: {why.lower()}") from None
    # Prefer IPv4: a name like "localhost" usually means the node bound 127.0.0.1.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(infos[0][4][0]), port


def route_from(v6: bool, target: str | None = None) -> str:
    """The address this machine sends from towards ``target`` (by default: towards the outside
    world, i.e. the outbound interface's address), or loopback when there is no route.

    Connecting a UDP socket sends nothing; it only asks the kernel for a route.
    """
    family = socket.AF_INET6 if v6 else socket.AF_INET
    fallback = "::1" if v6 else "127.0.0.1"
    probe = target or ("2001:db8::1" if v6 else "198.51.100.1")  # documentation addresses
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 9))
            host = str(sock.getsockname()[0])
    except OSError:
        return fallback
    return fallback if ipaddress.ip_address(host).is_unspecified else host


# --- the seam ----------------------------------------------------------------------------------


class Network(Protocol):
    """Where endpoints live. ``bind`` with port 0 picks a free port."""

    async def bind(
        self, addr: Address, protocol: asyncio.DatagramProtocol
    ) -> asyncio.DatagramTransport: ...


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``, or time.monotonic itself for the stock loop, whose time() is that behind
    a Python frame (a frame less on every call; uvloop's and the simulator's virtual clock
    keep their own). For the paths every call, read and write takes, which would otherwise
    ask asyncio.get_running_loop(): a getpid() system call each time in CPython 3.11."""
    return time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time


#: What a datagram transport of the stock asyncio loop receives into: one datagram's largest
#: payload (65,507 bytes over IPv4, 65,527 over IPv6) fits.
RECEIVE_SIZE = 65_536


def fit_receive_size(transport: asyncio.BaseTransport) -> None:
    """Have the stock asyncio loop receive ``transport``'s datagrams into RECEIVE_SIZE bytes.

    It receives each into a fresh bytes object of its ``max_size``, 256 KiB, and then shrinks
    it. glibc serves an allocation that large with mmap, the shrink with mremap and the free
    with munmap: three system calls and a page fault for every datagram received (strace of
    30,000 gets through 100 servers in one process: 60,674 of each). 64 KiB comes from the
    heap instead, and the CPU of a get fell by a third. uvloop's transport reads into a buffer
    of its own and has no ``max_size``: it is left as it is.
    """
    if getattr(transport, "max_size", 0) > RECEIVE_SIZE:
        transport.max_size = RECEIVE_SIZE  # type: ignore[attr-defined]


class UdpNetwork:
    """Real UDP: one socket per endpoint."""

    RECEIVE_BUFFER = 4 << 20  # absorb bursts (a replication wave, a benchmark) without drops

    async def bind(
        self, addr: Address, protocol: asyncio.DatagramProtocol
    ) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=addr)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RECEIVE_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.RECEIVE_BUFFER)
            except OSError:  # a capped or exotic platform: the default buffers still work
                pass
        return transport


async def port_refused(addr: Address, probe: bytes, *, wait: float = 0.5) -> bool:
    """Whether nothing listens at ``addr``: ``probe`` goes out from a socket of its own,
    connected to ``addr``, so that the kernel reports the ICMP "port unreachable" a closed port
    draws (an unconnected socket, the endpoints' kind, never learns of it). False when
    anything answers, when nothing comes back within ``wait`` seconds (a host that drops
    quietly, a firewall), or when the probe cannot be sent."""
    loop = asyncio.get_running_loop()
    verdict: asyncio.Future[bool] = loop.create_future()

    class _Probe(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, src: tuple[Any, ...]) -> None:
            if not verdict.done():
                verdict.set_result(False)

        def error_received(self, exc: Exception) -> None:
            if not verdict.done():
                verdict.set_result(isinstance(exc, ConnectionRefusedError))

    try:
        transport, _ = await loop.create_datagram_endpoint(_Probe, remote_addr=addr)
    except OSError:
        return False
    try:
        transport.sendto(probe)
        return await asyncio.wait_for(verdict, wait)
    except ConnectionRefusedError:  # uvloop raises from sendto what asyncio hands over
        return True
    except (OSError, TimeoutError):
        return False
    finally:
        transport.close()


#: Seconds without an answer from an address before its port is probed (:func:`port_refused`):
#: a node answers well within this on a LAN, so the probe costs nothing in the usual case and
#: saves the whole retry schedule (~9 s) when nothing listens there.
PROBE_AFTER = 0.2


async def unless_refused(call: Awaitable[T], addr: Address, method: str, probe: bytes) -> T:
    """``call`` (to ``addr``, on real sockets), failing with ``errors.Refused`` as soon as the
    address's host says that nothing listens there (``probe``: a harmless request to send, a
    ping of the protocol spoken there); ``call`` is cancelled then."""
    from .errors import Refused

    loop = asyncio.get_running_loop()
    start = loop.time()
    task = asyncio.ensure_future(call)

    async def refused() -> bool:
        await asyncio.sleep(PROBE_AFTER)
        return await port_refused(addr, probe)

    prober = asyncio.ensure_future(refused())
    try:
        await asyncio.wait((task, prober), return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and prober.result():
            raise Refused(addr, method, loop.time() - start)
        return await task
    finally:
        task.cancel()
        prober.cancel()


#: ``UDPDHT_LOOP=asyncio`` forces the standard loop even where uvloop is installed (tests
#: replay attacks on both: a failed ``sendto`` is fatal to an asyncio transport, not to uvloop's).
LOOP_ENV = "UDPDHT_LOOP"


def new_event_loop(*, use_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """uvloop when installed (the ``fast`` extra) and not refused by ``$UDPDHT_LOOP``, else the
    standard loop."""
    choice = os.environ.get(LOOP_ENV, "auto")
    if choice not in ("auto", "asyncio", "uvloop"):
        raise ValueError(f"${LOOP_ENV} must be auto, asyncio or uvloop, not {choice!r}")
    if use_uvloop and choice != "asyncio":
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
        except ImportError:
            if choice == "uvloop":
                raise ValueError(f"${LOOP_ENV}=uvloop but uvloop is not installed") from None
    return asyncio.new_event_loop()


def run(main: Awaitable[T], *, use_uvloop: bool = True) -> T:
    """``asyncio.run`` on :func:`new_event_loop`."""

    async def wrapper() -> T:
        return await main

    with asyncio.Runner(loop_factory=lambda: new_event_loop(use_uvloop=use_uvloop)) as runner:
        return runner.run(wrapper())


def tune_gc() -> None:
    """Garbage collection for a long-running node process, called once it has started.

    Every call allocates a few container objects (a future, a transaction, argument maps), so
    with CPython's defaults the collector ran ~380 times per 100k calls and its full passes,
    which walk every object the process holds, paused the loop for 20-33 ms. What start-up
    made (modules, classes, the store's indexes) is moved out of the collector's sight for
    good (``gc.freeze``), and the young generation is collected every 50,000 allocations
    instead of 700: the same work in fewer, still short, passes. Cycles are still freed.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


# --- virtual time ------------------------------------------------------------------------------


class SimulationDeadlock(RuntimeError):
    """Every task waits, no timer is armed and no real I/O is pending: nothing can ever happen."""


class _JumpingSelector(selectors.DefaultSelector):
    """Polls real file descriptors without blocking; advances virtual time instead of sleeping."""

    def __init__(self, loop_ref: list[VirtualClockLoop]) -> None:
        super().__init__()
        self._loop_ref = loop_ref
        self._turns = 0

    POLL_EVERY = 64  # loop turns with callbacks ready between two polls of the real descriptors

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout == 0:
            # Callbacks are ready: the loop turns again at once, at the same virtual instant.
            # Only a thread (run_in_executor) can make a real descriptor ready; it need not be
            # polled for on every turn, and the system call cost more than a turn's own work.
            self._turns += 1
            if self._turns < self.POLL_EVERY:
                return []
        self._turns = 0
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if ready:
            return ready
        if timeout is None:
            # Nothing scheduled. Only a thread (run_in_executor) can still wake us; give it a
            # real moment, then call it what it is instead of hanging the test forever.
            ready = super().select(5.0)
            if not ready:
                raise SimulationDeadlock("no timer is scheduled and no task can make progress")
            return ready
        if timeout > 0:
            self._loop_ref[0].advance(timeout)
        return ready


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual and jumps to the next scheduled callback."""

    def __init__(self, start: float = 0.0) -> None:
        ref: list[VirtualClockLoop] = []
        super().__init__(_JumpingSelector(ref))
        ref.append(self)
        self._now = start

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


#: The cyclic collector's first threshold while a simulation runs. A ring of thousands of
#: nodes keeps many objects alive, and at the default (700) the collector ran hundreds of
#: times a run for about a tenth of its CPU time; refcounting frees nearly everything anyway.
#: At 100,000 a young collection of a ring of 10,000 forming still took 0.1-0.2 s, 6 % of the
#: run's CPU time in all (3,000 nodes: 1.65 s of GC at 100,000, 0.6 s at 1,000,000, the same
#: peak RSS).
SIM_GC_THRESHOLD = 1_000_000


def run_virtual(main: Awaitable[T]) -> T:
    """Run a coroutine to completion on a fresh :class:`VirtualClockLoop` (with the cyclic
    garbage collector run less often meanwhile, see :data:`SIM_GC_THRESHOLD`)."""

    async def wrapper() -> T:
        return await main

    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], SIM_GC_THRESHOLD), *thresholds[1:])
    try:
        with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
            return runner.run(wrapper())
    finally:
        gc.set_threshold(*thresholds)


# --- the in-memory network ---------------------------------------------------------------------


@dataclass
class SimStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    blocked: int = 0  # dropped by a partition
    unreachable: int = 0  # nobody bound at the destination


class SimTransport(asyncio.DatagramTransport):
    def __init__(
        self, network: SimNetwork, addr: Address, protocol: asyncio.DatagramProtocol
    ) -> None:
        super().__init__()
        self._network = network
        self._addr = addr
        self._protocol = protocol
        self._closing = False

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        if self._closing:
            return
        if type(addr) is not tuple or len(addr) != 2:
            addr = (addr[0], addr[1])
        self._network.send(self._addr, addr, data if type(data) is bytes else bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._addr
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._network.unbind(self._addr, self)
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


class SimNetwork:
    """In-memory datagram delivery, deterministic by seed.

    Each datagram independently may be lost (``loss``), duplicated (``duplicate``) and is
    delayed by a uniform draw from ``latency`` seconds; different delays reorder datagrams.
    ``partition`` splits the network into groups that cannot reach each other.

    Addresses are IPv4 literals, as on a real network. Binding :attr:`host` (``0.0.0.0``, "a
    new machine") gives the endpoint a fresh address of its own in 10.0.0.0/8, drawn from the
    seed, so each simulated node has its own IP (per-IP rate limits see what they would see
    for real) and its default id, SHA-1 of its address, differs from seed to seed. Binding
    another host with port 0 picks a free port on that host.
    """

    MACHINE_PORT = 7000  # the port of each new machine's endpoint (when bound with port 0)

    def __init__(
        self,
        *,
        seed: int = 0,
        latency: tuple[float, float] = (0.005, 0.030),
        loss: float = 0.0,
        duplicate: float = 0.0,
        host: str = "0.0.0.0",
    ) -> None:
        self.rng = random.Random(seed)
        self._address_rng = random.Random(seed ^ 0xADD2E55)  # apart: loss draws do not shift
        self.latency = latency
        self.loss = loss
        self.duplicate = duplicate
        self.host = host
        self.stats = SimStats()
        self._bound: dict[Address, SimTransport] = {}
        self._hosts: set[str] = set()
        self._next_port: dict[str, int] = {}  # host -> where _free_port looks first
        self._group: dict[Address, int] = {}
        self._drop_filter: Callable[[Address, Address, bytes], bool] | None = None
        self._slots: dict[int, list[tuple[Address, Address, bytes]]] = {}  # ms -> datagrams

    def _new_machine(self) -> str:
        for _ in range(1000):
            n = self._address_rng.randrange(1, (1 << 24) - 1)  # not 10.0.0.0, not 10.255.255.255
            host = f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"
            if host not in self._hosts:
                return host
        raise OSError("the simulated network has no free address left")

    def _free_port(self, host: str) -> int:
        """The next free port on ``host`` after the last one handed out, from 10000 up, then
        wrapping round to 1024 (a cursor per host: a scan from 10000 each time made binding
        tens of thousands of endpoints on one host quadratic)."""
        start = self._next_port.get(host, 10000)
        for port in itertools.chain(range(start, 65536), range(1024, start)):
            if (host, port) not in self._bound:
                self._next_port[host] = port + 1 if port < 65535 else 1024
                return port
        raise OSError(f"no free port left on {host}")

    async def bind(
        self, addr: Address, protocol: asyncio.DatagramProtocol
    ) -> asyncio.DatagramTransport:
        host, port = addr
        if host == self.host:
            host, port = self._new_machine(), port or self.MACHINE_PORT
        elif port == 0:
            port = self._free_port(host)
        addr = (host, port)
        if addr in self._bound:
            raise OSError(f"address {format_addr(addr)} already in use")
        transport = SimTransport(self, addr, protocol)
        self._bound[addr] = transport
        self._hosts.add(host)
        protocol.connection_made(transport)
        return transport

    def unbind(self, addr: Address, transport: SimTransport) -> None:
        if self._bound.get(addr) is transport:
            del self._bound[addr]

    def partition(self, *groups: Iterable[Address]) -> None:
        """Only addresses in the same group (or in none) can talk to each other."""
        self._group = {a: i for i, group in enumerate(groups) for a in group}

    def heal(self) -> None:
        self._group = {}

    def set_drop_filter(self, fn: Callable[[Address, Address, bytes], bool] | None) -> None:
        """Drop every datagram for which ``fn(src, dst, data)`` is true (tests' scalpel)."""
        self._drop_filter = fn

    def send(self, src: Address, dst: Address, data: bytes) -> None:
        self.stats.sent += 1
        if self._group and self._group.get(src, -1) != self._group.get(dst, -1):
            self.stats.blocked += 1
            return
        if self._drop_filter is not None and self._drop_filter(src, dst, data):
            self.stats.lost += 1
            return
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            self.stats.lost += 1
            return
        copies = 1
        if self.duplicate and rng.random() < self.duplicate:
            copies = 2
            self.stats.duplicated += 1
        loop = asyncio.get_running_loop()
        low, high = self.latency
        now = loop.time()
        slots = self._slots
        item = (src, dst, data)
        for _ in range(copies):
            # Deliveries fall on whole milliseconds, one timer per millisecond that has any:
            # a timer handle per datagram cost more than the rest of the delivery.
            slot = math.ceil((now + low + (high - low) * rng.random()) * 1000 - 1e-6)
            batch = slots.get(slot)
            if batch is None:
                slots[slot] = [item]
                loop.call_at(slot / 1000, self._deliver_slot, slot)
            else:
                batch.append(item)

    def _deliver_slot(self, slot: int) -> None:
        bound = self._bound
        delivered = unreachable = 0
        try:
            for src, dst, data in self._slots.pop(slot):  # in the order sent
                transport = bound.get(dst)
                if transport is None or transport._closing:
                    unreachable += 1
                    continue
                delivered += 1
                transport._protocol.datagram_received(data, src)
        finally:  # counted once per slot, and right even if a protocol raises
            self.stats.delivered += delivered
            self.stats.unreachable += unreachable
