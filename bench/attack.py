"""What bench/audit.py and bench/flood.py share: node processes, hand-made datagrams, fake nodes.

Nothing here imports the node code: requests are msgpack arrays built by hand from PROTOCOL.md,
so the same attacker runs against any version of udpdht (the interpreter that runs the script
decides which one: its ``udpdht`` package is the one the node children run).

* :class:`Cluster`: ``udpdht node`` child processes in a temporary directory, stdout and stderr
  to files; every child is killed and the directory removed on exit, on an exception or Ctrl-C.
* :class:`Endpoint`: one raw UDP socket on loopback that sends requests, matches answers by
  request id and classifies them (reply, error, token, none), and, given handlers, answers
  requests itself: a fake node.
* :func:`flood_worker`: a sender process for floods (run with multiprocessing), many source
  sockets, a rotating mix of hostile datagrams, counting what comes back.

Answers are classified, never trusted: besides ``[1, 1, rid, result]`` and
``[1, 2, rid, code, message]`` a node may answer ``[1, 3, rid, token]`` ("prove you receive at
this address"). The attacker never retries with a token; the monitor (status polls) does, so
that it can watch a node that wants one.
"""

# Waits here take a plain ``timeout`` in seconds, like the RPC layer's calls.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import os
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgpack

HOST = "127.0.0.1"
BITS = 160
RING = 1 << BITS
MASK = RING - 1
MAX_DATAGRAM = 65507
START_TIMEOUT = 20.0  # seconds for a node process to print its address
KIND_NAMES = {1: "reply", 2: "error", 3: "token"}

Address = tuple[str, int]
Handler = Callable[[dict[str, Any], Address], Any]


# --- ids and the wire --------------------------------------------------------------------------


def sha1_int(data: bytes | str) -> int:
    raw = data.encode() if isinstance(data, str) else data
    return int.from_bytes(hashlib.sha1(raw).digest(), "big")


def node_id(port: int, host: str = HOST) -> int:
    """The default id of a node bound to ``host:port`` (PROTOCOL.md 9.1)."""
    return sha1_int(f"{host}:{port}")


def idb(i: int) -> bytes:
    """An id as it travels: 20 bytes, big-endian."""
    return (i & MASK).to_bytes(20, "big")


def in_open(x: int, a: int, b: int) -> bool:
    """x in the clockwise interval (a, b); (a, a) is every id but a."""
    if a == b:
        return x != a
    return 0 < (x - a) & MASK < (b - a) & MASK


def in_half_open(x: int, a: int, b: int) -> bool:
    """x in (a, b]; (a, a] is the whole ring."""
    return a == b or in_open(x, a, b) or x == b


def distance(a: int, b: int) -> int:
    return (b - a) & MASK


def new_rid() -> int:
    return random.getrandbits(64)


def pack(obj: Any) -> bytes:
    return cast(bytes, msgpack.packb(obj, use_bin_type=True))


def request(rid: int, method: str, args: dict[str, Any], token: Any = None) -> bytes:
    msg: list[Any] = [1, 0, rid, method, args]
    if token is not None:
        msg.append(token)
    return pack(msg)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Answer:
    """What one request got back: the first answer with its rid, classified."""

    kind: str  # reply | error | token | none (nothing within the wait) | other
    result: Any = None
    code: int | None = None
    message: str = ""
    nbytes: int = 0
    seconds: float = 0.0
    token: Any = None

    @property
    def ok(self) -> bool:
        return self.kind == "reply"

    @property
    def answered(self) -> bool:
        return self.kind not in ("none",)

    def short(self) -> str:
        if self.kind == "error":
            return f"error {self.code}: {self.message[:80]}"
        return self.kind

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "bytes": self.nbytes}
        if self.kind == "error":
            out["code"] = self.code
            out["message"] = self.message[:200]
        if self.kind != "none":
            out["seconds"] = round(self.seconds, 4)
        return out


def classify(data: bytes) -> tuple[str, int | None, Any]:
    """(kind, rid, the message) of a datagram; kind 'other' when it is not an answer."""
    try:
        msg = unpack(data)
    except Exception:
        return "other", None, None
    if type(msg) is not list or len(msg) < 3 or msg[0] != 1 or type(msg[2]) is not int:
        return "other", None, msg
    if msg[1] == 0:
        return "request", msg[2], msg
    return KIND_NAMES.get(msg[1], "other"), msg[2], msg


