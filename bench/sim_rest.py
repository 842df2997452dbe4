"""What maintenance costs per node on the simulator: at rest, and while nodes join nearby.

What is measured
    For each size N in ``--sizes`` (16 100 3000), on the in-memory network in virtual time: a
    ring of N nodes from an ideal start (``Sim.build_ideal``) with maintenance on. After
    ``--settle`` virtual seconds (60), a window of ``--window`` virtual seconds (60) with
    nothing to do: **at rest**. Then ``--joins`` nodes (a tenth of N) join through the
    protocol, 200 a virtual second (``--join-rate``): **while joining**, the window being the
    joins' spread. For each window: the datagrams sent per node and virtual second, the
    requests by method per node and second, and the CPU time of the process per node and
    virtual second (``time.process_time``: noisy on a shared machine, the datagrams are not).

    Nothing else runs: each size in a fresh ``Sim`` with ``--seed`` (1).

Usage::

    python bench/sim_rest.py                    # 16, 100 and 3,000 nodes
    python bench/sim_rest.py --sizes 100 --json # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

try:
    import udpdht  # noqa: F401  (installed editable in the venv; else run from a checkout)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import HelpFormatter, per_size, positive  # bench/common.py

from udpdht import wire
from udpdht.errors import DhtError
from udpdht.net import Address, run_virtual
from udpdht.sim import Sim


class Window:
    """Requests by method and datagrams sent, from now until ``close``."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.methods: Counter[str] = Counter()
        self.sent0 = sim.net.stats.sent
        self.cpu0 = time.process_time()
        self.t0 = asyncio.get_running_loop().time()
        sim.net.set_drop_filter(self._watch)

    def _watch(self, src: Address, dst: Address, data: bytes) -> bool:
        try:
            msg = wire.decode(data)
        except DhtError:
            return False
        if isinstance(msg, wire.Request):
            self.methods[msg.method] += 1
        return False  # drops nothing

    def close(self, nodes: int) -> dict[str, Any]:
        self.sim.net.set_drop_filter(None)
        seconds = asyncio.get_running_loop().time() - self.t0
        per = nodes * seconds
        return {
            "virtual_s": round(seconds, 2),
            "datagrams_per_node_s": round((self.sim.net.stats.sent - self.sent0) / per, 3),
            "cpu_ms_per_node_s": round(1000 * (time.process_time() - self.cpu0) / per, 4),
            "requests_per_node_s": {m: round(c / per, 3) for m, c in self.methods.most_common()},
        }


async def one_size(n: int, opts: argparse.Namespace) -> dict[str, Any]:
    sim = Sim(seed=opts.seed)
    await sim.build_ideal(n, maintenance=True)
    await asyncio.sleep(opts.settle)
    window = Window(sim)
    await asyncio.sleep(opts.window)
    rest = window.close(n)
    joins = opts.joins if opts.joins is not None else max(1, n // 10)
    window = Window(sim)
    await sim.join_many(joins, spread=joins / opts.join_rate)
    joining = window.close(n)  # per node of the ring the joins came into
    await sim.stop()
    return {"nodes": n, "joins": joins, "rest": rest, "joining": joining}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'nodes':>6} {'window':>8} {'virt_s':>7} {'dg/node/s':>10} {'cpu ms':>7}  top requests",
        "-" * 78,
    ]
    for row in rows:
        for name in ("rest", "joining"):
            w = row[name]
            top = ", ".join(f"{m} {v}" for m, v in list(w["requests_per_node_s"].items())[:4])
            lines.append(
                f"{row['nodes']:6d} {name:>8} {w['virtual_s']:7.1f} "
                f"{w['datagrams_per_node_s']:10.3f} {w['cpu_ms_per_node_s']:7.3f}  {top}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        description="Maintenance per node on the simulator: at rest, and while nodes join.",
    )
    parser.add_argument("--sizes", type=positive, nargs="*", default=[16, 100, 3000])
    parser.add_argument("--settle", type=float, default=60.0, help="virtual s before at rest")
    parser.add_argument("--window", type=float, default=60.0, help="virtual s at rest")
    parser.add_argument("--joins", type=int, help="nodes that join (default: a tenth of N)")
    parser.add_argument("--join-rate", type=float, default=200.0, help="joins a virtual s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    opts = parser.parse_args(argv)
    rows = per_size(opts.sizes, lambda n: run_virtual(one_size(n, opts)))
    if opts.json:
        print(json.dumps({"bench": "sim_rest", "seed": opts.seed, "sizes": rows}))
    else:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
