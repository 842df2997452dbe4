"""Datagrams a get costs, in a settled ring on the simulator: a key with a value, and one without.

The experiment
    For each N (``--sizes``, 12 24 48 by default), build an ideal ring of N nodes with
    maintenance on (r = 3), wait until every node is settled, then let it rest 30 virtual
    seconds. Put ``--keys`` keys (100) through random nodes. Then measure, from random nodes:
    ``--keys`` gets of those keys, and ``--keys`` gets of keys never written (each must raise
    KeyNotFound). Per phase: the datagrams every node sent, less what the ring sends at rest
    in the same virtual time (measured over 10 s just before), per get; and the ``store_read``
    requests per get, counted on the wire. Every answer is checked.

    The simulator loses nothing and its clock is virtual: the figures are exact counts of one
    seed, the same on any machine.

Why
    A get of a key with no value cannot stop at its primary: a "no value" is believed only once
    the other holders, and the nodes after them, have none either (PROTOCOL.md section 10.5).
    A helper's audit counted what that costs (12-23 datagrams a get, uncharged to the client).
    To compare two versions of the code, run this file with each on ``PYTHONPATH``.

Usage::

    python bench/sim_reads.py                 # human table
    python bench/sim_reads.py --json          # one JSON object on stdout, progress on stderr
    python bench/sim_reads.py --sizes 12      # one ring
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path
from typing import Any

try:
    import udpdht  # noqa: F401  (installed editable in the venv; else run from a checkout)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import HelpFormatter, per_size, positive  # bench/common.py

from udpdht import DhtError, KeyNotFound, wire
from udpdht.net import run_virtual
from udpdht.node import Node
from udpdht.replication import StoreConfig
from udpdht.sim import Sim

REST_S = 10.0  # virtual seconds over which the ring's own traffic is measured


def _is_read(data: bytes) -> bool:
    try:
        msg = wire.decode(data)
    except DhtError:
        return False
    return isinstance(msg, wire.Request) and msg.method == "store_read"


async def one_size(n: int, keys: int, seed: int) -> dict[str, Any]:
    sim = Sim(seed=seed, store_config=StoreConfig(replicas=3))
    nodes = await sim.build_ideal(n, maintenance=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while not all(node.replicator.settled() for node in nodes):
        if loop.time() > deadline:
            raise RuntimeError(f"N={n}: not every node settled in 120 virtual s")
        await asyncio.sleep(0.5)
    await asyncio.sleep(30)
    rng = random.Random(seed)
    present = [f"present-{i}" for i in range(keys)]
    for key in present:
        await rng.choice(nodes).put(key, "v")

    def sent() -> int:
        return sum(node.endpoint.stats.sent for node in nodes)

    before = sent()
    await asyncio.sleep(REST_S)
    rest_per_s = (sent() - before) / REST_S
    reads = [0]

    def count(src: Any, dst: Any, data: bytes) -> bool:
        reads[0] += _is_read(data)
        return False  # (drops nothing)

    sim.net.set_drop_filter(count)
    out: dict[str, Any] = {"n": n, "rest_datagrams_per_node_s": round(rest_per_s / n, 2)}
    for phase in ("present", "absent"):
        reads[0], before, start = 0, sent(), loop.time()
        wrong = 0
        for i in range(keys):
            node: Node = rng.choice(nodes)
            if phase == "present":
                wrong += await node.get(present[i]) != "v"
            else:
                try:
                    await node.get(f"absent-{i}")
                    wrong += 1
                except KeyNotFound:
                    pass
        spent = sent() - before - rest_per_s * (loop.time() - start)
        out[phase] = {
            "datagrams_per_get": round(spent / keys, 2),
            "store_reads_per_get": round(reads[0] / keys, 2),
            "wrong": wrong,
        }
    sim.net.set_drop_filter(None)
    await sim.stop()
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "N     present: datagrams/get  reads/get   absent: datagrams/get  reads/get   wrong",
    ]
    for r in rows:
        p, a = r["present"], r["absent"]
        lines.append(
            f"{r['n']:<5} {p['datagrams_per_get']:>24} {p['store_reads_per_get']:>10} "
            f"{a['datagrams_per_get']:>22} {a['store_reads_per_get']:>10} "
            f"{p['wrong'] + a['wrong']:>7}"
        )
    lines.append("(the ring's own traffic at rest is subtracted; one seed, exact counts)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--sizes", type=positive, nargs="+", default=[12, 24, 48], help="ring sizes")
    p.add_argument("--keys", type=positive, default=100, help="gets of each kind per ring")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    rows = per_size(args.sizes, lambda n: run_virtual(one_size(n, args.keys, args.seed)))
    if args.json:
        print(json.dumps({"bench": "sim_reads", "seed": args.seed, "sizes": rows}))
    else:
        print(table(rows))
    return 0 if all(r["present"]["wrong"] + r["absent"]["wrong"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
