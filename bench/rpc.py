"""Throughput and latency of ``udpdht.rpc.RpcEndpoint`` against a bare UDP echo, side by side.

What is measured
    Small request/response calls (``echo({"x": <payload bytes>})``) over real UDP sockets on
    127.0.0.1, with a fixed number of calls in flight (``--concurrency`` worker tasks, each
    waiting for its reply before sending the next request). For every call the client records
    its latency with ``time.perf_counter``; for every measurement it records the calls per
    second and the CPU time of this process per call over the timed section (untimed warm-up
    batches run first). CPU per call is the steadier figure when the host is busy. In
    two-process mode the server child's CPU per call is measured too (its
    ``time.process_time()``, asked over a ``cpu`` call before and after each timed batch): the
    throughput is bounded by the busier of the two processes. The table's ``rpc cpu`` and
    ``echo cpu`` columns are microseconds of CPU a call: ``client/server`` in two-process
    mode, both sides in the one process in one-process mode; the lowest of the rounds.

The two implementations
    * ``rpc``: an :class:`~udpdht.rpc.RpcEndpoint` serving a plain (sync) handler, called with
      ``RpcEndpoint.call``: request ids from the OS RNG, a retransmission timer per call, the
      per-peer RTT estimate, the reply cache on the serving side, stats.
    * ``echo``: the limit for this codec on this loop. A server ``DatagramProtocol`` that
      decodes each datagram with :mod:`udpdht.wire` and sends back ``encode_reply(rid, args)``,
      and a client that keeps ``rid -> future`` and resolves the future on reply: no timers, no
      retries, no RTT estimate, no reply cache. Same codec, payload, sockets and concurrency.

Why side by side
    The machine is shared and noisy, so absolute numbers drift from run to run. Each
    configuration runs ``echo, rpc, echo, rpc, ...`` (``--rounds``) in the same process and the
    best round of each is kept; the ratio ``rpc / echo`` is the figure that means something:
    the share of the bare codec-plus-socket throughput that the RPC layer keeps.

Configurations
    * loop: the standard asyncio loop, and uvloop when importable (``--no-uvloop`` to skip);
    * mode ``one-process``: server and client endpoints on the same event loop;
    * mode ``two-process``: the servers in a child process (this file run with the hidden
      ``--serve LOOP`` flag, which prints its ports and exits when its stdin closes), the
      client in this process. Two-process on the best loop is the headline configuration.

Usage::

    python bench/rpc.py            # human table (about 15 s on two cores)
    python bench/rpc.py --json     # one JSON object on stdout, progress on stderr
    python bench/rpc.py --quick    # smoke test: a few thousand calls, one round
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import math
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

try:
    import udpdht  # noqa: F401  (installed editable in the venv; else run from a checkout)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import PURE_MISS, HelpFormatter, build, positive, progress  # bench/common.py

from udpdht import wire
from udpdht.errors import DhtError
from udpdht.net import Address, UdpNetwork, fit_receive_size, tune_gc
from udpdht.net import run as run_loop
from udpdht.rpc import RpcEndpoint

HOST = "127.0.0.1"
METHOD = "echo"
TARGET_RATIO = 0.9  # issue #11: rpc throughput >= 0.9 x echo
TARGET_P99 = 2.0  # ... and rpc p99 <= 2 x echo p99
MEASURE_TIMEOUT = 120.0  # seconds for one measurement; a lost echo datagram is never retried
CHILD_START_TIMEOUT = 20.0
CHILD_MAX_LIFETIME = 900.0  # the server child stops on its own even if nobody closes its stdin
ONE, TWO = "one-process", "two-process"

Call = Callable[[Address, str, dict[str, Any]], Awaitable[Any]]
ChildPorts = tuple[int, int]  # (rpc port, echo port) of the server child


# --- the bare echo baseline --------------------------------------------------------------------


class EchoServer(asyncio.DatagramProtocol):
    """Decode, answer ``encode_reply(rid, args)``: the least a server can do with this codec."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        fit_receive_size(transport)  # as RpcEndpoint: the baseline pays no cost it avoids

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            msg = wire.decode(data)
        except DhtError:
            return
        if type(msg) is wire.Request and self.transport is not None:
            self.transport.sendto(wire.encode_reply(msg.rid, msg.args), addr)


