"""Lookups after many nodes fail at once, before and after repair: Chord's §6.4 experiment.

The experiment
    For each fraction p (0.05, 0.10, 0.20, 0.30, 0.40, 0.50 by default), on a fresh ring:

    1. build ``--nodes`` nodes (1000 by default) with ideal leafsets and fingers and maintenance
       *on* (``Sim.build_ideal(N, maintenance=True)``), on the in-memory network in virtual
       time, and let it run ``--warmup`` virtual seconds so that nodes have RTT estimates for
       the peers they talk to, as in a ring that has been up for a while;
    2. crash a random fraction p of the nodes at the same instant (``Sim.crash_many``);
    3. *before repair*: at that instant start ``--lookups`` lookups from random live nodes to
       random 160-bit keys, all at once; a lookup fails if it raises (``LookupFailed``) or
       names an owner other than the key's true live successor;
    4. meanwhile wait until the ring is ideal again (``Sim.wait_ideal``: every successor and
       predecessor list is the true next/previous L/2 live nodes), checking Zave's ring
       invariants every 0.5 virtual s on the way; the virtual seconds from the crash to the
       ideal ring are the repair time (``--within`` bounds the wait; a timeout is reported);
    5. *after repair*: ``--lookups`` more lookups, ``--batch`` at a time, counted the same way,
       with their path length (remote nodes contacted) and virtual latency.

    Also reported: the fraction of the before-repair keys whose owner was among the crashed
    nodes (the failures a Chord without replication must have); the live nodes left with no
    live entry in their successor list at the crash (Zave's failure model rules that out; with
    L/2 = 8 successors about N·(1−p)·p^8 nodes are in that state by chance, ≈ 2 of 1000 at
    p = 0.5); and the invariant violations the checks recorded (such a node is reported at
    every check until it recovers).

What the paper found
    Stoica et al. (SIGCOMM 2001 §6.4; ToN 2003) failed a fraction p of 10^4 nodes at once, up to
    p = 0.5: the fraction of failed lookups was almost exactly p, which is just the fraction of
    keys whose responsible node failed (Chord alone does not replicate data), so routing itself
    lost nothing; once stabilization has run, lookups find the new owners.

Targets: no failed lookup after repair; before repair a failed fraction ≈ p is acceptable.

Usage::

    python bench/sim_failures.py              # 1000 nodes, six values of p, table and plot
    python bench/sim_failures.py --quick      # 300 nodes, p = 0.1, 0.3, 0.5, 500 lookups
    python bench/sim_failures.py --json       # one JSON object on stdout, progress on stderr
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
from udpdht.sim import InvariantViolation, Sim

DEFAULT_PLOT = Path(__file__).resolve().parent / "out" / "sim_failures.png"
DEFAULT_PS = (0.05, 0.10, 0.20, 0.30, 0.40, 0.50)
QUICK_PS = (0.10, 0.30, 0.50)
TARGET = "failed_after == 0 (failed_before ~ p is acceptable)"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Owners:
    """True successors on a ring whose membership no longer changes: one sort, then bisection
    (``Sim.true_owner`` sorts the live nodes on every call)."""

    def __init__(self, node_ids: list[int]) -> None:
        self.ids = sorted(node_ids)

    def __call__(self, key: int) -> int:
        return self.ids[bisect.bisect_left(self.ids, key) % len(self.ids)]


@dataclass
class Outcome:
    """A set of lookups: how many failed, their path lengths and virtual latencies."""

    lookups: int = 0
    wrong_owner: int = 0
    raised: int = 0
    hops: int = 0  # summed over the lookups that returned
    virtual_s: float = 0.0  # summed over all lookups

    @property
    def failed(self) -> int:
        return self.wrong_owner + self.raised

    @property
    def mean_hops(self) -> float:
        answered = self.lookups - self.raised
        return self.hops / answered if answered else float("nan")

    @property
    def mean_virtual_s(self) -> float:
        return self.virtual_s / self.lookups if self.lookups else float("nan")


async def one_lookup(node: Node, key: int, owners: Owners, out: Outcome) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        found = await node.lookup_id(key)
    except Exception:
        out.raised += 1
    else:
        out.hops += len(found.hops)
        if found.owner.id != owners(key):
            out.wrong_owner += 1
    finally:
        out.lookups += 1
        out.virtual_s += loop.time() - start


async def lookups_at_once(
    origins: list[Node], keys: list[int], owners: Owners, batch: int
) -> Outcome:
    out = Outcome()
    for first in range(0, len(keys), batch):  # bounded: len(keys) / batch rounds
        await asyncio.gather(
            *(
                one_lookup(node, key, owners, out)
                for node, key in zip(
                    origins[first : first + batch], keys[first : first + batch], strict=True
                )
            )
        )
    return out


@dataclass
class Row:
    p: float
    nodes: int
    crashed: int
    lookups: int
    owner_died: float  # fraction of the before-repair keys whose owner crashed
    failed_before: float
    raised_before: int
    mean_hops_before: float
    lookup_virtual_s_before: float
    repair_virtual_s: float | None  # None: not ideal within --within
    failed_after: float
    raised_after: int
    mean_hops_after: float
    lookup_virtual_s_after: float
    no_live_successor: int  # live nodes whose whole successor list crashed
    violations: int  # invariant violations recorded by the checks (repeats included)
    wall_s: float

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key, value in d.items():
            if isinstance(value, float):
                d[key] = None if math.isnan(value) else round(value, 4)
        d["repair_timed_out"] = self.repair_virtual_s is None
        return d


async def run_one(
    n: int, p: float, lookups: int, batch: int, warmup: float, within: float, seed: int
) -> Row:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    rng = random.Random(seed * 1_000_003 + round(p * 1000))
    sim = Sim(seed=seed)
    try:
        nodes = await sim.build_ideal(n, maintenance=True)
        await asyncio.sleep(warmup)
        if sim.ideal_problems() or sim.violations:
            raise RuntimeError(f"the ring was not ideal after {warmup} s of warm-up")
        before_owners = Owners([node.id for node in nodes])
        dead = rng.sample(nodes, round(p * n))
        dead_ids = {node.id for node in dead}
        await sim.crash_many(dead)  # no virtual time passes: every node stops at once
        crash_at = loop.time()
        live = list(sim.joined.values())
        owners = Owners([node.id for node in live])
        no_live = sum(
            1 for node in live if not any(peer.id in sim.joined for peer in node.leafset.successors)
        )

        keys = [rng.getrandbits(ids.BITS) for _ in range(lookups)]
        origins = [rng.choice(live) for _ in range(lookups)]
        owner_died = sum(before_owners(key) in dead_ids for key in keys) / lookups
        before = loop.create_task(lookups_at_once(origins, keys, owners, lookups))
        repair: float | None
        try:
            await sim.wait_ideal(within)
            repair = loop.time() - crash_at
        except InvariantViolation as exc:
            progress(f"  p={p}: {exc}")
            repair = None
        out_before = await before

        keys = [rng.getrandbits(ids.BITS) for _ in range(lookups)]
        origins = [rng.choice(live) for _ in range(lookups)]
        if sim.true_owner(keys[0]).id != owners(keys[0]):
            raise RuntimeError("cached owners disagree with Sim.true_owner")
        out_after = await lookups_at_once(origins, keys, owners, batch)
        violations = len(sim.violations)
    finally:
        await sim.stop()
    del sim
    gc.collect()
    return Row(
        p=p,
        nodes=n,
        crashed=len(dead),
        lookups=lookups,
        owner_died=owner_died,
        failed_before=out_before.failed / lookups,
        raised_before=out_before.raised,
        mean_hops_before=out_before.mean_hops,
        lookup_virtual_s_before=out_before.mean_virtual_s,
        repair_virtual_s=repair,
        failed_after=out_after.failed / lookups,
        raised_after=out_after.raised,
        mean_hops_after=out_after.mean_hops,
        lookup_virtual_s_after=out_after.mean_virtual_s,
        no_live_successor=no_live,
        violations=violations,
        wall_s=time.perf_counter() - started,
    )


async def run_all(
    n: int, ps: list[float], lookups: int, batch: int, warmup: float, within: float, seed: int
) -> list[Row]:
    rows = []
    for p in ps:
        progress(f"p = {p:.2f}: {n} nodes, crashing {round(p * n)} ...")
        row = await run_one(n, p, lookups, batch, warmup, within, seed)
        repair = "timed out" if row.repair_virtual_s is None else f"{row.repair_virtual_s:.1f} s"
        progress(
            f"  failed before {row.failed_before:.4f} (owner died {row.owner_died:.4f}), "
            f"repair {repair}, failed after {row.failed_after:.4f}, wall {row.wall_s:.1f} s"
        )
        rows.append(row)
    return rows


def table(rows: list[Row], warmup: float) -> str:
    header = (
        f"{'p':>5} {'crashed':>7} {'owner_died':>10} {'fail_before':>11} {'raised':>6} "
        f"{'repair_vs':>9} {'fail_after':>10} {'hops_after':>10} {'lat_before':>10} "
        f"{'lat_after':>9} {'no_succ':>7} {'viol':>5} {'wall_s':>7}"
    )
    top = rows[0]
    lines = [
        f"{top.nodes} nodes, {top.lookups} lookups before and after repair, "
        f"{warmup:g} virtual s of warm-up; repair and latencies in virtual seconds",
        "raised: before-repair lookups that raised (LookupFailed) instead of naming an owner",
        header,
        "-" * len(header),
    ]
    for r in rows:
        repair = "timeout" if r.repair_virtual_s is None else f"{r.repair_virtual_s:.1f}"
        lines.append(
            f"{r.p:5.2f} {r.crashed:7d} {r.owner_died:10.4f} {r.failed_before:11.4f} "
            f"{r.raised_before:6d} {repair:>9} {r.failed_after:10.4f} {r.mean_hops_after:10.3f} "
            f"{r.lookup_virtual_s_before:10.3f} {r.lookup_virtual_s_after:9.3f} "
            f"{r.no_live_successor:7d} {r.violations:5d} {r.wall_s:7.1f}"
        )
    lines.append(f"target: {TARGET}")
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return

    ps = [r.p for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(ps, ps, ":", color="gray", label="y = p")
    ax.plot(ps, [r.owner_died for r in rows], "s--", label="keys whose owner crashed")
    ax.plot(ps, [r.failed_before for r in rows], "o-", label="failed lookups, before repair")
    ax.plot(ps, [r.failed_after for r in rows], "^-", label="failed lookups, after repair")
    ax.set_xlabel("fraction of nodes crashed at once, p")
    ax.set_ylabel("fraction of lookups")
    ax.set_title(f"Simultaneous failures, {rows[0].nodes} nodes, {rows[0].lookups} lookups each")
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_plot(fig, path)


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, not {value}")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be 0..3600 virtual seconds, not {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        description="Chord §6.4: lookups before and after repair when a fraction p of the "
        "nodes crash at once, on a simulated ring.",
    )
    parser.add_argument("--nodes", type=positive, help="ring size (default 1000; 300 --quick)")
    parser.add_argument(
        "--p", type=fraction, nargs="+", metavar="P", help="fractions to crash (default 0.05 … 0.5)"
    )
    parser.add_argument("--lookups", type=positive, help="lookups before and after (2000)")
    parser.add_argument(
        "--batch", type=positive, default=200, help="after-repair lookups in flight"
    )
    parser.add_argument(
        "--warmup", type=seconds, default=10.0, help="virtual seconds of maintenance before"
    )
    parser.add_argument(
        "--within", type=seconds, default=300.0, help="virtual seconds to wait for repair"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the network, crashes, keys")
    parser.add_argument(
        "--quick", action="store_true", help="300 nodes, p = 0.1 0.3 0.5, 500 lookups"
    )
    parser.add_argument(
        "--plot", type=Path, default=DEFAULT_PLOT, metavar="PATH", help="PNG to write"
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    opts = parser.parse_args(argv)
    opts.nodes = opts.nodes or (300 if opts.quick else 1000)
    opts.lookups = opts.lookups or (500 if opts.quick else 2000)
    opts.p = opts.p or list(QUICK_PS if opts.quick else DEFAULT_PS)
    if opts.nodes < 20:
        parser.error("--nodes must be at least 20 (a ring of a few nodes says nothing)")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.perf_counter()
    rows = run_virtual(
        run_all(opts.nodes, opts.p, opts.lookups, opts.batch, opts.warmup, opts.within, opts.seed)
    )
    total_s = time.perf_counter() - started
    rss_mb = peak_rss_mb()  # before matplotlib is imported
    progress(f"done in {total_s:.1f} s, peak RSS {rss_mb:.0f} MB")
    if not opts.no_plot:
        plot(rows, opts.plot)
    if opts.json:
        print(
            json.dumps(
                {
                    "nodes": opts.nodes,
                    "results": [r.as_dict() for r in rows],
                    "target": TARGET,
                    "settings": {
                        "lookups": opts.lookups,
                        "warmup_virtual_s": opts.warmup,
                        "within_virtual_s": opts.within,
                        "seed": opts.seed,
                    },
                    "total_wall_s": round(total_s, 3),
                    "peak_rss_mb": round(rss_mb, 1),
                }
            )
        )
    else:
        print(table(rows, opts.warmup))
        print(f"total wall {total_s:.1f} s, peak RSS {rss_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
