"""A ring of node processes on disk stores with 100k and 1M keys: what the store costs.

What is measured
    For each key count N of ``--sizes`` (100,000 and 1,000,000; ``--quick``: 10,000 and
    100,000), in a temporary directory deleted afterwards:

    1. **Fill.** N records (keys ``bench-00000000``..., 100-byte values, one version) are
       written straight into one :class:`~udpdht.storage.DiskStore` (transactions of 5,000),
       whose file is copied to the data dirs of nodes A, B and C: with r=3 and three nodes,
       every node holds every key, and the copies start in sync.
    2. **Start.** ``udpdht node`` processes (``--loop``: asyncio by default) on 127.0.0.1 at
       ephemeral ports, ``--replicas 3``: A starts a ring, B and C join through A. Each join's
       hand-off finds its share already on disk and compares digests (``handoff.mode``
       "compare"). Recorded: the time until every node's status lists the two others as
       successors and predecessors and its hand-off is done, and the hand-offs' records.
    3. **Idle.** For ``--idle`` seconds (30) nothing is sent to the nodes; each one's CPU time
       (``/proc/PID/stat``) over that window, as a share of a core. Then each node's anti-
       entropy figures from status (``repair``): rounds, the last round's and the longest
       round's milliseconds. A round with the copies in sync is what the idle window ran.
    4. **Status.** ``--status-calls`` (20) ``status`` calls to each node, one at a time:
       median and max latency.
    5. **One key out of sync.** A new key is pushed (``store_push``, as a peer's repair does)
       to one replica of it only, not to its primary. Every 50 ms each node is asked
       (``store_read``) whether it holds the key: the time until all three do, and how many
       anti-entropy rounds the key's primary ran meanwhile (from its status, before and
       after). One round is enough by design: the primary pulls the key from the replica
       and pushes it to the other.
    6. **Puts.** ``--puts`` (2,000) new keys through the client API (``Client.put``, the
       coordinator writes r copies before answering), ``--concurrency`` (32) in flight, each
       to A, B or C in turn: puts/s, latency p50 and p99, errors.
    7. **Join.** Node D starts with an empty data dir and joins through A: its hand-off
       copies its share from its successor (``handoff.mode`` "copy"). Recorded from D's
       status: records, pages, seconds, records/s, and the time until ``join`` returned
       (``handoff.done``).
    8. **Size.** Bytes of each data dir per record it holds (the sqlite file and its WAL),
       and each node's RSS (``VmRSS``) and peak (``VmHWM``).

    Throughout phases 3 (after the idle window), 4-7, a pinger sends each node a ``ping``
    every 50 ms and waits for the answer (at most 10 s): the longest round trip per node
    and phase is the longest the node's event loop did not read its socket (a stall),
    plus a loopback round trip. The pinger runs only after the idle window, whose CPU it
    would otherwise count.

Targets (issue #10, at 1M keys per node): in-sync round <= 50 ms, one missing key repaired
within one round, longest stall <= 50 ms, status <= 5 ms, a 100k-key share taken by a join
in <= 30 s, idle CPU <= 2 % of a core.

Usage::

    python bench/store.py                  # 100k and 1M keys, human table (~10 min)
    python bench/store.py --json           # one JSON object on stdout, progress on stderr
    python bench/store.py --quick          # 10k and 100k keys
    python bench/store.py --plot docs/store.png
    python bench/store.py --combine r1.json r2.json r3.json --plot docs/store.png   # min/med/max

Every child and the temp dir are removed at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

try:
    import udpdht  # noqa: F401  (installed editable in the venv; else run from a checkout)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attack import (  # bench/attack.py
    Cluster,
    Endpoint,
    Monitor,
    NodeProc,
    dir_bytes,
    install_signal_handlers,
    now_ms,
    percentile,
)
from common import HelpFormatter, positive, progress, pyplot, save_plot  # bench/common.py

from udpdht import Client, ids
from udpdht.storage import DiskStore, Record, Version

VALUE_BYTES = 100
FILL_BATCH = 5_000
WRITER = b"\x42" * 20
PING_EVERY = 0.05
TICKS = os.sysconf("SC_CLK_TCK")


def fill(path: Path, count: int) -> dict[str, Any]:
    """``count`` records in a DiskStore at ``path``, all with one version (stamped now)."""
    start = time.monotonic()
    rng = random.Random(count)
    version = Version(now_ms(), WRITER)
    store = DiskStore(path)
    try:
        for first in range(0, count, FILL_BATCH):
            batch = [
                Record(b"bench-%08d" % i, rng.randbytes(VALUE_BYTES), version, None)
                for i in range(first, min(count, first + FILL_BATCH))
            ]
            store.put_many(batch)
    finally:
        store.close()
    return {"records": count, "seconds": round(time.monotonic() - start, 1)}


def cpu_seconds(node: NodeProc) -> float:
    """User + system CPU time of a node process so far."""
    fields = Path(f"/proc/{node.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def summary(values: list[float], digits: int = 2) -> dict[str, float | None]:
    if not values:
        return {"median": None, "max": None}
    return {"median": round(statistics.median(values), digits), "max": round(max(values), digits)}


class Pinger:
    """A ping to each node every 50 ms; the longest round trip per node within a phase."""

    def __init__(self, ep: Endpoint, nodes: list[NodeProc]) -> None:
        self.ep = ep
        self.nodes = nodes
        self.phase = "-"
        self.worst: dict[str, dict[str, float]] = {}
        self.lost: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, node: NodeProc) -> None:
        self.nodes.append(node)
        self._tasks.append(asyncio.ensure_future(self._run(node)))

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._run(n)) for n in self.nodes]

    def enter(self, phase: str) -> None:
        self.phase = phase
        self.worst.setdefault(phase, {})

    async def _run(self, node: NodeProc) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(10_000_000):  # bounded; cancelled at the end
            start = loop.time()
            ans = await self.ep.call(node.addr, "ping", timeout=10.0, tries=1)
            phase = self.phase
            if ans.ok:
                worst = self.worst.setdefault(phase, {})
                ms = ans.seconds * 1000
                worst[node.name] = round(max(worst.get(node.name, 0.0), ms), 1)
            else:
                self.lost[phase] = self.lost.get(phase, 0) + 1
            await asyncio.sleep(max(0.0, PING_EVERY - (loop.time() - start)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def wait_for(what: str, check: Any, within: float, every: float = 0.2) -> float:
    """Wait until ``await check()`` is true; the seconds it took (RuntimeError after
    ``within``)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(int(within / every) + 2):
        if await check():
            return loop.time() - start
        if loop.time() - start > within:
            break
        await asyncio.sleep(every)
    raise RuntimeError(f"{what}: not within {within} s")