class EchoClient(asyncio.DatagramProtocol):
    """``rid -> future``; resolve on reply. No timers, no retries, no RTT estimate."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        # Start high so that request ids encode to the same 9 bytes as RpcEndpoint's 64-bit ones.
        self._next_rid = 1 << 63
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        fit_receive_size(transport)  # as RpcEndpoint: the baseline pays no cost it avoids

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            msg = wire.decode(data)
        except DhtError:
            return
        if type(msg) is wire.Reply:
            future = self._pending.pop(msg.rid, None)
            if future is not None and not future.done():
                future.set_result(msg.result)

    async def call(self, addr: Address, method: str, args: dict[str, Any]) -> Any:
        assert self.transport is not None
        rid = self._next_rid
        self._next_rid += 1
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = future
        self.transport.sendto(wire.encode_request(rid, method, args), addr)
        return await future

    def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self.transport is not None:
            self.transport.close()


CPU_METHOD = "cpu"


def echo_handler(args: dict[str, Any], peer: Address) -> Any:
    return args


async def bind_echo_server() -> tuple[EchoServer, Address]:
    server = EchoServer()
    transport = await UdpNetwork().bind((HOST, 0), server)
    sockname = transport.get_extra_info("sockname")
    return server, (str(sockname[0]), int(sockname[1]))


async def bind_echo_client() -> EchoClient:
    client = EchoClient()
    await UdpNetwork().bind((HOST, 0), client)
    return client


async def bind_rpc_server() -> RpcEndpoint:
    server = await RpcEndpoint.bind(UdpNetwork(), (HOST, 0))
    server.register(METHOD, echo_handler)
    # The serving process's CPU seconds (two-process mode asks its child before and after each
    # timed batch, outside the timing: what serving one kind of call cost that process).
    server.register(CPU_METHOD, lambda args, peer: time.process_time(), idempotent=True)
    return server


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Sample:
    """One timed batch of calls."""

    per_s: float
    p50_us: float
    p99_us: float
    cpu_us: float  # CPU time of this process per call: steadier than wall time on a busy host
    server_cpu_us: float | None = None  # the server child's per call (two-process mode)


@dataclass
class Row:
    loop: str
    mode: str
    rpc: list[Sample] = field(default_factory=list)
    echo: list[Sample] = field(default_factory=list)
    rpc_retries: int = 0
    rpc_timeouts: int = 0

    @staticmethod
    def best(samples: list[Sample]) -> Sample:
        return max(samples, key=lambda s: s.per_s)

    def as_dict(self) -> dict[str, Any]:
        rpc, echo = self.best(self.rpc), self.best(self.echo)
        return {
            "loop": self.loop,
            "mode": self.mode,
            "rpc_per_s": round(rpc.per_s, 1),
            "echo_per_s": round(echo.per_s, 1),
            "ratio": round(rpc.per_s / echo.per_s, 4),
            # Each round's rpc/echo (a pair measured back to back): the spread of the ratio.
            "round_ratios": [
                round(r.per_s / e.per_s, 4) for r, e in zip(self.rpc, self.echo, strict=True)
            ],
            "p50_us": round(rpc.p50_us, 1),
            "p99_us": round(rpc.p99_us, 1),
            "echo_p50_us": round(echo.p50_us, 1),
            "echo_p99_us": round(echo.p99_us, 1),
            # CPU of the measuring process per call, the lowest of the rounds: client and server
            # together in one-process mode, the client only in two-process mode.
            "rpc_cpu_us_per_call": round(min(s.cpu_us for s in self.rpc), 2),
            "echo_cpu_us_per_call": round(min(s.cpu_us for s in self.echo), 2),
            # The server child's CPU per call, the lowest of the rounds (two-process mode; else
            # None).
            "rpc_server_cpu_us_per_call": _least(s.server_cpu_us for s in self.rpc),
            "echo_server_cpu_us_per_call": _least(s.server_cpu_us for s in self.echo),
            "rpc_rounds_per_s": [round(s.per_s, 1) for s in self.rpc],
            "echo_rounds_per_s": [round(s.per_s, 1) for s in self.echo],
            "rpc_retries": self.rpc_retries,
            "rpc_timeouts": self.rpc_timeouts,
        }


def _least(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(min(known), 2) if known else None


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def _worker(
    call: Call, addr: Address, args: dict[str, Any], budget: list[int], latencies: list[float]
) -> None:
    clock = time.perf_counter
    while budget[0] > 0:  # every iteration takes one call off the shared budget
        budget[0] -= 1
        start = clock()
        await call(addr, METHOD, args)
        latencies.append(clock() - start)


async def _batch(
    call: Call, addr: Address, args: dict[str, Any], calls: int, concurrency: int
) -> tuple[float, float, list[float]]:
    """Run ``calls`` calls, ``concurrency`` at a time: (wall seconds, CPU seconds, latencies)."""
    budget = [calls]
    latencies: list[float] = []
    workers = [_worker(call, addr, args, budget, latencies) for _ in range(concurrency)]
    cpu, start = time.process_time(), time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*workers), MEASURE_TIMEOUT)
    return time.perf_counter() - start, time.process_time() - cpu, latencies


async def measure(
    call: Call,
    addr: Address,
    args: dict[str, Any],
    calls: int,
    warmup: int,
    concurrency: int,
    server_cpu: Callable[[], Awaitable[float]] | None = None,
) -> Sample:
    """One timed batch; ``server_cpu``: reads the serving process's CPU seconds (its change
    over the batch, per call, is the sample's ``server_cpu_us``)."""
    result = await call(addr, METHOD, args)
    if result != args:
        raise RuntimeError(f"echo returned {result!r}, expected {args!r}")
    await _batch(call, addr, args, warmup, concurrency)
    gc.collect()
    served = await server_cpu() if server_cpu is not None else 0.0
    elapsed, cpu, latencies = await _batch(call, addr, args, calls, concurrency)
    served = (await server_cpu() - served) if server_cpu is not None else -1.0
    latencies.sort()
    return Sample(
        per_s=calls / elapsed,
        p50_us=percentile(latencies, 0.50) * 1e6,
        p99_us=percentile(latencies, 0.99) * 1e6,
        cpu_us=cpu / calls * 1e6,
        server_cpu_us=served / calls * 1e6 if served >= 0 else None,
    )