def answer_of(data: bytes, seconds: float) -> Answer:
    kind, _, msg = classify(data)
    ans = Answer(kind if kind != "request" else "other", nbytes=len(data), seconds=seconds)
    if kind == "reply" and len(msg) >= 4:
        ans.result = msg[3]
    elif kind == "error" and len(msg) >= 5:
        ans.code = msg[3] if type(msg[3]) is int else None
        ans.message = msg[4] if isinstance(msg[4], str) else repr(msg[4])
    elif kind == "token" and len(msg) >= 4:
        ans.token = msg[3]
    return ans


# --- a raw endpoint (and fake node) ------------------------------------------------------------


class Refuse(Exception):  # raised by a fake's handler: answer with an error reply
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


IGNORE = object()  # a handler returning this sends no answer


class Endpoint(asyncio.DatagramProtocol):
    """One UDP socket on 127.0.0.1. ``call`` sends a hand-made request and waits for the first
    datagram carrying its rid; ``handlers`` (method -> function) make it answer requests."""

    def __init__(self, handlers: dict[str, Handler] | None = None) -> None:
        self.handlers = handlers or {}
        self.transport: asyncio.DatagramTransport | None = None
        self.addr: Address = (HOST, 0)
        self._waiting: dict[int, asyncio.Future[tuple[bytes, float]]] = {}
        self.received = 0
        self.received_bytes = 0
        self.kinds: Counter[str] = Counter()  # answers that came in, by kind
        self.served: Counter[str] = Counter()  # requests served, by method
        self.requests_seen: Counter[str] = Counter()  # requests received, by method

    @classmethod
    async def open(cls, handlers: dict[str, Handler] | None = None, port: int = 0) -> Endpoint:
        loop = asyncio.get_running_loop()
        ep = cls(handlers)
        transport, _ = await loop.create_datagram_endpoint(lambda: ep, local_addr=(HOST, port))
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        name = transport.get_extra_info("sockname")
        ep.addr = (str(name[0]), int(name[1]))
        return ep

    @property
    def port(self) -> int:
        return self.addr[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable and the like: a call just sees no answer

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.received += 1
        self.received_bytes += len(data)
        kind, rid, msg = classify(data)
        if kind == "request":
            self._serve(msg, (str(addr[0]), int(addr[1])))
            return
        self.kinds[kind] += 1
        if rid is not None:
            fut = self._waiting.get(rid)
            if fut is not None and not fut.done():
                fut.set_result((data, time.perf_counter()))

    def _serve(self, msg: list[Any], src: Address) -> None:
        if len(msg) < 5 or not isinstance(msg[3], str):
            return
        rid, method, args = msg[2], msg[3], msg[4]
        self.requests_seen[method] += 1
        handler = self.handlers.get(method)
        if handler is None or not isinstance(args, dict):
            return
        try:
            result = handler(args, src)
        except Refuse as exc:
            self.send(pack([1, 2, rid, exc.code, f"{method}: {exc.message}"]), src)
            self.served[method] += 1
            return
        except Exception as exc:  # a bug in a fake must not kill the benchmark
            print(f"fake handler {method} failed: {exc!r}", file=sys.stderr)
            return
        if result is IGNORE:
            return
        self.served[method] += 1
        self.send(pack([1, 1, rid, result]), src)

    def send(self, data: bytes, addr: Address) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)

    async def call(
        self,
        addr: Address,
        method: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float = 2.0,
        tries: int = 1,
        use_token: bool = False,
        rid: int | None = None,
    ) -> Answer:
        """Send one request (``tries`` times, ``timeout`` each) and classify the first answer.

        With ``use_token`` a token answer is followed by one retry carrying the token (the
        monitor does that; the attacker never does).
        """
        rid = new_rid() if rid is None else rid
        data = request(rid, method, args or {})
        ans = await self.send_wait(addr, data, rid, timeout=timeout, tries=tries)
        if use_token and ans.kind == "token":
            data = request(rid, method, args or {}, ans.token)
            again = await self.send_wait(addr, data, rid, timeout=timeout, tries=tries)
            again.seconds += ans.seconds
            return again
        return ans

    async def send_wait(
        self,
        addr: Address,
        data: bytes,
        rid: int,
        *,
        timeout: float = 2.0,
        tries: int = 1,
    ) -> Answer:
        """Send ``data`` (a request with id ``rid``) and wait for the first answer with that id."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        for _ in range(max(1, tries)):
            fut: asyncio.Future[tuple[bytes, float]] = loop.create_future()
            self._waiting[rid] = fut
            self.send(data, addr)
            try:
                reply, at = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                continue
            finally:
                self._waiting.pop(rid, None)
            return answer_of(reply, at - start)
        return Answer("none", seconds=time.perf_counter() - start)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


async def one_shot(
    addr: Address,
    method: str,
    args: dict[str, Any] | None = None,
    *,
    timeout: float = 2.0,
) -> Answer:
    """One request from a fresh socket, closed afterwards."""
    ep = await Endpoint.open()
    try:
        return await ep.call(addr, method, args, timeout=timeout)
    finally:
        ep.close()


# --- node processes ----------------------------------------------------------------------------

_LISTENING = re.compile(rb"listening on (\S+):(\d+)")
_LIVE: dict[int, subprocess.Popen[bytes]] = {}  # every child still running, by pid
_DIRS: set[str] = set()


def _cleanup_all() -> None:
    """Kill every child this process started (by pid) and remove every temp dir."""
    for pid, proc in list(_LIVE.items()):
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        _LIVE.pop(pid, None)
    for d in list(_DIRS):
        shutil.rmtree(d, ignore_errors=True)
        _DIRS.discard(d)


atexit.register(_cleanup_all)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP end the benchmark like Ctrl-C: cleanup runs."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


@dataclass
class NodeProc:
    name: str
    proc: subprocess.Popen[bytes]
    addr: Address
    data_dir: Path
    out_path: Path
    err_path: Path

    @property
    def id(self) -> int:
        return node_id(self.addr[1], self.addr[0])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peer(self) -> list[Any]:
        """This node as a peer on the wire: [id, host, port]."""
        return [idb(self.id), self.addr[0], self.addr[1]]

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM in kB (empty once the process is gone)."""
        out: dict[str, int] = {}
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return out
        for line in text.splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])
        return out

    def rss_mb(self) -> float | None:
        kb = self.memory().get("VmRSS")
        return None if kb is None else round(kb / 1024, 1)

    def hwm_mb(self) -> float | None:
        kb = self.memory().get("VmHWM")
        return None if kb is None else round(kb / 1024, 1)

    def log_size(self) -> int:
        """Bytes the node wrote to stdout and stderr so far."""
        total = 0
        for p in (self.out_path, self.err_path):
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def log_text(self, start: int = 0) -> str:
        """stderr from byte ``start`` on (the node logs there)."""
        try:
            with self.err_path.open("rb") as f:
                f.seek(start)
                return f.read(50 << 20).decode(errors="replace")
        except OSError:
            return ""

    def err_size(self) -> int:
        try:
            return self.err_path.stat().st_size
        except OSError:
            return 0


