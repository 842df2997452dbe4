"""Lookup path length against ring size: the Chord paper's path-length figure (§6.3).

The experiment
    For N = 2^k nodes, k = ``--min-exp`` … ``--max-exp`` (3 … 12 by default), build a converged
    ring on the in-memory network in virtual time with ``Sim.build_ideal(N)``: every leafset and
    finger table is set from global knowledge and maintenance is off, so nothing changes while
    we measure. Then run ``--lookups`` iterative lookups (10,000 by default, for every N) from
    random nodes to random 160-bit keys, ``--batch`` at a time, and record for each the number
    of remote nodes it contacted (``len(Lookup.hops)``; 0 when the origin's own leafset already
    names the owner). Every lookup's answer is checked against the true successor of the key
    (``Sim.true_owner``); a wrong owner or an exception counts as a failure.

    Reported per N: mean, 1st and 99th percentile of the hop count, ½·log2 N, failures, and the
    wall time of the build and of the lookups; for the largest N also the wall time of the whole
    run (build, lookups, teardown) and the peak RSS of the process (``ru_maxrss``, a high-water
    mark: since N grows, it is the largest run's).

What the paper found
    Stoica et al. (SIGCOMM 2001, §6.3; ToN 2003) ran 2^k nodes for k = 3 … 14 with 100·2^k keys:
    the mean path length is about ½·log2 N (a lookup fixes about half of the log2 N bits of its
    distance to the key, the 1-bits), and the 1st–99th percentile spread stays within a few hops
    of it. Our nodes also route with a leafset of L/2 successors and L/2 predecessors (16 in
    all by default), which resolves the last hops locally, so our mean should sit at or below
    ½·log2 N; for N ≤ L + 1 every node's leafset covers the whole ring and lookups take 0 hops.

Target: mean hops ≤ ½·log2 N at every N, no failed lookup; a ring of about 10k nodes built and
looked up in ≤ 5 min and ≤ 2 GB.

Usage::

    python bench/sim_paths.py                  # N = 2^3 … 2^12, human table, plot
    python bench/sim_paths.py --max-exp 14     # up to 16384 nodes
    python bench/sim_paths.py --json           # one JSON object on stdout, progress on stderr
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import json
import math
import random
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

try:
    import udpdht  # noqa: F401  (installed editable in the venv; else run from a checkout)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import HelpFormatter, positive, progress, pyplot, save_plot  # bench/common.py

from udpdht import ids
from udpdht.net import run_virtual
from udpdht.node import Node
from udpdht.sim import Sim

DEFAULT_PLOT = Path(__file__).resolve().parent / "out" / "sim_paths.png"
TARGET = "mean_hops <= 0.5*log2(N)"
OWNER_SPOT_CHECKS = 20  # lookups per N also checked against Sim.true_owner itself


def percentile(ordered: list[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Row:
    nodes: int
    lookups: int
    mean_hops: float
    p1_hops: int
    p99_hops: int
    max_hops: int
    half_log2_n: float
    failures: int
    build_s: float
    lookup_s: float
    wall_s: float  # build + lookups + teardown
    virtual_s: float  # virtual time the lookups took, all batches
    peak_rss_mb: float  # of the process after this N (a high-water mark)

    @property
    def passed(self) -> bool:
        return self.failures == 0 and self.mean_hops <= self.half_log2_n

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("mean_hops", "half_log2_n"):
            d[key] = round(d[key], 4)
        for key in ("build_s", "lookup_s", "wall_s", "virtual_s", "peak_rss_mb"):
            d[key] = round(d[key], 3)
        d["pass"] = self.passed
        return d


class Owners:
    """The true successor of a key on a ring that does not change: one sort, then bisection.

    ``Sim.true_owner`` sorts the live nodes on every call, which at 16k nodes costs more than
    the lookup it checks; this gives the same answer (spot-checked against it).
    """

    def __init__(self, sim: Sim) -> None:
        self.ids = [p.id for p in sim.live_peers()]

    def __call__(self, key: int) -> int:
        return self.ids[bisect.bisect_left(self.ids, key) % len(self.ids)]


async def one_lookup(node: Node, key: int) -> tuple[int, int] | BaseException:
    """(owner id, hops) of one lookup, or the exception it raised."""
    try:
        found = await node.lookup_id(key)
    except Exception as exc:
        return exc
    return found.owner.id, len(found.hops)


async def measure(n: int, lookups: int, batch: int, seed: int) -> Row:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed * 1_000_003 + n)
    started = time.perf_counter()
    sim = Sim(seed=seed)
    try:
        nodes = await sim.build_ideal(n)
        build_s = time.perf_counter() - started
        owners = Owners(sim)
        hops: list[int] = []
        failures = 0
        t0, v0 = time.perf_counter(), loop.time()
        for first in range(0, lookups, batch):  # bounded: lookups / batch rounds
            size = min(batch, lookups - first)
            keys = [rng.getrandbits(ids.BITS) for _ in range(size)]
            origins = [rng.choice(nodes) for _ in range(size)]
            results = await asyncio.gather(
                *(one_lookup(o, k) for o, k in zip(origins, keys, strict=True))
            )
            for key, result in zip(keys, results, strict=True):
                if isinstance(result, BaseException):
                    failures += 1
                    continue
                owner, count = result
                hops.append(count)
                if owner != owners(key):
                    failures += 1
            if first == 0:
                for key in keys[:OWNER_SPOT_CHECKS]:
                    if sim.true_owner(key).id != owners(key):
                        raise RuntimeError("cached owners disagree with Sim.true_owner")
        lookup_s = time.perf_counter() - t0
        virtual_s = loop.time() - v0
    finally:
        await sim.stop()
    del sim
    gc.collect()
    hops.sort()
    if not hops:
        raise RuntimeError(f"N={n}: every lookup failed")
    return Row(
        nodes=n,
        lookups=lookups,
        mean_hops=sum(hops) / len(hops),
        p1_hops=percentile(hops, 0.01),
        p99_hops=percentile(hops, 0.99),
        max_hops=hops[-1],
        half_log2_n=0.5 * math.log2(n),
        failures=failures,
        build_s=build_s,
        lookup_s=lookup_s,
        wall_s=time.perf_counter() - started,
        virtual_s=virtual_s,
        peak_rss_mb=peak_rss_mb(),
    )


async def run_all(exps: range, lookups: int, batch: int, seed: int) -> list[Row]:
    rows = []
    for k in exps:
        n = 1 << k
        progress(f"N = 2^{k} = {n}: building, then {lookups} lookups ...")
        row = await measure(n, lookups, batch, seed)
        progress(
            f"  mean {row.mean_hops:.3f} hops (½·log2 N = {row.half_log2_n:.1f}), "
            f"failures {row.failures}, build {row.build_s:.2f} s, lookups {row.lookup_s:.2f} s, "
            f"peak RSS {row.peak_rss_mb:.0f} MB"
        )
        rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    header = (
        f"{'nodes':>6} {'lookups':>7} {'mean':>6} {'p1':>3} {'p99':>4} {'max':>4} "
        f"{'½log2N':>6} {'fail':>4} {'build_s':>8} {'lookup_s':>8} {'rss_MB':>7}  target"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.nodes:6d} {r.lookups:7d} {r.mean_hops:6.3f} {r.p1_hops:3d} {r.p99_hops:4d} "
            f"{r.max_hops:4d} {r.half_log2_n:6.2f} {r.failures:4d} {r.build_s:8.2f} "
            f"{r.lookup_s:8.2f} {r.peak_rss_mb:7.0f}  {'PASS' if r.passed else 'FAIL'}"
        )
    top = rows[-1]
    lines.append(
        f"largest: {top.nodes} nodes, wall {top.wall_s:.1f} s (build {top.build_s:.1f} s, "
        f"lookups {top.lookup_s:.1f} s), peak RSS {top.peak_rss_mb:.0f} MB"
    )
    lines.append(f"target: {TARGET} and 0 failures at every N")
    return "\n".join(lines)


def report(rows: list[Row], seed: int, total_s: float) -> dict[str, Any]:
    top = rows[-1]
    return {
        "results": [r.as_dict() for r in rows],
        "largest": {
            "nodes": top.nodes,
            "wall_s": round(top.wall_s, 3),
            "peak_rss_mb": round(top.peak_rss_mb, 1),
        },
        "target": TARGET,
        "all_pass": all(r.passed for r in rows),
        "seed": seed,
        "total_wall_s": round(total_s, 3),
    }


def plot(rows: list[Row], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return

    xs = [r.nodes for r in rows]
    means = [r.mean_hops for r in rows]
    low = [r.mean_hops - r.p1_hops for r in rows]
    high = [r.p99_hops - r.mean_hops for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.errorbar(xs, means, yerr=[low, high], fmt="o-", capsize=4, label="mean hops (p1–p99)")
    ax.plot(xs, [r.half_log2_n for r in rows], "--", color="gray", label="½·log2 N")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("nodes N")
    ax.set_ylabel("remote nodes contacted per lookup")
    ax.set_title(f"Lookup path length, ideal ring ({rows[0].lookups} lookups per N)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_plot(fig, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        description="Chord §6.3: lookup path length against ring size on an ideal simulated ring.",
    )
    parser.add_argument("--min-exp", type=positive, default=3, help="smallest N is 2^MIN_EXP")
    parser.add_argument("--max-exp", type=positive, default=12, help="largest N is 2^MAX_EXP")
    parser.add_argument("--lookups", type=positive, default=10_000, help="lookups per N")
    parser.add_argument("--batch", type=positive, default=200, help="lookups in flight at once")
    parser.add_argument("--seed", type=int, default=1, help="seed of the network and the keys")
    parser.add_argument(
        "--plot", type=Path, default=DEFAULT_PLOT, metavar="PATH", help="PNG to write"
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    opts = parser.parse_args(argv)
    if opts.min_exp > opts.max_exp:
        parser.error("--min-exp must not exceed --max-exp")
    if opts.max_exp > 20:
        parser.error("--max-exp above 20 would not fit in memory")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.perf_counter()
    exps = range(opts.min_exp, opts.max_exp + 1)
    rows = run_virtual(run_all(exps, opts.lookups, opts.batch, opts.seed))
    total_s = time.perf_counter() - started
    progress(f"done in {total_s:.1f} s")
    if not opts.no_plot:
        plot(rows, opts.plot)
    if opts.json:
        print(json.dumps(report(rows, opts.seed, total_s)))
    else:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