@dataclass(frozen=True)
class Settings:
    calls: int
    warmup: int  # untimed calls before each timed batch
    warmup_s: float  # seconds of alternating untimed batches before a mode's first round
    rounds: int
    concurrency: int
    payload: int
    modes: tuple[str, ...]
    gc: str = "tuned"  # "tuned": net.tune_gc() in both processes, as a node process runs


async def warm_up(
    pairs: list[tuple[Call, Address]], args: dict[str, Any], settings: Settings
) -> None:
    """Alternate unrecorded batches on every implementation for ``settings.warmup_s`` seconds.

    On the 2-core VM this was written on, the first second or so of a fresh process often
    runs at a third of the later rate for echo and rpc alike (the time goes into recvfrom);
    no recorded sample should pay for that.
    """
    deadline = time.perf_counter() + settings.warmup_s
    for _ in range(1000):  # bounded; the deadline normally ends it after a few batches
        for call, addr in pairs:
            await _batch(call, addr, args, settings.warmup, settings.concurrency)
        if time.perf_counter() >= deadline:
            return


async def bench_mode(
    loop_name: str, mode: str, settings: Settings, child_ports: ChildPorts | None
) -> Row:
    """Interleaved echo/rpc rounds of one mode on the running loop.

    ``child_ports`` = (rpc port, echo port) of the server child in two-process mode.
    """
    args: dict[str, Any] = {"x": os.urandom(settings.payload)}
    row = Row(loop_name, mode)
    rpc_server: RpcEndpoint | None = None
    echo_server: EchoServer | None = None
    client = await RpcEndpoint.bind(UdpNetwork(), (HOST, 0))
    echo_client = await bind_echo_client()
    try:
        if mode == ONE:
            rpc_server = await bind_rpc_server()
            echo_server, echo_addr = await bind_echo_server()
            rpc_addr = rpc_server.addr
        else:
            assert child_ports is not None
            rpc_addr, echo_addr = (HOST, child_ports[0]), (HOST, child_ports[1])
        impls: list[tuple[str, Call, Address, list[Sample]]] = [
            ("echo", echo_client.call, echo_addr, row.echo),
            ("rpc", client.call, rpc_addr, row.rpc),
        ]
        await warm_up([(call, addr) for _, call, addr, _ in impls], args, settings)
        server_cpu = None
        if mode == TWO:

            async def server_cpu() -> float:
                return float(await client.call(rpc_addr, CPU_METHOD))

        for n in range(settings.rounds):
            for kind, call, addr, samples in impls:
                sample = await measure(
                    call,
                    addr,
                    args,
                    settings.calls,
                    settings.warmup,
                    settings.concurrency,
                    server_cpu,
                )
                samples.append(sample)
                served = (
                    f" (server {sample.server_cpu_us:5.1f})"
                    if sample.server_cpu_us is not None
                    else ""
                )
                progress(
                    f"  {loop_name:7} {mode:11} round {n + 1}/{settings.rounds} {kind:4}: "
                    f"{sample.per_s:9.0f} calls/s  p50 {sample.p50_us:7.1f} us  "
                    f"p99 {sample.p99_us:7.1f} us  cpu {sample.cpu_us:5.1f}{served} us/call"
                )
        row.rpc_retries = client.stats.retries
        row.rpc_timeouts = client.stats.timeouts
    finally:
        client.close()
        echo_client.close()
        if rpc_server is not None:
            rpc_server.close()
        if echo_server is not None and echo_server.transport is not None:
            echo_server.transport.close()
    return row