class Cluster:
    """``udpdht node`` children in one temp dir. ``with Cluster("asyncio") as c: ...``.

    Children run ``sys.executable -m udpdht`` with their working directory in the temp dir, so
    the interpreter's installed ``udpdht`` is the code under test (not a checkout in the
    current directory), ``XDG_DATA_HOME`` in the temp dir and ``UDPDHT_LOOP`` set to the loop.
    """

    def __init__(self, loop_name: str, prefix: str = "udpdht-audit-") -> None:
        self.loop_name = loop_name
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        _DIRS.add(str(self.root))
        (self.root / "xdg").mkdir()
        self.nodes: list[NodeProc] = []
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "XDG_DATA_HOME": str(self.root / "xdg"),
            "UDPDHT_LOOP": loop_name,
            "NO_COLOR": "1",
        }

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def data_dir(self, name: str) -> Path:
        return self.root / "data" / name

    async def start(
        self,
        name: str,
        bootstrap: Iterable[NodeProc | Address] = (),
        *,
        extra: Iterable[str] = (),
    ) -> NodeProc:
        """Start a node and wait (at most START_TIMEOUT) for its ``listening on`` line."""
        data_dir = self.data_dir(name)
        data_dir.mkdir(parents=True, exist_ok=True)
        out_path, err_path = self.root / f"{name}.out", self.root / f"{name}.err"
        cmd = [sys.executable, "-m", "udpdht", "node", "--port", "0", "--host", HOST]
        cmd += ["--data-dir", str(data_dir), *extra]
        boots = [b.addr if isinstance(b, NodeProc) else b for b in bootstrap]
        if boots:
            cmd += ["--bootstrap", *(f"{h}:{p}" for h, p in boots)]
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(  # noqa: ASYNC220  (starting a child does not block)
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.root,
                env=self.env,
                start_new_session=True,  # Ctrl-C reaches us, and we kill the children
            )
        _LIVE[proc.pid] = proc
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            match = _LISTENING.search(out_path.read_bytes())
            if match:
                addr = (match.group(1).decode(), int(match.group(2)))
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                self._kill(proc)
                tail = err_path.read_bytes()[-2000:].decode(errors="replace")
                raise RuntimeError(f"node {name} did not start (exit {proc.poll()}): {tail}")
            await asyncio.sleep(0.05)
        node = NodeProc(name, proc, addr, data_dir, out_path, err_path)
        self.nodes.append(node)
        return node

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        _LIVE.pop(proc.pid, None)

    def kill(self, node: NodeProc) -> None:
        self._kill(node.proc)

    def close(self) -> None:
        for node in self.nodes:
            self._kill(node.proc)
        shutil.rmtree(self.root, ignore_errors=True)
        _DIRS.discard(str(self.root))


