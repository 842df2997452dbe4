"""Sets and gets through kademlia's Server API: udpdht, kademlia and the limit; then a ring.

What is measured
    **Part A: the Server API, side by side** (issue #11). For each ring size N of ``--sizes``
    (20, 100, 200) and each round of ``--rounds`` (3), each library runs in its own child
    process (this file re-run with the hidden ``--child LIB`` flag, which prints one JSON line),
    the two interleaved: udpdht then kademlia in odd rounds, kademlia then udpdht in even ones.
    Both children of a round get the same seed. In a child, as a user script would:

    1. **Build.** N ``Server()`` objects (ksize=20, alpha=3, the defaults of both) in one
       process, each ``listen(0, "127.0.0.1")``: the kernel picks a free port, which is read
       back (udpdht: ``server.port``; kademlia: its transport's ``sockname``), so no port is
       guessed. Each new server ``bootstrap``s from a random earlier one (seeded) and the next
       starts once that returns. Recorded: seconds, CPU seconds, bootstraps that returned [].
    2. **Sets.** Right after the last bootstrap returns (``--settle S`` waits S seconds first),
       ``--ops`` (300) ``set(key, value)`` one after another, distinct keys, values of about 20
       characters, the i-th from server i mod N. Correct: ``set`` returned True.
    3. **Gets.** The same keys, one after another, the i-th from server (i+1) mod N (never the
       one that set it). Correct: ``get`` returned the value set.
    4. **Concurrent gets.** All the keys at once (``asyncio.gather``), the i-th from server
       (i+2) mod N.
    5. **Idle.** ``--idle`` (5) seconds with no calls, after the phases (so that the phases
       start right after the build, as the issue measured): the process's CPU time over the
       window per node and second, i.e. what the maintenance of one node costs.

    For each phase: ops/s (ops over the phase's wall time), latency p50/p99/max (every call,
    failed ones included), correct answers, wrong answers (False, None or another value),
    exceptions by type, and the process CPU time per op (``time.process_time``; it includes
    every server's background work during the phase; steadier than the wall time on a shared
    machine). For udpdht also, per op, the datagrams its servers sent, their retries, timeouts,
    BUSY answers and error replies (NotResponsible among them), from the servers' RPC stats
    over the phase: every server's maintenance traffic meanwhile is included.

    kademlia stores a value on the k=20 nodes nearest its key, and its ``get`` first looks in
    the asking server's own storage: at N <= 20 every server holds every value and its gets
    never leave the process's dict. udpdht keeps 3 copies and always asks the key's holders.

    **The limit** (``limit``, bench/limit.py; ``--no-limit`` skips it) runs beside them, a
    third child a round, each library first in turn: N servers with the same API that do the
    least a DHT could, one request and one reply per set or get, straight to the key's one
    holder (``sha1(key) mod N``, from a directory shared in memory), on udpdht's codec, with no
    replicas, retries, timeouts, checks or maintenance. What it does beside kademlia bounds
    the ratio any design with a round trip per operation could reach here; udpdht / limit is
    what udpdht's own work costs on top of the wire.

    The parent reports per (N, library, phase) min / median / max over the rounds, and per N
    and phase the ratios udpdht / kademlia, limit / kademlia and udpdht / limit: of the median
    throughputs, and per round (the children of one round ran back to back) min / median / max.

    **Part B: a ring of node processes, udpdht only.** ``--ring-nodes`` (16) ``udpdht node``
    processes (bench/attack.py's Cluster: temp dir, ephemeral ports on 127.0.0.1; the first
    alone, the others bootstrapping from it, all at once), then wait until every node's
    status says ``settled``. Then ``--ring-idle`` (10) seconds at rest: per node and second,
    the datagrams and bytes it sent (its status ``rpc``; one status answer per node falls in
    the window) and its CPU time: what maintenance costs. From this process, one
    :class:`udpdht.Client` per node: for each
    level of ``--inflight`` (1, 16, 64), ``--ring-ops`` (2,000) puts of new keys with 64-byte
    values, then gets of those keys, that many requests in flight, the i-th put to node
    i mod 16 and its get to node (i+7) mod 16. Per level and op: ops/s, p50/p99/max, errors
    and wrong values, and from the nodes' status (``rpc`` stats, summed over the nodes,
    deltas over the phase): datagrams sent per op, retries per op, timeouts, BUSY answers;
    the clients' own retries; the nodes' CPU time per op (``/proc/PID/stat``). The status
    polls around each phase add about one datagram per node, not counted out.

Targets (issue #11): at N=100, udpdht's set throughput >= 20x kademlia's, get >= 3x,
concurrent get >= 3x, every p99 below kademlia's, every get correct; ring of 16 at 64 in
flight: put p99 <= 3x put p50, and no retransmission storm (node retries <= 0.05 per op).

Usage::

    python bench/ops.py                    # both parts, human table (~6 min on two cores)
    python bench/ops.py --json             # one JSON object on stdout, progress on stderr
    python bench/ops.py --quick            # N=20 only, 100 ops, 1 round; ring: 300 ops a level
    python bench/ops.py --server-only --sizes 100 --rounds 5
    python bench/ops.py --ring-only --inflight 1 16 64 --ring-nodes 16
    python bench/ops.py --plot bench/out/ops.png
    python bench/ops.py --report run.json  # the table of a --json run, measuring nothing

Every child (library children and node processes) is killed and every temp dir removed at the
end, also after an error or Ctrl-C; a library child also ends itself after ``--deadline`` s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

try:
    import udpdht  # installed editable in the venv; else run from a checkout
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attack import Cluster, NodeProc, install_signal_handlers, percentile  # bench/attack.py
from common import (  # bench/common.py
    PURE_MISS,
    HelpFormatter,
    build,
    positive,
    progress,
    pyplot,
    save_plot,
    spread,
)
from limit import LimitServer  # bench/limit.py

import udpdht
from udpdht import Client

HOST = "127.0.0.1"
LIBS = ("udpdht", "kademlia", "limit")
PHASES = ("set", "get", "cget")
PHASE_TITLES = {"set": "set, sequential", "get": "get, sequential", "cget": "get, all at once"}
RPC_FIELDS = ("sent", "retries", "timeouts", "busy", "errors_sent")
RATIO_ROWS = (
    ("ratio", "udpdht/kad"),
    ("limit_ratio", "limit/kad"),
    ("udpdht_over_limit", "udpdht/limit"),
)
TARGET_N = 100
KSIZE = 20  # both libraries' k (their default): copies of a value in kademlia
TARGET_RATIO = {"set": 20.0, "get": 3.0, "cget": 3.0}
TARGET_LEVEL = 64
TARGET_P99_OVER_P50 = 3.0
TARGET_RETRIES_PER_OP = 0.05
RING_VALUE_BYTES = 64
TICKS = os.sysconf("SC_CLK_TCK")


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def latencies(values: list[float]) -> dict[str, float | None]:
    return {
        "p50_ms": ms(percentile(values, 0.5)),
        "p99_ms": ms(percentile(values, 0.99)),
        "max_ms": ms(max(values) if values else None),
    }


# --- Part A: one library in a child process ----------------------------------------------------


def new_server(lib: str, directory: list[tuple[str, int]]) -> Any:
    """A server of ``lib``; ``directory``: the limit's addresses, shared by its servers."""
    if lib == "udpdht":
        return udpdht.Server(ksize=KSIZE, alpha=3)
    if lib == "limit":
        return LimitServer(directory)
    from kademlia.network import Server as KademliaServer

    return KademliaServer(ksize=KSIZE, alpha=3)