# --- the server child --------------------------------------------------------------------------


async def serve() -> None:
    """Child side of two-process mode: print ``RPC_PORT ECHO_PORT``, serve until stdin closes."""
    loop = asyncio.get_running_loop()
    rpc_server = await bind_rpc_server()
    echo_server, echo_addr = await bind_echo_server()
    stop: asyncio.Future[None] = loop.create_future()
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:  # EOF (the parent closed the pipe or died) or any byte: stop
        os.read(stdin, 4096)
        if not stop.done():
            stop.set_result(None)

    loop.add_reader(stdin, on_stdin)
    try:
        print(f"{rpc_server.addr[1]} {echo_addr[1]}", flush=True)
        await asyncio.wait_for(stop, CHILD_MAX_LIFETIME)
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(stdin)
        rpc_server.close()
        if echo_server.transport is not None:
            echo_server.transport.close()


def start_child(loop_name: str, gc_mode: str) -> tuple[subprocess.Popen[bytes], ChildPorts]:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve", loop_name, "--gc", gc_mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(CHILD_START_TIMEOUT):
                raise RuntimeError(f"server child did not start in {CHILD_START_TIMEOUT} s")
        line = proc.stdout.readline().decode().split()
        if len(line) != 2:
            raise RuntimeError(f"server child failed to start (exit code {proc.poll()})")
        return proc, (int(line[0]), int(line[1]))
    except BaseException:
        stop_child(proc)
        raise


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """Close the child's stdin (its signal to stop), then terminate, then kill."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):  # a broken pipe: the child is gone already
            proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


# --- the driver --------------------------------------------------------------------------------


def available_loops(use_uvloop: bool) -> list[str]:
    loops = ["asyncio"]
    if use_uvloop and importlib.util.find_spec("uvloop") is not None:
        loops.append("uvloop")
    return loops


def run_all(loops: list[str], settings: Settings) -> list[Row]:
    """Each (loop, mode) on a fresh event loop; the server child lives only for its mode."""
    rows: list[Row] = []
    for loop_name in loops:
        use_uvloop = loop_name == "uvloop"
        for mode in settings.modes:
            proc: subprocess.Popen[bytes] | None = None
            try:
                ports: ChildPorts | None = None
                if mode == TWO:
                    proc, ports = start_child(loop_name, settings.gc)
                row = run_loop(bench_mode(loop_name, mode, settings, ports), use_uvloop=use_uvloop)
            finally:
                if proc is not None:
                    stop_child(proc)
            rows.append(row)
    return rows


def headline(rows: list[Row], loops: list[str]) -> Row:
    """Two processes on the best loop available, else whatever ran last."""
    wanted = (loops[-1], TWO)
    return next((r for r in rows if (r.loop, r.mode) == wanted), rows[-1])


def table(rows: list[Row], loops: list[str], settings: Settings) -> str:
    header = (
        f"{'loop':8} {'mode':12} {'rpc/s':>9} {'echo/s':>9} {'ratio':>6} "
        f"{'rpc p50':>8} {'rpc p99':>8} {'echo p50':>9} {'echo p99':>9} {'per round':>15} "
        f"{'rpc cpu':>11} {'echo cpu':>11}"
    )
    lines = [
        f"{settings.calls} calls per measurement, concurrency {settings.concurrency}, "
        f"payload {settings.payload} B, best of {settings.rounds} round(s); latencies in us; "
        f"udpdht {build()}",
        header,
        "-" * len(header),
    ]
    for row in rows:
        d = row.as_dict()
        lines.append(
            f"{d['loop']:8} {d['mode']:12} {d['rpc_per_s']:9.0f} {d['echo_per_s']:9.0f} "
            f"{d['ratio']:6.2f} {d['p50_us']:8.1f} {d['p99_us']:8.1f} "
            f"{d['echo_p50_us']:9.1f} {d['echo_p99_us']:9.1f} "
            f"{min(d['round_ratios']):6.2f}-{max(d['round_ratios']):.2f} "
            f"{_cpu(d, 'rpc'):>11} {_cpu(d, 'echo'):>11}"
        )
        if row.rpc_retries or row.rpc_timeouts:
            lines.append(f"  (rpc retries {row.rpc_retries}, timeouts {row.rpc_timeouts})")
    lines.append(
        "rpc cpu, echo cpu: us of CPU a call, the lowest of the rounds: client/server in two "
        "processes; one process: both sides together"
    )
    summary = report(rows, loops, settings)  # (the JSON's verdict, on the headline row)
    top = summary["headline"]
    lines.append(
        f"targets: rpc/echo >= {TARGET_RATIO}, rpc p99 <= {TARGET_P99} x echo p99 "
        f"(garbage collection: {settings.gc}); headline {top['loop']} {top['mode']}: "
        f"{'met' if summary['meets_target'] else 'NOT met'}"
    )
    for row in rows:  # every configuration's own verdict, not only the headline's
        misses = _misses(row.as_dict())
        lines.append(
            f"  {row.loop:8} {row.mode:12} {'NOT met: ' + ', '.join(misses) if misses else 'met'}"
        )
    if not summary["meets_target"] and summary["build"] == "pure":
        lines.append(PURE_MISS)
    return "\n".join(lines)


def _misses(d: dict[str, Any]) -> list[str]:
    """What one configuration's row misses of the targets, in words (empty: met)."""
    misses = []
    if d["ratio"] < TARGET_RATIO:
        misses.append(f"ratio {d['ratio']:.2f} < {TARGET_RATIO}")
    if d["p99_us"] > TARGET_P99 * d["echo_p99_us"]:
        misses.append(f"p99 {d['p99_us'] / d['echo_p99_us']:.1f}x echo's > {TARGET_P99}x")
    return misses