# --- watching the ring -------------------------------------------------------------------------


class Monitor:
    """Status polls through one socket, with token retries: the honest observer."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep

    @classmethod
    async def open(cls) -> Monitor:
        return cls(await Endpoint.open())

    def close(self) -> None:
        self.ep.close()

    async def status(
        self,
        node: NodeProc | Address,
        *,
        timeout: float = 1.0,
        tries: int = 3,
    ) -> dict[str, Any] | None:
        addr = node.addr if isinstance(node, NodeProc) else node
        ans = await self.ep.call(addr, "status", timeout=timeout, tries=tries, use_token=True)
        return ans.result if ans.ok and isinstance(ans.result, dict) else None

    async def statuses(
        self,
        nodes: list[NodeProc],
        *,
        timeout: float = 1.0,
        tries: int = 3,
    ) -> list[dict[str, Any] | None]:
        return list(
            await asyncio.gather(*(self.status(n, timeout=timeout, tries=tries) for n in nodes))
        )

    async def call(self, node: NodeProc, method: str, args: dict[str, Any]) -> Answer:
        return await self.ep.call(node.addr, method, args, timeout=2.0, tries=3, use_token=True)


def view(st: dict[str, Any] | None) -> dict[str, Any]:
    """A node's leafset from its status: successor and predecessor ids (ints)."""
    if st is None:
        return {"answered": False}
    pred = st.get("predecessor")
    return {
        "answered": True,
        "succs": [int(p["id"], 16) for p in st.get("successors", [])],
        "preds": [int(p["id"], 16) for p in st.get("predecessors", [])],
        "pred": int(pred["id"], 16) if pred else None,
    }


def is_ideal(nodes: list[NodeProc], sts: list[dict[str, Any] | None], half: int = 8) -> bool:
    """Every node answers, and lists the true next ``half`` nodes (L/2; 8 by default) as its
    successors and the true previous ones as its predecessors, nearest first. (As
    udpdht.sim.status_problems; written again here, where nothing imports udpdht.)"""
    ring = sorted(n.id for n in nodes)
    n = len(ring)
    k = min(half, n - 1)
    for node, st in zip(nodes, sts, strict=True):
        v = view(st)
        if not v["answered"]:
            return False
        i = ring.index(node.id)
        if v["succs"] != [ring[(i + j) % n] for j in range(1, k + 1)]:
            return False
        if v["preds"] != [ring[(i - j) % n] for j in range(1, k + 1)]:
            return False
    return True


async def wait_formed(
    mon: Monitor, nodes: list[NodeProc], *, within: float = 30.0, ideal: bool = True
) -> float | None:
    """Seconds until every node has n-1 successors (and, with ``ideal``, the ideal ring);
    None if the deadline passed."""
    start = time.monotonic()
    want = len(nodes) - 1
    while time.monotonic() - start < within:
        sts = await mon.statuses(nodes)
        if ideal and is_ideal(nodes, sts):
            return time.monotonic() - start
        if not ideal and all(st is not None and len(st["successors"]) >= want for st in sts):
            return time.monotonic() - start
        await asyncio.sleep(0.3)
    return None