def ring_whole(nodes: list[NodeProc], sts: list[dict[str, Any] | None]) -> bool:
    for node, st in zip(nodes, sts, strict=True):
        if st is None or not (st.get("handoff") or {"done": True}).get("done"):
            return False
        others = {n.id for n in nodes if n is not node}
        succs = {int(p["id"], 16) for p in st["successors"]}
        preds = {int(p["id"], 16) for p in st["predecessors"]}
        if succs != others or preds != others:
            return False
    return True


def primary_of(key: bytes, nodes: list[NodeProc]) -> NodeProc:
    key_id = ids.hash_key(key)
    ring = sorted(nodes, key=lambda n: n.id)
    return next((n for n in ring if n.id >= key_id), ring[0])


async def holds(mon: Monitor, node: NodeProc, key: bytes) -> bool:
    ans = await mon.call(node, "store_read", {"keys": [key]})
    return ans.ok and bool(ans.result.get("records"))


async def one_size(count: int, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"keys": count}
    mon = await Monitor.open()
    with Cluster(args.loop, prefix="udpdht-store-") as cl:
        progress(f"[{count:,}] filling one store")
        seed = cl.root / "seed"
        out["fill"] = await asyncio.to_thread(fill, seed, count)
        for name in "ABC":
            shutil.copytree(seed, cl.data_dir(name))
        shutil.rmtree(seed)

        progress(f"[{count:,}] starting A, B and C")
        loop = asyncio.get_running_loop()
        begin = loop.time()
        common = ["--replicas", "3", "--log-level", "warning"]
        a = await cl.start("A", extra=[*common, "--new-ring"])
        b = await cl.start("B", [a], extra=common)
        c = await cl.start("C", [a], extra=common)
        three = [a, b, c]

        async def whole() -> bool:
            return ring_whole(three, await mon.statuses(three, timeout=2.0))

        await wait_for("a ring of three", whole, within=args.max_wait)
        out["start_s"] = round(loop.time() - begin, 1)
        sts = await mon.statuses(three, timeout=2.0)
        out["start_handoffs"] = {
            n.name: (st or {}).get("handoff") for n, st in zip(three, sts, strict=True)
        }

        progress(f"[{count:,}] idle for {args.idle} s")
        cpu0 = [cpu_seconds(n) for n in three]
        t0 = loop.time()
        await asyncio.sleep(args.idle)
        span = loop.time() - t0
        cpu1 = [cpu_seconds(n) for n in three]
        out["idle_cpu_pct"] = {
            n.name: round(100 * (c1 - c0) / span, 2)
            for n, c0, c1 in zip(three, cpu0, cpu1, strict=True)
        }
        sts = await mon.statuses(three, timeout=2.0)
        out["repair"] = {n.name: (st or {}).get("repair") for n, st in zip(three, sts, strict=True)}

        ping_ep = await Endpoint.open()
        pinger = Pinger(ping_ep, list(three))
        pinger.start()
        try:
            pinger.enter("status")
            progress(f"[{count:,}] status latency")
            lat: list[float] = []
            for _ in range(args.status_calls):
                for node in three:
                    ans = await mon.call(node, "status", {})
                    if ans.ok:
                        lat.append(ans.seconds * 1000)
            out["status_ms"] = summary(lat, 3)

            pinger.enter("one_key")
            progress(f"[{count:,}] one key out of sync")
            key = b"bench-missing-%d" % count
            primary = primary_of(key, three)
            replica = next(n for n in three if n is not primary)
            before = (await mon.status(primary, timeout=2.0) or {}).get("repair") or {}
            record = Record(key, b"\xa3new", Version(now_ms(), WRITER), None)
            pushed = await mon.call(replica, "store_push", {"records": [record.to_wire()]})
            if not pushed.ok:
                raise RuntimeError(f"the push was refused: {pushed.short()}")

            async def everywhere() -> bool:
                return all(await asyncio.gather(*(holds(mon, n, key) for n in three)))

            took = await wait_for("one key repaired", everywhere, args.max_wait, every=0.05)
            after = (await mon.status(primary, timeout=2.0) or {}).get("repair") or {}
            out["one_key"] = {
                "seconds": round(took, 2),
                "primary_rounds": int(after.get("rounds", 0)) - int(before.get("rounds", 0)),
                "pulled": int(after.get("pulled", 0)) - int(before.get("pulled", 0)),
                "pushed": int(after.get("pushed", 0)) - int(before.get("pushed", 0)),
                "last_round_ms": after.get("last_round_ms"),
            }

            pinger.enter("puts")
            progress(f"[{count:,}] {args.puts} puts, {args.concurrency} in flight")
            out["puts"] = await puts(three, args.puts, args.concurrency)

            pinger.enter("join")
            progress(f"[{count:,}] D joins with an empty store")
            t0 = loop.time()
            d = await cl.start("D", [a], extra=common)
            pinger.add(d)

            async def handed() -> bool:
                st = await mon.status(d, timeout=2.0)
                h = (st or {}).get("handoff") or {}
                return bool(h.get("done")) or bool(h.get("error"))

            await wait_for("D's hand-off", handed, within=args.max_wait, every=0.5)
            last = await mon.status(d, timeout=2.0) or {}
            h = dict(last.get("handoff") or {})
            h["wall_s"] = round(loop.time() - t0, 1)
            secs = float(h.get("seconds") or 0.0)
            h["records_per_s"] = round(h.get("records", 0) / secs) if secs else None
            out["join"] = h
            pinger.enter("end")
        finally:
            await pinger.stop()
            ping_ep.close()
        out["stall_ms"] = {k: v for k, v in pinger.worst.items() if k != "end" and v}
        out["pings_lost"] = pinger.lost

        four = [*three, d]
        sts = await mon.statuses(four, timeout=2.0)
        out["size"] = {}
        for node, st in zip(four, sts, strict=True):
            held = sum(int(v) for k, v in ((st or {}).get("store") or {}).items()
                       if k in ("primary", "replica"))  # fmt: skip
            out["size"][node.name] = {
                "records": held,
                "bytes_per_record": round(dir_bytes([node.data_dir]) / held, 1) if held else None,
                "rss_mb": node.rss_mb(),
                "hwm_mb": node.hwm_mb(),
            }
    mon.close()
    return out