def port_of(lib: str, server: Any) -> int:
    """The port ``listen(0)`` bound (the kernel chose it)."""
    if lib in ("udpdht", "limit"):
        return int(server.port)
    return int(server.transport.get_extra_info("sockname")[1])


def rpc_totals(lib: str, servers: list[Any]) -> dict[str, int]:
    """udpdht: the RPC stats summed over the servers; kademlia keeps none."""
    if lib != "udpdht":
        return {}
    total = dict.fromkeys(RPC_FIELDS, 0)
    for s in servers:
        if s.dht is not None:
            stats = s.dht.endpoint.stats
            for f in RPC_FIELDS:
                total[f] += getattr(stats, f)
    return total


async def phase(
    lib: str,
    servers: list[Any],
    calls: list[Callable[[], Awaitable[Any]]],
    expected: list[Any],
    *,
    concurrent: bool,
) -> dict[str, Any]:
    """Run the calls (one after another, or all at once) and score them."""
    n = len(calls)
    lat = [0.0] * n
    results: list[Any] = [None] * n
    exceptions: Counter[str] = Counter()

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        try:
            results[i] = await calls[i]()
        except Exception as exc:  # counted: the figure is what a script would see
            exceptions[type(exc).__name__] += 1
            results[i] = exc
        lat[i] = time.perf_counter() - t0

    rpc0 = rpc_totals(lib, servers)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if concurrent:
        await asyncio.gather(*(one(i) for i in range(n)))
    else:
        for i in range(n):
            await one(i)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rpc1 = rpc_totals(lib, servers)
    correct = sum(1 for r, e in zip(results, expected, strict=True) if r == e)
    out: dict[str, Any] = {
        "ops": n,
        "seconds": round(wall, 3),
        "ops_per_s": round(n / wall, 2),
        **latencies(lat),
        "correct": correct,
        "wrong": n - correct - sum(exceptions.values()),
        "exceptions": dict(exceptions),
        "cpu_ms_per_op": round(cpu * 1000 / n, 3),
    }
    if rpc1:
        out["rpc_per_op"] = {f: round((rpc1[f] - rpc0[f]) / n, 3) for f in RPC_FIELDS}
    return out