async def start_ring(
    cluster: Cluster, mon: Monitor, names: Iterable[str] = ("A", "B", "C"), within: float = 40.0
) -> list[NodeProc]:
    """Start the first node alone and the others through it; wait for the ideal ring."""
    names = list(names)
    first = await cluster.start(names[0])
    rest = await asyncio.gather(*(cluster.start(n, [first]) for n in names[1:]))
    nodes = [first, *rest]
    if await wait_formed(mon, nodes, within=within) is None:
        raise RuntimeError(f"the ring of {len(nodes)} did not form within {within} s")
    return nodes


def ring_order(nodes: list[NodeProc]) -> list[NodeProc]:
    return sorted(nodes, key=lambda n: n.id)


def predecessor_of(victim: NodeProc, nodes: list[NodeProc]) -> NodeProc:
    """The node just before ``victim`` on the ring (from the ids alone)."""
    others = [n for n in nodes if n is not victim]
    return min(others, key=lambda n: distance(n.id, victim.id))


def keys_in(
    lo: int, hi: int, count: int, prefix: bytes = b"k", limit: int = 10_000_000
) -> list[bytes]:
    """``count`` distinct random keys whose id lies in (lo, hi]."""
    out: list[bytes] = []
    salt = os.urandom(4).hex().encode()
    for i in range(limit):
        key = prefix + salt + b"-" + str(i).encode()
        if in_half_open(sha1_int(key), lo, hi):
            out.append(key)
            if len(out) == count:
                break
    return out


def find_port_id(lo: int, hi: int, ports: range = range(20000, 65001)) -> list[tuple[int, int]]:
    """(port, id) with ``sha1("127.0.0.1:port")`` inside (lo, hi), nearest to ``hi`` first."""
    found = [(p, node_id(p)) for p in ports]
    inside = [(p, i) for p, i in found if in_open(i, lo, hi)]
    return sorted(inside, key=lambda pi: distance(pi[1], hi))


async def bind_fake_at(
    candidates: list[tuple[int, int]], handlers: dict[str, Handler], tries: int = 200
) -> tuple[Endpoint, int] | None:
    """Bind the first free port of ``candidates``; (endpoint, its id)."""
    for port, ident in candidates[:tries]:
        try:
            return await Endpoint.open(handlers, port=port), ident
        except OSError:
            continue
    return None


def dir_bytes(paths: Iterable[Path]) -> int:
    """Apparent size of every file under these directories."""
    total = 0
    for root in paths:
        for dirpath, _, files in os.walk(root):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(dirpath, f)).st_size
    return total


