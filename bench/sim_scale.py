"""How large a ring the simulator can run: rings built by the protocol, and ideal rings.

What is measured
    Two cases, each in a child process of its own (so that its peak RSS is its own, and so that
    a case that runs too long can be stopped at ``--max-seconds`` of wall time and reported as
    far as it got):

    * **protocol** (one per size in ``--sizes``, default 1000 3000 10000): on the in-memory
      network in virtual time (``Sim``, ``run_virtual``), one node starts a ring and the other
      N-1 join through the protocol (``Sim.join_many`` with via a random member at the moment
      each join starts), their start instants spread uniformly over ``N / --join-rate``
      virtual seconds (200 joins per virtual second by default). Then ``Sim.wait_ideal`` waits
      until every successor and predecessor list is the true next/previous L/2 nodes, checking
      Zave's ring invariants every ``--check-every`` virtual seconds on the way, at most
      ``--within`` virtual seconds. Reported: wall seconds, CPU seconds of the process
      (``time.process_time``), virtual seconds (joining, then until ideal), datagrams sent,
      invariant violations recorded, peak RSS.
    * **ideal** (``--ideal-nodes``, default 100,000): ``Sim.build_ideal`` (leafsets and fingers
      from global knowledge, maintenance off), then ``--lookups`` lookups (1000) from random
      nodes to random keys, ``--batch`` at a time, each checked against ``Sim.true_owner``.
      Reported: build wall/CPU seconds, lookup wall/CPU seconds, hops p50/p99 (remote nodes
      contacted), wrong or failed lookups, peak RSS.

    A case still running at ``--max-seconds`` is killed; its row says "timeout" and shows the
    last progress the child reported (nodes joined, virtual seconds, ideal problems left).

Targets (issue #11): a ring of 10,000 nodes built by the protocol within 300 s of wall time on
one core; 100,000 nodes from an ideal start, with every lookup correct.

Usage::

    python bench/sim_scale.py                       # 1000 3000 10000 by protocol; 100,000 ideal
    python bench/sim_scale.py --sizes 3000 --ideal-nodes 0
    python bench/sim_scale.py --quick               # 300 by protocol, 3000 ideal, 200 lookups
    python bench/sim_scale.py --json                # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import selectors
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:
    import udpdht  # noqa: F401  (installed editable in the venv; else run from a checkout)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import HelpFormatter, positive, progress  # bench/common.py

from udpdht import ids
from udpdht.net import run_virtual
from udpdht.sim import InvariantViolation, Sim

TARGET = "protocol 10000 nodes ideal within 300 wall s; ideal 100000 nodes, every lookup correct"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Reporter:
    """A child's progress: one JSON object a line on stdout, for the parent to keep the last."""

    def __init__(self, case: str, nodes: int) -> None:
        self.case = case
        self.nodes = nodes
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def emit(self, **fields: Any) -> None:
        record = {
            "case": self.case,
            "nodes": self.nodes,
            "wall_s": round(time.perf_counter() - self.wall0, 2),
            "cpu_s": round(time.process_time() - self.cpu0, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            **fields,
        }
        print(json.dumps(record), flush=True)


async def protocol_case(
    n: int, join_rate: float, within: float, check_every: float, seed: int
) -> None:
    loop = asyncio.get_running_loop()
    rep = Reporter("protocol", n)
    sim = Sim(seed=seed)
    stage = "joining"
    start = loop.time()

    async def report_progress() -> None:
        while True:
            await asyncio.sleep(5.0)
            rep.emit(
                stage=stage,
                joined=len(sim.joined),
                virtual_s=round(loop.time() - start, 2),
                datagrams=sim.net.stats.sent,
            )

    reporter = loop.create_task(report_progress())
    await sim.first()
    await sim.join_many(n - 1, spread=(n - 1) / join_rate)
    joined_at = loop.time()
    stage = "waiting for the ideal ring"
    try:
        await sim.wait_ideal(within, check_every=check_every)
        ideal = True
    except InvariantViolation as exc:
        progress(f"  {n} nodes: {str(exc)[:300]}")
        ideal = False
    reporter.cancel()
    rep.emit(
        stage="done",
        done=True,
        ideal=ideal,
        joined=len(sim.joined),
        join_virtual_s=round(joined_at - start, 2),
        virtual_s=round(loop.time() - start, 2),
        datagrams=sim.net.stats.sent,
        violations=len(sim.violations),
        problems_left=len(sim.ideal_problems()),
    )
    os._exit(0)  # the figures are out; stopping thousands of nodes measures nothing


async def ideal_case(n: int, lookups: int, batch: int, seed: int) -> None:
    rep = Reporter("ideal", n)
    sim = Sim(seed=seed)
    await sim.build_ideal(n)
    build_wall, build_cpu = time.perf_counter() - rep.wall0, time.process_time() - rep.cpu0
    rep.emit(stage="built", build_wall_s=round(build_wall, 2), build_cpu_s=round(build_cpu, 2))
    rng = random.Random(seed + 1)
    members = list(sim.joined.values())
    sim.true_owner(0)  # sorts the ring once, before the clock starts
    queries = [(rng.choice(members), rng.getrandbits(ids.BITS)) for _ in range(lookups)]
    hops: list[int] = []
    wrong = failed = 0
    wall1, cpu1 = time.perf_counter(), time.process_time()
    for first in range(0, lookups, batch):
        chunk = queries[first : first + batch]
        found = await asyncio.gather(
            *(node.lookup_id(key) for node, key in chunk), return_exceptions=True
        )
        for (_, key), result in zip(chunk, found, strict=True):
            if isinstance(result, BaseException):
                failed += 1
                continue
            hops.append(len(result.hops))
            if result.owner.id != sim.true_owner(key).id:
                wrong += 1
    qs = statistics.quantiles(hops, n=100, method="inclusive") if len(hops) > 1 else [0.0] * 99
    rep.emit(
        stage="done",
        done=True,
        build_wall_s=round(build_wall, 2),
        build_cpu_s=round(build_cpu, 2),
        lookups=lookups,
        lookup_wall_s=round(time.perf_counter() - wall1, 2),
        lookup_cpu_s=round(time.process_time() - cpu1, 2),
        hops_p50=statistics.median(hops) if hops else None,
        hops_p99=qs[98],
        hops_mean=round(statistics.fmean(hops), 3) if hops else None,
        wrong=wrong,
        failed=failed,
        datagrams=sim.net.stats.sent,
    )
    os._exit(0)


def run_child(args: list[str], max_seconds: float) -> dict[str, Any]:
    """Run one case in a child process; its last progress record, marked if it timed out."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    last: dict[str, Any] = {}
    deadline = time.monotonic() + max_seconds
    timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(child.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not sel.select(left):
                continue
            line = child.stdout.readline()
            if not line:
                break
            last = json.loads(line)
            if "stage" in last:
                shown = {k: v for k, v in last.items() if k not in ("case", "nodes")}
                progress(f"  {last['case']} {last['nodes']}: {shown}")
    if timed_out:
        child.kill()
    child.wait()
    child.stdout.close()
    last["timed_out"] = timed_out
    last.setdefault("done", False)
    return last


def table(protocol: list[dict[str, Any]], ideal: list[dict[str, Any]], max_s: float) -> str:
    lines = []
    if protocol:
        header = (
            f"{'nodes':>6} {'result':>8} {'joined':>6} {'wall_s':>7} {'cpu_s':>7} "
            f"{'join_vs':>7} {'virt_s':>7} {'datagrams':>10} {'viol':>4} {'rss_mb':>7}"
        )
        lines += [
            "rings built by the protocol (virtual s: joins spread, then until ideal)",
            header,
            "-" * len(header),
        ]
        for r in protocol:
            result = (
                f"timeout>{max_s:g}"
                if r["timed_out"]
                else ("ideal" if r.get("ideal") else "not-ideal")
            )
            lines.append(
                f"{r.get('nodes', 0):6d} {result:>8} {r.get('joined', 0):6d} "
                f"{r.get('wall_s', 0):7.1f} {r.get('cpu_s', 0):7.1f} "
                f"{r.get('join_virtual_s', float('nan')):7.1f} "
                f"{r.get('virtual_s', float('nan')):7.1f} {r.get('datagrams', 0):10d} "
                f"{r.get('violations', 0):4d} {r.get('peak_rss_mb', 0):7.0f}"
            )
    for r in ideal:
        if lines:
            lines.append("")
        if not r["done"]:
            lines.append(
                f"ideal ring of {r.get('nodes')} nodes: not finished "
                f"({'timeout' if r['timed_out'] else 'failed'}) at stage {r.get('stage')}, "
                f"wall {r.get('wall_s')} s, RSS {r.get('peak_rss_mb')} MB"
            )
            continue
        lines += [
            f"ideal ring of {r['nodes']} nodes: build wall {r['build_wall_s']:.1f} s "
            f"(CPU {r['build_cpu_s']:.1f} s), peak RSS {r['peak_rss_mb']:.0f} MB",
            f"  {r['lookups']} lookups: wall {r['lookup_wall_s']:.1f} s "
            f"(CPU {r['lookup_cpu_s']:.1f} s), hops p50 {r['hops_p50']} p99 {r['hops_p99']} "
            f"mean {r['hops_mean']}, wrong {r['wrong']}, failed {r['failed']}",
        ]
    lines.append(f"target: {TARGET}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        description="How large a ring the simulator runs: by protocol, and from an ideal start.",
    )
    parser.add_argument(
        "--sizes", type=positive, nargs="*", help="ring sizes built by the protocol"
    )
    parser.add_argument(
        "--ideal-nodes", type=int, help="size of the ideal ring (0: skip; default 100000)"
    )
    parser.add_argument("--lookups", type=positive, help="lookups on the ideal ring (1000)")
    parser.add_argument("--batch", type=positive, default=200, help="lookups in flight")
    parser.add_argument(
        "--join-rate", type=float, default=200.0, help="joins per virtual second (spread)"
    )
    parser.add_argument(
        "--within", type=float, default=300.0, help="virtual s to wait for the ideal ring"
    )
    parser.add_argument(
        "--check-every", type=float, default=1.0, help="virtual s between invariant checks"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=600.0, help="wall seconds per case before a kill"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="300 by protocol, 3000 ideal")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument("--child", choices=["protocol", "ideal"], help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=positive, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.sizes is None:
        opts.sizes = [300] if opts.quick else [1000, 3000, 10000]
    if opts.ideal_nodes is None:
        opts.ideal_nodes = 3000 if opts.quick else 100_000
    opts.lookups = opts.lookups or (200 if opts.quick else 1000)
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.child == "protocol":
        run_virtual(
            protocol_case(opts.nodes, opts.join_rate, opts.within, opts.check_every, opts.seed)
        )
        return 0
    if opts.child == "ideal":
        run_virtual(ideal_case(opts.nodes, opts.lookups, opts.batch, opts.seed))
        return 0
    common = ["--seed", str(opts.seed)]
    protocol = []
    for n in opts.sizes:
        progress(f"protocol: {n} nodes ...")
        args = ["--child", "protocol", "--nodes", str(n), *common]
        args += ["--join-rate", str(opts.join_rate), "--within", str(opts.within)]
        args += ["--check-every", str(opts.check_every)]
        row = run_child(args, opts.max_seconds)
        row.setdefault("nodes", n)
        protocol.append(row)
    ideal = []
    if opts.ideal_nodes > 0:
        progress(f"ideal: {opts.ideal_nodes} nodes, {opts.lookups} lookups ...")
        args = ["--child", "ideal", "--nodes", str(opts.ideal_nodes), *common]
        args += ["--lookups", str(opts.lookups), "--batch", str(opts.batch)]
        row = run_child(args, opts.max_seconds)
        row.setdefault("nodes", opts.ideal_nodes)
        ideal.append(row)
    if opts.json:
        print(
            json.dumps(
                {
                    "protocol": protocol,
                    "ideal": ideal,
                    "target": TARGET,
                    "settings": {
                        "join_rate": opts.join_rate,
                        "within_virtual_s": opts.within,
                        "check_every_virtual_s": opts.check_every,
                        "max_wall_s": opts.max_seconds,
                        "seed": opts.seed,
                    },
                }
            )
        )
    else:
        print(table(protocol, ideal, opts.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