def _cpu(d: dict[str, Any], kind: str) -> str:
    mine, served = d[f"{kind}_cpu_us_per_call"], d[f"{kind}_server_cpu_us_per_call"]
    return f"{mine:.1f}" if served is None else f"{mine:.1f}/{served:.1f}"


def report(rows: list[Row], loops: list[str], settings: Settings) -> dict[str, Any]:
    top = headline(rows, loops).as_dict()
    return {
        "rpc_per_s": top["rpc_per_s"],
        "echo_per_s": top["echo_per_s"],
        "ratio": top["ratio"],
        "p50_us": top["p50_us"],
        "p99_us": top["p99_us"],
        "echo_p50_us": top["echo_p50_us"],
        "echo_p99_us": top["echo_p99_us"],
        "headline": {"loop": top["loop"], "mode": top["mode"]},
        "target_ratio": TARGET_RATIO,
        "target_p99_ratio": TARGET_P99,
        "gc": settings.gc,
        "build": build(),
        "meets_target": not _misses(top),
        "misses": {f"{r.loop} {r.mode}": _misses(r.as_dict()) for r in rows},
        "settings": {
            "calls": settings.calls,
            "warmup": settings.warmup,
            "warmup_s": settings.warmup_s,
            "rounds": settings.rounds,
            "concurrency": settings.concurrency,
            "payload_bytes": settings.payload,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "results": [row.as_dict() for row in rows],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        description=(
            "RpcEndpoint vs a bare asyncio UDP echo with the same codec, side by side: calls a "
            "second, latency, and CPU a call (client/server in two-process mode)."
        ),
    )
    parser.add_argument("--calls", type=positive, default=20_000, help="timed calls per run")
    parser.add_argument("--rounds", type=positive, default=2, help="echo/rpc pairs per config")
    parser.add_argument("--concurrency", type=positive, default=32, help="calls in flight")
    parser.add_argument("--payload", type=int, default=32, metavar="BYTES", help="value size")
    parser.add_argument(
        "--warmup-s", type=float, default=1.0, help="untimed echo/rpc batches before each mode"
    )
    parser.add_argument("--mode", choices=["one", "two", "both"], default="both")
    parser.add_argument("--no-uvloop", action="store_true", help="standard asyncio loop only")
    parser.add_argument("--quick", action="store_true", help="smoke test: 5000 calls, 1 round")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument(
        "--gc",
        choices=["tuned", "default"],
        default="tuned",
        help="tuned (default): udpdht.net.tune_gc() in both processes, as in a node; "
        "default: CPython's collector settings",
    )
    parser.add_argument("--serve", choices=["asyncio", "uvloop"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.gc == "tuned":
        tune_gc()
    if opts.serve is not None:
        run_loop(serve(), use_uvloop=opts.serve == "uvloop")
        return 0
    if opts.payload < 0:
        raise SystemExit("--payload must be >= 0")
    calls, rounds = (5000, 1) if opts.quick else (opts.calls, opts.rounds)
    modes = {"one": (ONE,), "two": (TWO,), "both": (ONE, TWO)}[opts.mode]
    settings = Settings(
        calls=calls,
        warmup=max(opts.concurrency, calls // 10),
        warmup_s=0.3 if opts.quick else opts.warmup_s,
        rounds=rounds,
        concurrency=opts.concurrency,
        payload=opts.payload,
        modes=modes,
        gc=opts.gc,
    )
    loops = available_loops(not opts.no_uvloop)
    progress(f"loops: {', '.join(loops)}; modes: {', '.join(modes)}")
    started = time.perf_counter()
    rows = run_all(loops, settings)
    progress(f"done in {time.perf_counter() - started:.1f} s")
    if opts.json:
        print(json.dumps(report(rows, loops, settings)))
    else:
        print(table(rows, loops, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