async def sample_memory(
    node: NodeProc, seconds: float, every: float = 0.1
) -> tuple[float | None, list[float]]:
    """Sample the node's VmRSS (MB) every ``every`` s for ``seconds``: (peak, samples)."""
    samples: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rss = node.rss_mb()
        if rss is not None:
            samples.append(rss)
        await asyncio.sleep(every)
    return (max(samples) if samples else None), samples


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 1)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary(values: list[float]) -> dict[str, float | int | None]:
    """p50, p99 and max in milliseconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)

    return {
        "n": len(values),
        "p50_ms": ms(percentile(values, 0.5)),
        "p99_ms": ms(percentile(values, 0.99)),
        "max_ms": ms(max(values) if values else None),
    }


# --- the flood sender (a separate process) -----------------------------------------------------


@dataclass
class FloodSpec:
    """What one sender process sends. Picklable: it crosses into a spawned process."""

    target: Address
    kinds: list[str]  # rotation of message kinds, see _Messages
    count: int  # datagrams to send at most
    seconds: float  # and for at most this long
    sockets: int = 64
    seed: int = 0
    target_id: int = 0
    others: list[int] = field(default_factory=list)  # ids of the other nodes (for 'leaving')
    key: bytes = b""  # a stored key (for 'get', 'store_read', 'lookup')
    put_keys: list[bytes] = field(default_factory=list)  # for 'put_keys': one put per key
    value_size: int = 59_990  # value bytes for 'put_keys' and 'push_big'
    drain_s: float = 1.0  # seconds to keep reading answers after the last send
    hosts: list[str] = field(default_factory=lambda: [HOST])  # source addresses, in turn


def _template(method: str, args: dict[str, Any]) -> bytes:
    """A request whose rid is encoded as uint64 at bytes 4..12, to be patched per send."""
    data = request(1 << 63, method, args)
    assert data[3] == 0xCF
    return data


class _Messages:
    """Hostile datagrams of each kind, made cheaply: templates with a fresh rid patched in."""

    def __init__(self, spec: FloodSpec, rng: random.Random, addrs: list[Address]) -> None:
        self.spec = spec
        self.rng = rng
        tid = idb(spec.target_id)
        valid = [
            request(rng.getrandbits(64), "ping", {}),
            request(rng.getrandbits(64), "status", {}),
            request(rng.getrandbits(64), "find", {"key": os.urandom(20)}),
            request(rng.getrandbits(64), "neighbors", {"id": os.urandom(20)}),
            request(rng.getrandbits(64), "get", {"key": spec.key or b"k"}),
        ]
        self.garbage = [rng.randbytes(rng.randint(1, 1400)) for _ in range(512)]
        self.truncated = [m[: rng.randint(1, max(1, len(m) - 1))] for m in valid for _ in range(40)]
        self.bitflip = []
        for m in valid:
            for _ in range(40):
                b = bytearray(m)
                for _ in range(rng.randint(1, 3)):
                    b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
                self.bitflip.append(bytes(b))
        whole = {"lo": tid, "hi": tid, "after": None, "values": True}
        self.templates: dict[str, bytes] = {
            "ping": _template("ping", {}),
            "status": _template("status", {}),
            "neighbors": _template("neighbors", {"id": os.urandom(20)}),
            "find": _template("find", {"key": os.urandom(20)}),
            "get": _template("get", {"key": spec.key or b"k"}),
            "store_read": _template("store_read", {"keys": [spec.key or b"k"]}),
            "store_scan": _template("store_scan", whole),
            "store_digest": _template("store_digest", {"lo": tid, "hi": tid}),
            "lookup": _template("lookup", {"key": spec.key or b"k"}),
        }
        # One per sending socket (by its index): the id that matches that socket's address.
        self.notify = [
            _template("notify", {"id": idb(node_id(port, host)), "preds": []})
            for host, port in addrs
        ]
        others = spec.others or [spec.target_id ^ 1]
        self.leaving = [_template("leaving", {"id": idb(i)}) for i in others]
        self.pushes = [self._junk_push() for _ in range(64)]
        self.big_value = rng.randbytes(spec.value_size)
        self.put_index = 0

    def _junk_push(self) -> bytes:
        rng = self.rng
        records: list[Any] = []
        for _ in range(rng.randint(1, 4)):
            roll = rng.random()
            if roll < 0.7:  # well-formed junk: random key, value, stamp, writer
                records.append(
                    [
                        rng.randbytes(rng.randint(1, 40)),
                        rng.randbytes(rng.randint(0, 200)),
                        rng.randrange(1 << 63),
                        rng.randbytes(20),
                        None,
                    ]
                )
            elif roll < 0.85:  # a tombstone that never expires
                records.append([rng.randbytes(16), None, rng.randrange(1 << 63), b"w" * 20, 1e300])
            else:  # malformed
                records.append([rng.randbytes(8), 12, "x", None])
        return _template("store_push", {"records": records})

    def make(self, kind: str, sock: int) -> bytes:
        """A datagram of ``kind`` for the socket numbered ``sock`` to send."""
        rid = self.rng.getrandbits(64).to_bytes(8, "big")
        tpl = self.templates.get(kind)
        if tpl is not None:
            return tpl[:4] + rid + tpl[12:]
        if kind == "garbage":
            return self.rng.choice(self.garbage)
        if kind == "truncated":
            return self.rng.choice(self.truncated)
        if kind == "bitflip":
            return self.rng.choice(self.bitflip)
        if kind == "notify":
            tpl = self.notify[sock]
            return tpl[:4] + rid + tpl[12:]
        if kind == "leaving":
            tpl = self.rng.choice(self.leaving)
            return tpl[:4] + rid + tpl[12:]
        if kind == "store_push":
            tpl = self.rng.choice(self.pushes)
            return tpl[:4] + rid + tpl[12:]
        if kind == "push_big":
            rec = [os.urandom(16), self.big_value, now_ms(), os.urandom(20), None]
            return request(int.from_bytes(rid, "big"), "store_push", {"records": [rec]})
        if kind == "put_keys":
            keys = self.spec.put_keys
            key = keys[self.put_index % len(keys)] if keys else os.urandom(16)
            self.put_index += 1
            args = {"key": key, "value": self.big_value, "ttl": None}
            return request(int.from_bytes(rid, "big"), "put", args)
        raise ValueError(f"unknown flood kind {kind!r}")


def _drain(sel: selectors.BaseSelector, stats: dict[str, Any]) -> None:
    """Read every datagram waiting on any socket; count bytes and answer kinds."""
    for key, _ in sel.select(0):
        sock = cast(socket.socket, key.fileobj)
        for _ in range(10_000):  # bounded: a socket's buffer holds far fewer
            try:
                data = sock.recv(70_000)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                stats["recv_errors"] += 1
                break
            stats["recv"] += 1
            stats["recv_bytes"] += len(data)
            kind = "other"
            if len(data) > 3 and data[0] in (0x94, 0x95, 0x96) and data[1] == 1:
                kind = "request" if data[2] == 0 else KIND_NAMES.get(data[2], "other")
            if kind == "error" and len(data) < 2000:
                with contextlib.suppress(Exception):
                    kind = f"error {unpack(data)[3]}"
            stats["answers"][kind] = stats["answers"].get(kind, 0) + 1


def flood_worker(spec: FloodSpec, out: Any) -> None:
    """Send ``spec.count`` datagrams (or for ``spec.seconds``) from ``spec.sockets`` sockets,
    rotating through ``spec.kinds``; put a dict of counts on the queue ``out``."""
    rng = random.Random(spec.seed)
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    stats: dict[str, Any] = {
        "sent": 0,
        "sent_bytes": 0,
        "send_errors": 0,
        "would_block": 0,
        "recv": 0,
        "recv_bytes": 0,
        "recv_errors": 0,
        "answers": {},
        "by_kind": {},
    }
    try:
        for i in range(spec.sockets):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind((spec.hosts[i % len(spec.hosts)], 0))
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_READ)
        msgs = _Messages(spec, rng, [s.getsockname()[:2] for s in socks])
        kinds = spec.kinds
        by_kind = dict.fromkeys(kinds, 0)
        nk, ns = len(kinds), len(socks)
        start = time.perf_counter()
        end = start + spec.seconds
        target = spec.target
        i = 0
        while i < spec.count:
            if i % 256 == 0:
                _drain(sel, stats)
                if time.perf_counter() > end:
                    break
            kind = kinds[i % nk]
            j = (i // nk) % ns
            data = msgs.make(kind, j)
            try:
                socks[j].sendto(data, target)
                stats["sent_bytes"] += len(data)
                by_kind[kind] += 1
            except (BlockingIOError, InterruptedError):
                stats["would_block"] += 1
                _drain(sel, stats)
            except OSError:
                stats["send_errors"] += 1
            i += 1
        stats["sent"] = sum(by_kind.values())
        stats["attempts"] = i
        stats["seconds"] = time.perf_counter() - start
        stats["by_kind"] = by_kind
        drain_end = time.perf_counter() + spec.drain_s
        while time.perf_counter() < drain_end:
            _drain(sel, stats)
            time.sleep(0.02)
    finally:
        for s in socks:
            s.close()
        sel.close()
        out.put(stats)


def merge_flood_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the counts of several sender processes."""
    total: dict[str, Any] = {"answers": {}, "by_kind": {}}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, dict):
                for kk, vv in v.items():
                    total[k][kk] = total[k].get(kk, 0) + vv
            elif k == "seconds":
                total[k] = max(total.get(k, 0.0), v)
            else:
                total[k] = total.get(k, 0) + v
    return total


async def run_flood(specs: list[FloodSpec], timeout: float) -> dict[str, Any]:
    """Run one sender process per spec (spawned, so the parent's event loop stays out of it)
    and wait for all, at most ``timeout`` seconds; the processes are always ended."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=flood_worker, args=(s, queue), daemon=True) for s in specs]
    results: list[dict[str, Any]] = []
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        while len(results) < len(procs) and time.monotonic() < deadline:
            try:
                results.append(queue.get_nowait())
            except Exception:
                await asyncio.sleep(0.05)
    finally:
        for p in procs:
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        queue.close()
    merged = merge_flood_stats(results)
    merged["processes_reported"] = len(results)
    return merged