async def puts(nodes: list[NodeProc], total: int, concurrency: int) -> dict[str, Any]:
    clients = [Client(n.addr) for n in nodes]
    for client in clients:
        await client.open()
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    errors: dict[str, int] = {}
    queue = list(range(total))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            t0 = loop.time()
            try:
                await clients[i % len(clients)].put(b"bench-put-%08d" % i, b"x" * VALUE_BYTES)
                lat.append((loop.time() - t0) * 1000)
            except Exception as exc:  # counted, not fatal: the figure is the rate
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    start = loop.time()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        for client in clients:
            await client.close()
    seconds = loop.time() - start
    return {
        "ok": len(lat),
        "errors": errors,
        "per_s": round(len(lat) / seconds, 1),
        "p50_ms": round(percentile(lat, 0.5) or 0, 1),
        "p99_ms": round(percentile(lat, 0.99) or 0, 1),
    }


# --- report ------------------------------------------------------------------------------------


def figures(r: dict[str, Any]) -> dict[str, float]:
    """The headline figures of one size in one run (the worst node where there are several)."""
    repair = [v for v in r["repair"].values() if v]
    phases = r["stall_ms"]
    quiet = [ms for p in ("status", "one_key") for ms in phases.get(p, {}).values()]
    return {
        "in-sync round ms (median of nodes' last)": statistics.median(
            v["last_round_ms"] for v in repair
        ),
        "longest round ms (any node, idle window)": max(v["max_round_ms"] for v in repair),
        "one missing key: seconds": r["one_key"]["seconds"],
        "one missing key: primary's rounds": r["one_key"]["primary_rounds"],
        "longest ping RTT ms, no client load": max(quiet, default=0.0),
        "longest ping RTT ms, during the puts": max(phases.get("puts", {}).values(), default=0.0),
        "longest ping RTT ms, during the join": max(phases.get("join", {}).values(), default=0.0),
        "status ms (median)": r["status_ms"]["median"],
        "status ms (max)": r["status_ms"]["max"],
        "idle CPU % of a core (max node)": max(r["idle_cpu_pct"].values()),
        "puts/s": r["puts"]["per_s"],
        "put p99 ms": r["puts"]["p99_ms"],
        "join: records taken": r["join"].get("records") or 0,
        "join: seconds": r["join"].get("seconds") or 0.0,
        "join: records/s": r["join"].get("records_per_s") or 0,
        "disk bytes/record (A)": r["size"]["A"]["bytes_per_record"],
        "RSS MB (max node)": max(v["rss_mb"] or 0 for v in r["size"].values()),
    }