async def child_run(args: argparse.Namespace) -> dict[str, Any]:
    lib, n = args.child, args.n
    rng = random.Random(args.seed)
    servers: list[Any] = []
    addrs: list[tuple[str, int]] = []
    directory: list[tuple[str, int]] = []  # the limit's global knowledge
    empty = 0
    out: dict[str, Any] = {"lib": lib, "n": n, "seed": args.seed}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        for i in range(n):
            server = new_server(lib, directory)
            servers.append(server)
            await server.listen(0, HOST)
            if addrs and not await server.bootstrap([rng.choice(addrs)]):
                empty += 1
            addrs.append((HOST, port_of(lib, server)))
            if (i + 1) % 50 == 0:
                progress(f"  [{lib} N={n}] {i + 1} servers up")
        out["build"] = {
            "seconds": round(time.perf_counter() - wall0, 2),
            "cpu_s": round(time.process_time() - cpu0, 2),
            "empty_bootstraps": empty,
        }
        if args.settle:
            await asyncio.sleep(args.settle)
        salt = os.urandom(3).hex()
        keys = [f"ops-{salt}-{i}" for i in range(args.ops)]
        values = [f"value-{salt}-{i:06d}" for i in range(args.ops)]

        def setter(i: int) -> Callable[[], Awaitable[Any]]:
            return lambda: servers[i % n].set(keys[i], values[i])

        def getter(i: int, shift: int) -> Callable[[], Awaitable[Any]]:
            return lambda: servers[(i + shift) % n].get(keys[i])

        ops = range(args.ops)
        out["set"] = await phase(
            lib, servers, [setter(i) for i in ops], [True] * args.ops, concurrent=False
        )
        out["get"] = await phase(
            lib, servers, [getter(i, 1) for i in ops], values, concurrent=False
        )
        out["cget"] = await phase(
            lib, servers, [getter(i, 2) for i in ops], values, concurrent=True
        )
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(args.idle)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        out["idle"] = {
            "seconds": round(wall, 2),
            "cpu_share": round(cpu / wall, 4),
            "cpu_ms_per_node_s": round(cpu * 1000 / wall / n, 3),
        }
        # Printed before the servers close: the figures are in, whatever the closing does.
        print(json.dumps(out), flush=True)
    finally:
        if lib == "udpdht":
            stops = [s.dht.stop() for s in servers if s.dht is not None and s.dht.running]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*stops, return_exceptions=True), 20)
        else:
            for s in servers:
                s.stop()
    return out


def child_main(args: argparse.Namespace) -> int:
    signal.alarm(int(args.deadline))  # the hard deadline: SIGALRM ends the process
    if args.verbose:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    else:
        logging.disable(logging.CRITICAL)  # kademlia, rpcudp and udpdht alike
    asyncio.run(child_run(args))
    return 0


