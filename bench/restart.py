"""How soon a node that crashed and restarted takes writes for its range again (issue #12).

What is measured
    A ring of ``--nodes`` (8) ``udpdht node`` processes on 127.0.0.1, each with its own data dir
    (bench/attack.py's Cluster), formed and ideal. For each delay D of ``--down`` (2 and 20 s:
    before and after the ring has repaired around the crash), in turn:

    1. the victim (the same node each time) is killed with SIGKILL, and stays down D seconds;
    2. it is started again on its port and data dir with no ``--bootstrap``: it rejoins
       through the peers its data dir remembers;
    3. from its "listening" line on, keys of the victim's range (ids between its predecessor
       and it) are put one after another, each through the next of the other nodes in turn
       (udpdht Clients, 1 try, ``--op-timeout`` 0.5 s a put), for ``--window`` (15) seconds.

    Recorded per delay: seconds from the restart to the first acknowledged put, and to the
    first put after which every put was acknowledged (``steady``); puts refused or timed out
    before that; seconds until the victim's status names the right predecessor and successor;
    seconds until a lookup through every other node names the victim as the owner of a key
    of its range, i.e. until writes land on the victim itself.

    The issue measured ~19 s of failed writes to the restarted node's range (20 s down).
    Target: a restarted node serves writes for its range within 5 s of rejoining.

Usage::

    python bench/restart.py              # human table
    python bench/restart.py --json       # one JSON object on stdout
    python bench/restart.py --down 2 20 40 --rounds 3

Every node process and temp dir is removed at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attack import (
    Cluster,
    Monitor,
    NodeProc,
    install_signal_handlers,
    keys_in,
    predecessor_of,
    ring_order,
    start_ring,
)
from common import HelpFormatter, progress, spread

from udpdht import Client, ids
from udpdht.rpc import RpcConfig


async def one_restart(
    cluster: Cluster,
    mon: Monitor,
    nodes: list[NodeProc],
    victim: NodeProc,
    down: float,
    args: argparse.Namespace,
) -> tuple[NodeProc, dict[str, Any]]:
    pred = predecessor_of(victim, nodes)
    keys = keys_in(pred.id, victim.id, args.puts)
    cluster.kill(victim)
    progress(f"  killed {victim.name}; down {down} s")
    await asyncio.sleep(down)
    name = victim.name
    restarted = await cluster.start(name, extra=["--port", str(victim.addr[1])])
    assert restarted.addr == victim.addr
    t0 = time.monotonic()
    nodes[nodes.index(victim)] = restarted
    ordered = ring_order(nodes)
    i = ordered.index(restarted)
    want_pred, want_succ = ordered[i - 1].id, ordered[(i + 1) % len(ordered)].id
    out: dict[str, Any] = {"down_s": down, "first_ok_s": None, "steady_s": None}
    out["failed_before_steady"] = 0
    out["in_place_s"] = None
    out["owner_s"] = None
    failed = 0
    errors: dict[str, int] = {}
    t = args.op_timeout
    cfg = RpcConfig(tries=1, initial_rto=t, min_rto=t, max_rto=t, jitter=0.0)
    writers = [n for n in ordered if n is not restarted]
    clients = [Client(w.addr, rpc_config=cfg) for w in writers]
    for c in clients:
        await c.open()
    try:
        n = 0
        while time.monotonic() - t0 < args.window and n < len(keys):
            key = keys[n]
            client = clients[n % len(clients)]  # every other node in turn coordinates a put
            n += 1
            try:
                await asyncio.wait_for(client.put(key, b"x"), args.op_timeout * 2)
            except Exception as exc:  # refused, timed out: not yet
                why = type(exc).__name__ + (f": {exc}"[:90] if args.verbose else "")
                errors[why] = errors.get(why, 0) + 1
                failed += 1
                out["steady_s"] = None
            else:
                now = round(time.monotonic() - t0, 2)
                if out["first_ok_s"] is None:
                    out["first_ok_s"] = now
                if out["steady_s"] is None:
                    out["steady_s"] = now
                    out["failed_before_steady"] = failed
            if out["in_place_s"] is None:
                st = await mon.status(restarted)
                if (
                    st is not None
                    and st.get("predecessor")
                    and st["successors"]
                    and ids.from_hex(st["predecessor"]["id"]) == want_pred
                    and ids.from_hex(st["successors"][0]["id"]) == want_succ
                ):
                    out["in_place_s"] = round(time.monotonic() - t0, 2)
            if out["owner_s"] is None:
                # Until every other node's lookup of a key of its range names it.
                answers = await asyncio.gather(
                    *(c.lookup(key) for c in clients), return_exceptions=True
                )
                if all(
                    not isinstance(a, BaseException) and a.owner.id == restarted.id for a in answers
                ):
                    out["owner_s"] = round(time.monotonic() - t0, 2)
            await asyncio.sleep(args.pause)
    finally:
        for c in clients:
            await c.close()
    out["puts"] = n
    out["failed"] = failed
    out["errors"] = errors
    return restarted, out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for r in range(args.rounds):
        with Cluster(args.loop, prefix="udpdht-restart-") as cluster:
            mon = await Monitor.open()
            try:
                names = [f"n{i}" for i in range(args.nodes)]
                nodes = await start_ring(cluster, mon, names, within=args.max_wait)
                progress(f"round {r + 1}: ring of {len(nodes)} formed")
                victim = nodes[len(nodes) // 2]
                for down in args.down:
                    victim, res = await one_restart(cluster, mon, nodes, victim, down, args)
                    res["round"] = r + 1
                    results.append(res)
                    progress(f"  {res}")
                    # Let the ring settle again before the next crash.
                    await asyncio.sleep(args.between)
            finally:
                mon.close()
    summary: dict[str, Any] = {}
    for down in args.down:
        mine = [x for x in results if x["down_s"] == down]
        summary[str(down)] = {
            f: _mmm([x[f] for x in mine])
            for f in ("first_ok_s", "steady_s", "in_place_s", "owner_s", "failed_before_steady")
        }
    return {"nodes": args.nodes, "rounds": args.rounds, "runs": results, "summary": summary}


def _mmm(values: list[Any]) -> dict[str, Any]:
    """min / median / max of the runs that measured it, and how many never did."""
    got = [v for v in values if v is not None]
    empty = {"min": None, "median": None, "max": None}
    return {**(spread(got) or empty), "missing": len(values) - len(got)}


def render(out: dict[str, Any]) -> str:
    lines = [
        f"restart of one node of {out['nodes']}, {out['rounds']} round(s); seconds after the "
        "restart (min / median / max; 'never' within the window)",
        f"{'down':>6}  {'first put ok':>16}  {'all puts ok':>16}  {'in place':>16}  "
        f"{'owner again':>16}  {'failed puts':>12}",
    ]

    def cell(m: dict[str, Any]) -> str:
        if m["median"] is None:
            return "never"
        miss = f" ({m['missing']} never)" if m["missing"] else ""
        return f"{m['min']}/{m['median']}/{m['max']}{miss}"

    for down, s in out["summary"].items():
        lines.append(
            f"{down + ' s':>6}  {cell(s['first_ok_s']):>16}  {cell(s['steady_s']):>16}  "
            f"{cell(s['in_place_s']):>16}  {cell(s['owner_s']):>16}  "
            f"{cell(s['failed_before_steady']):>12}"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(formatter_class=HelpFormatter, description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--nodes", type=int, default=8, help="node processes")
    p.add_argument("--down", type=float, nargs="+", default=[2.0, 20.0], help="seconds down")
    p.add_argument("--rounds", type=int, default=1, help="rings built, one after another")
    p.add_argument("--puts", type=int, default=400, help="keys of the victim's range")
    p.add_argument("--window", type=float, default=15.0, help="seconds of puts per restart")
    p.add_argument("--pause", type=float, default=0.05, help="seconds between puts")
    p.add_argument("--op-timeout", type=float, default=0.5, help="seconds a put may take")
    p.add_argument("--between", type=float, default=10.0, help="seconds between restarts")
    p.add_argument("--max-wait", type=float, default=60.0, help="deadline of the ring's forming")
    p.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    p.add_argument("--verbose", action="store_true", help="each error's message, not its type")
    args = p.parse_args()
    install_signal_handlers()
    out = asyncio.run(run(args))
    print(json.dumps(out) if args.json else render(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