def spread(results: list[dict[str, Any]]) -> dict[int, dict[str, tuple[float, float, float]]]:
    """Per key count and figure, (min, median, max) over the runs."""
    per: dict[int, list[dict[str, float]]] = {}
    for result in results:
        for r in result["runs"]:
            per.setdefault(r["keys"], []).append(figures(r))
    return {
        keys: {
            name: (min(f[name] for f in fs), statistics.median(f[name] for f in fs),
                   max(f[name] for f in fs))
            for name in fs[0]
        }
        for keys, fs in sorted(per.items())
    }  # fmt: skip


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def table(results: list[dict[str, Any]]) -> str:
    """One column per key count; min / median / max when there are several runs."""
    sp = spread(results)
    several = len(results) > 1
    heads = [f"{k:,} keys" + (" (min / median / max)" if several else "") for k in sp]
    names = list(next(iter(sp.values())))
    cells = [
        [" / ".join(_num(v) for v in col[n]) if several else _num(col[n][1]) for col in sp.values()]
        for n in names
    ]
    width = max(len(n) for n in names)
    cw = max(len(h) for h in heads + [c for row in cells for c in row])
    lines = [f"{'':{width}}  " + "  ".join(f"{h:>{cw}}" for h in heads)]
    for name, row in zip(names, cells, strict=True):
        lines.append(f"{name:{width}}  " + "  ".join(f"{c:>{cw}}" for c in row))
    if several:
        lines.append(f"({len(results)} runs)")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Each headline figure against the key count: the median, and min..max as error bars."""
    plt = pyplot()
    if plt is None:
        return
    sp = spread(results)
    xs = list(sp)
    panels = [
        ("in-sync repair round (ms)", "in-sync round ms (median of nodes' last)", 50),
        ("longest ping RTT, no client load (ms)", "longest ping RTT ms, no client load", 50),
        ("longest ping RTT, during 2,000 puts (ms)", "longest ping RTT ms, during the puts", 50),
        ("status, median (ms)", "status ms (median)", 5),
        ("idle CPU (% of a core)", "idle CPU % of a core (max node)", 2),
        ("join hand-off (records/s)", "join: records/s", 100_000 / 30),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, (title, name, target) in zip(axes.flat, panels, strict=True):
        lo = [sp[k][name][1] - sp[k][name][0] for k in xs]
        hi = [sp[k][name][2] - sp[k][name][1] for k in xs]
        ax.errorbar(xs, [sp[k][name][1] for k in xs], yerr=[lo, hi], marker="o", capsize=4)
        ax.axhline(target, color="red", linestyle="--", linewidth=1, label="target")
        ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("keys per node")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
    fig.suptitle(
        f"bench/store.py: 3 node processes (r=3) on disk stores, D joins; {len(results)} run(s)"
    )
    save_plot(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="10k and 100k keys")
    p.add_argument("--sizes", type=positive, nargs="+", help="key counts (default 100000 1000000)")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of the idle window")
    p.add_argument("--status-calls", type=positive, default=20, help="status calls per node")
    p.add_argument("--puts", type=positive, default=2000, help="puts")
    p.add_argument("--concurrency", type=positive, default=32, help="puts in flight")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    p.add_argument("--max-wait", type=float, default=600.0, help="deadline of each wait (s)")
    p.add_argument("--plot", type=Path, help="write a PNG of each figure against the key count")
    p.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="measure nothing: report the runs these --json outputs hold (min/median/max)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.combine:
        results = [json.loads(p.read_text()) for p in args.combine]
    else:
        sizes = args.sizes or ([10_000, 100_000] if args.quick else [100_000, 1_000_000])
        install_signal_handlers()
        runs = [asyncio.run(one_size(n, args)) for n in sizes]
        results = [{"bench": "store", "loop": args.loop, "runs": runs}]
    if args.plot:
        plot(results, args.plot)
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else {"combined": results}))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