def run_child(lib: str, n: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One library child; its JSON line, or {"error": ...}. The child is killed on any
    exception here (Ctrl-C included) and when it outlives its deadline."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", lib, "--n", str(n)]
    cmd += ["--ops", str(args.ops), "--settle", str(args.settle), "--idle", str(args.idle)]
    cmd += ["--deadline", str(args.deadline), "--seed", str(seed)]
    if args.verbose:
        cmd.append("--verbose")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,  # Ctrl-C reaches the parent only, which kills the child
    )
    try:
        stdout, _ = proc.communicate(timeout=args.deadline + 30)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    for line in reversed(stdout.decode(errors="replace").splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    return {"lib": lib, "n": n, "seed": seed, "error": f"no result (exit {proc.returncode})"}


def server_part(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    libs = LIBS[:2] if args.no_limit else LIBS
    for n in args.sizes:
        for rnd in range(1, args.rounds + 1):
            seed = n * 1000 + rnd
            # Each library first in turn (with two: they swap places every round).
            shift = (rnd - 1) % len(libs)
            order = libs[shift:] + libs[:shift]
            for lib in order:
                progress(f"[N={n} round {rnd}/{args.rounds}] {lib}")
                t0 = time.monotonic()
                r = run_child(lib, n, seed, args)
                r["round"] = rnd
                runs.append(r)
                if "error" in r:
                    progress(f"  {lib} failed: {r['error']}")
                else:
                    progress(
                        f"  {lib}: build {r['build']['seconds']} s, "
                        + ", ".join(f"{p} {r[p]['ops_per_s']}/s" for p in PHASES)
                        + f" ({time.monotonic() - t0:.0f} s)"
                    )
    return runs


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per N: per library and phase min/median/max over the rounds; udpdht/kademlia ratios."""
    out: dict[str, Any] = {}
    for n in sorted({r["n"] for r in runs}):
        ok = [r for r in runs if r["n"] == n and "error" not in r]
        per: dict[str, Any] = {"failed_runs": sum(1 for r in runs if r["n"] == n) - len(ok)}
        for lib in LIBS:
            mine = [r for r in ok if r["lib"] == lib]
            if not mine:
                continue
            lib_out: dict[str, Any] = {
                "rounds": len(mine),
                "build_s": spread([r["build"]["seconds"] for r in mine]),
                "empty_bootstraps": sum(r["build"]["empty_bootstraps"] for r in mine),
                "idle_cpu_ms_per_node_s": spread([r["idle"]["cpu_ms_per_node_s"] for r in mine]),
            }
            for p in PHASES:
                ph = [r[p] for r in mine]
                lib_out[p] = {
                    k: spread([x[k] for x in ph if x[k] is not None])
                    for k in ("ops_per_s", "p50_ms", "p99_ms", "max_ms", "cpu_ms_per_op")
                }
                lib_out[p]["ops"] = sum(x["ops"] for x in ph)
                lib_out[p]["correct"] = sum(x["correct"] for x in ph)
                exc: Counter[str] = Counter()
                for x in ph:
                    exc.update(x["exceptions"])
                lib_out[p]["wrong"] = sum(x["wrong"] for x in ph)
                lib_out[p]["exceptions"] = dict(exc)
                if "rpc_per_op" in ph[0]:
                    lib_out[p]["rpc_per_op"] = {
                        f: spread([x["rpc_per_op"][f] for x in ph]) for f in RPC_FIELDS
                    }
            per[lib] = lib_out
        # "ratio": udpdht / kademlia; "limit_ratio": limit / kademlia, udpdht / limit.
        if "udpdht" in per and "kademlia" in per:
            per["ratio"] = {p: _ratio(ok, per, p, "udpdht", "kademlia") for p in PHASES}
        if "limit" in per and "kademlia" in per:
            per["limit_ratio"] = {p: _ratio(ok, per, p, "limit", "kademlia") for p in PHASES}
        if "limit" in per and "udpdht" in per:
            per["udpdht_over_limit"] = {p: _ratio(ok, per, p, "udpdht", "limit") for p in PHASES}
        out[str(n)] = per
    return out


def _ratio(
    runs: list[dict[str, Any]], per: dict[str, Any], p: str, lib: str, over: str
) -> dict[str, Any]:
    """``lib``'s throughput in phase ``p`` over ``over``'s: of the medians, and per round (the
    children of one round ran back to back); CPU per op of the medians."""
    by_round = {(r["round"], r["lib"]): r[p]["ops_per_s"] for r in runs if p in r}
    paired = [
        by_round[(rnd, lib)] / by_round[(rnd, over)]
        for rnd in sorted({rnd for rnd, _ in by_round})
        if (rnd, lib) in by_round and (rnd, over) in by_round
    ]
    a, b = per[lib][p], per[over][p]
    return {
        "of_medians": round(a["ops_per_s"]["median"] / b["ops_per_s"]["median"], 3),
        "per_round": spread([round(x, 3) for x in paired]),
        "cpu_per_op_of_medians": round(
            a["cpu_ms_per_op"]["median"] / b["cpu_ms_per_op"]["median"], 3
        ),
    }


def targets(summary: dict[str, Any], ring: dict[str, Any] | None) -> list[tuple[str, bool]]:
    """The issue's targets that this run can judge: (what, met)."""
    out: list[tuple[str, bool]] = []
    at = summary.get(str(TARGET_N), {})
    if "ratio" in at:
        for p in PHASES:
            ratio = at["ratio"][p]["of_medians"]
            out.append(
                (f"N={TARGET_N} {PHASE_TITLES[p]}: {ratio:.2f}x >= {TARGET_RATIO[p]:g}x",
                 ratio >= TARGET_RATIO[p])
            )  # fmt: skip
        for p in PHASES:
            u, k = at["udpdht"][p]["p99_ms"]["median"], at["kademlia"][p]["p99_ms"]["median"]
            out.append((f"N={TARGET_N} {PHASE_TITLES[p]}: p99 {u:.2f} ms < {k:.2f} ms", u < k))
        for p in ("get", "cget"):
            u = at["udpdht"][p]
            out.append(
                (f"N={TARGET_N} {PHASE_TITLES[p]}: {u['correct']}/{u['ops']} correct",
                 u["correct"] == u["ops"])
            )  # fmt: skip
    level = (ring or {}).get("levels", {}).get(str(TARGET_LEVEL))
    if level:
        put = level["put"]
        p50, p99 = put["p50_ms"] or 0.0, put["p99_ms"] or 0.0
        out.append(
            (f"ring at {TARGET_LEVEL} in flight: put p99 {p99:.1f} ms <= "
             f"{TARGET_P99_OVER_P50:g}x p50 ({p50:.1f} ms)", p99 <= TARGET_P99_OVER_P50 * p50)
        )  # fmt: skip
        worst = max(level[op]["node_retries_per_op"] for op in ("put", "get"))
        out.append(
            (f"ring at {TARGET_LEVEL} in flight: node retries {worst:.3f}/op <= "
             f"{TARGET_RETRIES_PER_OP:g}", worst <= TARGET_RETRIES_PER_OP)
        )  # fmt: skip
    return out


# --- Part B: a ring of node processes ----------------------------------------------------------


def cpu_seconds(node: NodeProc) -> float:
    """User + system CPU seconds of a node process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{node.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


async def rpc_sums(clients: list[Client]) -> dict[str, int]:
    sts = await asyncio.gather(*(c.status() for c in clients))
    return {f: sum(int(st["rpc"].get(f, 0)) for st in sts) for f in RPC_FIELDS}


async def wait_settled(clients: list[Client], within: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        sts = await asyncio.gather(*(c.status() for c in clients), return_exceptions=True)
        if all(isinstance(st, dict) and st.get("settled") for st in sts):
            return time.monotonic() - start
        await asyncio.sleep(0.3)
    raise RuntimeError(f"the ring of {len(clients)} did not settle within {within} s")


async def ring_load(
    clients: list[Client],
    nodes: list[NodeProc],
    keys: list[bytes],
    values: list[bytes],
    op: str,
    inflight: int,
) -> dict[str, Any]:
    n, k = len(keys), len(clients)
    lat: list[float] = []
    wrong = 0
    exceptions: Counter[str] = Counter()
    queue = iter(range(n))

    async def worker() -> None:
        nonlocal wrong
        for i in queue:
            t0 = time.perf_counter()
            try:
                if op == "put":
                    await clients[i % k].put(keys[i], values[i])
                elif await clients[(i + 7) % k].get(keys[i]) != values[i]:
                    wrong += 1
            except Exception as exc:  # counted, not fatal
                exceptions[type(exc).__name__] += 1
            lat.append(time.perf_counter() - t0)

    before = await rpc_sums(clients)
    client_retries = sum(c.endpoint.stats.retries for c in clients)
    cpu0 = sum(cpu_seconds(nd) for nd in nodes)
    wall0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    wall = time.perf_counter() - wall0
    cpu = sum(cpu_seconds(nd) for nd in nodes) - cpu0
    after = await rpc_sums(clients)
    return {
        "ops": n,
        "seconds": round(wall, 3),
        "ops_per_s": round(n / wall, 1),
        **latencies(lat),
        "errors": sum(exceptions.values()),
        "exceptions": dict(exceptions),
        "wrong": wrong,
        "datagrams_per_op": round((after["sent"] - before["sent"]) / n, 2),
        "node_retries_per_op": round((after["retries"] - before["retries"]) / n, 4),
        "node_timeouts": after["timeouts"] - before["timeouts"],
        "node_busy": after["busy"] - before["busy"],
        "node_errors_sent": after["errors_sent"] - before["errors_sent"],
        "client_retries": sum(c.endpoint.stats.retries for c in clients) - client_retries,
        "node_cpu_ms_per_op": round(cpu * 1000 / n, 3),
    }


async def ring_idle(clients: list[Client], nodes: list[NodeProc], seconds: float) -> dict[str, Any]:
    """What a node of the settled ring costs at rest, per second: datagrams and bytes it sends
    (from its status; the status calls themselves excluded) and CPU (from /proc)."""

    async def sums() -> tuple[int, int]:
        sts = await asyncio.gather(*(c.status() for c in clients))
        return (
            sum(int(st["rpc"]["sent"]) for st in sts),
            sum(int(st["rpc"].get("bytes_sent", 0)) for st in sts),
        )

    sent0, bytes0 = await sums()
    cpu0 = sum(cpu_seconds(nd) for nd in nodes)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    wall = time.perf_counter() - t0
    cpu = sum(cpu_seconds(nd) for nd in nodes) - cpu0
    sent1, bytes1 = await sums()
    per = len(nodes) * wall
    # Each node answered one status call between the two sums: not maintenance.
    return {
        "seconds": round(wall, 2),
        "datagrams_per_node_s": round((sent1 - sent0 - len(nodes)) / per, 2),
        "bytes_per_node_s": round((bytes1 - bytes0) / per, 1),
        "cpu_ms_per_node_s": round(cpu * 1000 / per, 3),
    }


async def ring_part(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"nodes": args.ring_nodes, "ops": args.ring_ops, "levels": {}}
    with Cluster("asyncio", prefix="udpdht-ops-") as cluster:
        progress(f"ring: starting {args.ring_nodes} node processes")
        t0 = time.monotonic()
        first = await cluster.start("n00")
        rest = await asyncio.gather(
            *(cluster.start(f"n{i:02d}", [first]) for i in range(1, args.ring_nodes))
        )
        nodes = [first, *rest]
        out["start_s"] = round(time.monotonic() - t0, 2)
        clients = [Client(nd.addr) for nd in nodes]
        try:
            for c in clients:
                await c.open()
            out["settle_s"] = round(await wait_settled(clients, args.max_wait), 2)
            progress(f"ring: settled {out['settle_s']} s after the last start")
            out["idle"] = await ring_idle(clients, nodes, args.ring_idle)
            progress(f"ring: idle {out['idle']}")
            for level in args.inflight:
                salt = os.urandom(3).hex()
                keys = [f"ring-{salt}-{i}".encode() for i in range(args.ring_ops)]
                values = [os.urandom(RING_VALUE_BYTES) for _ in keys]
                res: dict[str, Any] = {}
                for op in ("put", "get"):
                    res[op] = await asyncio.wait_for(
                        ring_load(clients, nodes, keys, values, op, level), args.max_wait
                    )
                    progress(
                        f"ring: {level} in flight, {op}: {res[op]['ops_per_s']}/s, "
                        f"p50 {res[op]['p50_ms']} ms, p99 {res[op]['p99_ms']} ms"
                    )
                out["levels"][str(level)] = res
        finally:
            for c in clients:
                await c.close()
    return out


# --- report ------------------------------------------------------------------------------------


def _n(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _mmm(s: dict[str, float] | None) -> str:
    return "-" if s is None else f"{_n(s['min'])} / {_n(s['median'])} / {_n(s['max'])}"


def _grid(heads: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
    fmt = [f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths)]
    return ["  ".join(f.format(c) for f, c in zip(fmt, r, strict=True)) for r in [heads, *rows]]


def table(result: dict[str, Any]) -> str:
    lines: list[str] = []
    server = result.get("server")
    if server:
        summary = server["summary"]
        rounds = max((r.get("round", 1) for r in server["runs"]), default=1)
        lines.append(
            f"Part A: N servers in one process, the Server API ({server['ops']} ops a phase, "
            f"{rounds} round(s); min / median / max over the rounds; "
            f"udpdht {result.get('build', 'pure')})"
        )
        heads = ["N", "phase", "lib", "ops/s", "p50 ms", "p99 ms", "max ms", "CPU ms/op",
                 "correct", "errors"]  # fmt: skip
        rows: list[list[str]] = []
        for n, per in summary.items():
            for p in PHASES:
                for lib in LIBS:
                    if lib not in per:
                        continue
                    x = per[lib][p]
                    errs = sum(x["exceptions"].values())
                    rows.append([
                        n, PHASE_TITLES[p], lib, _mmm(x["ops_per_s"]), _mmm(x["p50_ms"]),
                        _mmm(x["p99_ms"]), _n(x["max_ms"]["max"] if x["max_ms"] else None),
                        _mmm(x["cpu_ms_per_op"]), f"{x['correct']}/{x['ops']}",
                        f"{x['wrong']} wrong, {errs} exc" if x["wrong"] or errs else "0",
                    ])  # fmt: skip
                for name, label in RATIO_ROWS:
                    if name in per:
                        ra = per[name][p]
                        rows.append([
                            n, PHASE_TITLES[p], label, f"{ra['of_medians']:.2f}x",
                            "", "", "", f"{ra['cpu_per_op_of_medians']:.2f}x",
                            "", f"rounds {_mmm(ra['per_round'])}",
                        ])  # fmt: skip
            for lib in LIBS:
                if lib in per:
                    rows.append([
                        n, "build (s)", lib, _mmm(per[lib]["build_s"]), "", "", "",
                        "", "", f"{per[lib]['empty_bootstraps']} empty bootstraps",
                    ])  # fmt: skip
            for lib in LIBS:
                if lib in per:
                    rows.append([
                        n, "idle CPU ms/node/s", lib, _mmm(per[lib]["idle_cpu_ms_per_node_s"]),
                        "", "", "", "", "", "",
                    ])  # fmt: skip
            if per["failed_runs"]:
                rows.append([n, "FAILED runs", "", str(per["failed_runs"]), *[""] * 6])
        lines += _grid(heads, rows)
        rpc_rows = []
        for n, per in summary.items():
            if "udpdht" in per:
                for p in PHASES:
                    rp = per["udpdht"][p].get("rpc_per_op")
                    if rp:
                        rpc_rows.append(
                            [n, PHASE_TITLES[p], "udpdht", *(_mmm(rp[f]) for f in RPC_FIELDS)]
                        )
        if rpc_rows:
            lines += ["", "udpdht servers' datagrams and RPC events per op (min / median / max)"]
            lines += _grid(["N", "phase", "lib", *(f"{f}/op" for f in RPC_FIELDS)], rpc_rows)
    ring = result.get("ring")
    if ring:
        if lines:
            lines.append("")
        lines.append(
            f"Part B: ring of {ring['nodes']} udpdht node processes ({ring['ops']} ops a level, "
            f"settled {ring.get('settle_s', '-')} s after the starts), one Client per node"
        )
        heads = ["in flight", "op", "", "ops/s", "p50 ms", "p99 ms", "max ms", "errors",
                 "datagrams/op", "retries/op", "timeouts", "busy", "error replies",
                 "client retries",
                 "node CPU ms/op"]  # fmt: skip
        rows = []
        for level, res in ring["levels"].items():
            for op in ("put", "get"):
                x = res[op]
                rows.append([
                    level, op, "", _n(x["ops_per_s"]), _n(x["p50_ms"]), _n(x["p99_ms"]),
                    _n(x["max_ms"]), f"{x['errors']}+{x['wrong']} wrong", _n(x["datagrams_per_op"]),
                    f"{x['node_retries_per_op']:.3f}", str(x["node_timeouts"]),
                    str(x["node_busy"]), str(x["node_errors_sent"]), str(x["client_retries"]),
                    _n(x["node_cpu_ms_per_op"]),
                ])  # fmt: skip
        lines += _grid(heads, rows)
        idle = ring.get("idle")
        if idle:
            lines.append(
                f"at rest ({idle['seconds']} s, settled ring): per node and second "
                f"{idle['datagrams_per_node_s']} datagrams, {idle['bytes_per_node_s']:,.0f} bytes "
                f"sent, {idle['cpu_ms_per_node_s']} ms CPU"
            )
    tg = result.get("targets") or []
    if tg:
        lines += ["", "Targets (issue #11)"]
        lines += [f"  [{'met' if ok else 'NOT met'}] {what}" for what, ok in tg]
        # (Under speed targets only: a wrong answer is no matter of build.)
        if result.get("build") == "pure" and any(not ok and "correct" not in w for w, ok in tg):
            lines.append(PURE_MISS)
    server = result.get("server")
    if server is not None and str(TARGET_N) not in server.get("summary", {}):
        lines += [f"  (the Server API targets are judged at N={TARGET_N}, not among the sizes run)"]
    if server is not None and any(int(n) <= KSIZE for n in server.get("summary", {})):
        # (A new user's trial of --quick read "gets 0.08x" as udpdht 12 times slower.)
        lines += [
            f"  (at N <= {KSIZE}, each kademlia server holds every value, its k={KSIZE} copies: "
            "its gets never leave the process; udpdht keeps 3 copies and asks their holders)"
        ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Throughput against N per phase, both libraries (median, min..max bars); the ring."""
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    summary = (result.get("server") or {}).get("summary", {})
    xs = [int(n) for n in summary]
    for ax, p in zip(axes.flat, PHASES, strict=False):
        for lib, colour in zip(LIBS, ("tab:blue", "tab:orange", "tab:gray"), strict=True):
            pts = [(int(n), per[lib][p]["ops_per_s"]) for n, per in summary.items() if lib in per]
            if not pts:
                continue
            med = [s["median"] for _, s in pts]
            lo = [s["median"] - s["min"] for _, s in pts]
            hi = [s["max"] - s["median"] for _, s in pts]
            ax.errorbar([x for x, _ in pts], med, yerr=[lo, hi], marker="o", capsize=4,
                        label=lib, color=colour)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xlabel("servers in the process (N)")
        ax.set_ylabel("ops/s")
        ax.set_title(PHASE_TITLES[p], fontsize=10)
        ax.legend(fontsize=8)
    ax = axes.flat[3]
    ring = result.get("ring")
    if ring and ring["levels"]:
        levels = [int(k) for k in ring["levels"]]
        for op in ("put", "get"):
            ax.plot(levels, [ring["levels"][str(lv)][op]["ops_per_s"] for lv in levels],
                    marker="o", label=f"{op} ops/s")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(lv) for lv in levels])
        ax.set_xlabel("requests in flight")
        ax.set_ylabel("ops/s")
        ax.set_title(f"ring of {ring['nodes']} udpdht node processes (Client)", fontsize=10)
        ax.legend(fontsize=8)
    else:
        ax.axis("off")
    fig.suptitle(
        "bench/ops.py: udpdht vs kademlia through the Server API (limit: one round trip), 127.0.0.1"
    )
    save_plot(fig, path)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="N=20, 100 ops, 1 round; ring 300 ops")
    p.add_argument("--sizes", type=positive, nargs="+", help="servers per process (20 100 200)")
    p.add_argument("--rounds", type=positive, help="rounds per N (3)")
    p.add_argument("--ops", type=positive, help="sets, gets and concurrent gets (300 each)")
    p.add_argument("--settle", type=float, default=0.0, help="seconds to wait after the build")
    p.add_argument("--idle", type=float, help="seconds of the idle window (5)")
    p.add_argument("--deadline", type=float, default=600.0, help="a library child's lifetime")
    p.add_argument("--ring-nodes", type=positive, default=16, help="node processes")
    p.add_argument("--ring-ops", type=positive, help="puts (and gets) per level (2000)")
    p.add_argument("--ring-idle", type=float, help="seconds at rest before the load (10)")
    p.add_argument(
        "--inflight", type=lambda s: [positive(x) for x in s.split(",")], nargs="+",
        help="requests in flight, e.g. 1,16,64 or 1 16 64",
    )  # fmt: skip
    p.add_argument("--max-wait", type=float, default=300.0, help="deadline of each ring wait (s)")
    part = p.add_mutually_exclusive_group()
    part.add_argument("--server-only", action="store_true", help="Part A only")
    part.add_argument("--ring-only", action="store_true", help="Part B only")
    p.add_argument("--plot", type=Path, nargs="?", const=Path("bench/out/ops.png"),
                   help="write a PNG (default path bench/out/ops.png)")  # fmt: skip
    p.add_argument(
        "--report", type=Path, metavar="JSON",
        help="measure nothing: the table (or --plot) of what a --json run printed",
    )  # fmt: skip
    p.add_argument(
        "--no-limit", action="store_true", help="skip the limit (bench/limit.py) in Part A"
    )
    p.add_argument("--verbose", action="store_true", help="the libraries' logs on stderr")
    p.add_argument("--child", choices=LIBS, help=argparse.SUPPRESS)
    p.add_argument("--n", type=positive, default=20, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    q = args.quick
    args.sizes = args.sizes or ([20] if q else [20, 100, 200])
    args.rounds = args.rounds or (1 if q else 3)
    args.ops = args.ops or (100 if q else 300)
    args.idle = args.idle if args.idle is not None else (2.0 if q else 5.0)
    args.ring_ops = args.ring_ops or (300 if q else 2000)
    args.ring_idle = args.ring_idle if args.ring_idle is not None else (3.0 if q else 10.0)
    args.inflight = [x for group in (args.inflight or [[1, 16, 64]]) for x in group]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    if args.report:
        saved: dict[str, Any] = json.loads(args.report.read_text())
        if args.plot:
            plot(saved, args.plot)
        print(table(saved))
        return 0
    install_signal_handlers()
    result: dict[str, Any] = {
        "bench": "ops",
        "udpdht": str(Path(udpdht.__file__).parent),
        "build": build(),
        "args": {k: v for k, v in vars(args).items() if k not in ("child", "n", "seed", "plot")},
    }
    if not args.ring_only:
        runs = server_part(args)
        result["server"] = {"ops": args.ops, "runs": runs, "summary": summarize(runs)}
    if not args.server_only:
        result["ring"] = asyncio.run(ring_part(args))
    result["targets"] = targets((result.get("server") or {}).get("summary", {}), result.get("ring"))
    if args.plot:
        plot(result, args.plot)
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
