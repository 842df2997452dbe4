"""Round trips of udpdht's kademlia client (``kad://``) beside kademlia's own, on one network.

What is measured
    A network of ``--nodes`` (10) ``kademlia.network.Server``s (ksize 20, alpha 3, the package's
    defaults) on 127.0.0.1, ephemeral ports, each bootstrapped from the first, all in this
    process. Two clients join it through its first node:

    * **udpdht**: ``udpdht.kad.client.KadClient``, what ``udpdht get/put --node kad://H:P`` and
      the shell's kademlia mode use: its own socket, a random id, a find_node of its own id
      to learn contacts (as the shell's ``attach`` does);
    * **kademlia**: one more ``kademlia.network.Server``, bootstrapped from the first node:
      how a kademlia user reads and writes (the package has no lighter client).

    Then ``--ops`` (200) puts of distinct keys (values of about 20 characters), then gets of
    those keys, one operation at a time, the two clients taking turns (udpdht's i-th op, then
    kademlia's i-th), so both see the same load. Each client reads the keys the *other* one
    wrote. kademlia's ``get`` first looks in the asking server's own storage, which (a network
    of at most k = 20 nodes) holds every value: the kademlia client's storage is emptied before
    its gets, so that they go over the wire as udpdht's do. A put counts as correct when it
    returned True (kademlia) or stored on at least one node (udpdht), a get when it returned
    the value written.

    Per client and op: p50, p99 and max latency (``time.perf_counter`` around the call), the
    mean, and the correct count. The ratio udpdht / kademlia of the p50s and p99s.

    Everything runs on one event loop (the standard one: uvloop's clock is too coarse for
    sub-millisecond times) on a machine that other work may share: compare the two columns of
    one run rather than runs with each other.

examples:
    python bench/kad_client.py              # the table
    python bench/kad_client.py --quick      # 50 ops
    python bench/kad_client.py --json       # one JSON object on stdout, progress on stderr
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HelpFormatter, positive, progress  # bench/common.py

Op = Callable[[], Awaitable[bool]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(times: list[float], correct: int) -> dict[str, Any]:
    return {
        "ops": len(times),
        "correct": correct,
        "p50_ms": round(1000 * percentile(times, 0.50), 3),
        "p99_ms": round(1000 * percentile(times, 0.99), 3),
        "max_ms": round(1000 * max(times), 3),
        "mean_ms": round(1000 * statistics.fmean(times), 3),
    }


async def timed(op: Op) -> tuple[float, bool]:
    start = time.perf_counter()
    try:
        ok = await op()
    except Exception:
        ok = False
    return time.perf_counter() - start, ok


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from kademlia.network import Server

    from udpdht.kad.client import KadClient

    for name in ("kademlia", "rpcudp"):
        logging.getLogger(name).setLevel(logging.ERROR)
    rng = random.Random(args.seed)
    servers: list[Any] = []
    try:
        progress(f"starting {args.nodes} kademlia nodes on 127.0.0.1")
        for _ in range(args.nodes):
            server = Server()
            servers.append(server)
            await server.listen(0, interface="127.0.0.1")
        first = servers[0].transport.get_extra_info("sockname")[:2]
        for server in servers[1:]:
            await server.bootstrap([first])
        theirs = Server()
        servers.append(theirs)
        await theirs.listen(0, interface="127.0.0.1")
        await theirs.bootstrap([first])
        ours = KadClient(first)
        await ours.open()
        await ours.find_node(ours.id)
        try:
            return await measure(args, rng, ours, theirs)
        finally:
            await ours.close()
    finally:
        for server in servers:
            server.stop()


async def measure(
    args: argparse.Namespace, rng: random.Random, ours: Any, theirs: Any
) -> dict[str, Any]:
    n = args.ops
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8))
    keys = {lib: [f"{lib}-{word}-{i}" for i in range(n)] for lib in ("udpdht", "kademlia")}
    values = {key: f"value {key[-12:]:>12}" for lib in keys for key in keys[lib]}
    times: dict[str, dict[str, list[float]]] = {
        lib: {"put": [], "get": []} for lib in ("udpdht", "kademlia")
    }
    correct = {lib: {"put": 0, "get": 0} for lib in ("udpdht", "kademlia")}

    def record(lib: str, op: str, result: tuple[float, bool]) -> None:
        times[lib][op].append(result[0])
        correct[lib][op] += result[1]

    async def our_put(key: str) -> bool:
        return bool((await ours.put(key, values[key])).stored)

    async def our_get(key: str) -> bool:
        return bool((await ours.get(key))[0] == values[key])

    async def their_put(key: str) -> bool:
        return bool(await theirs.set(key, values[key]))

    async def their_get(key: str) -> bool:
        return bool(await theirs.get(key) == values[key])

    progress(f"{n} puts each, taking turns")
    for i in range(n):
        record("udpdht", "put", await timed(functools.partial(our_put, keys["udpdht"][i])))
        record("kademlia", "put", await timed(functools.partial(their_put, keys["kademlia"][i])))
    theirs.storage.data.clear()  # its gets go over the wire (see the docstring)
    progress(f"{n} gets each, of the keys the other one put")
    for i in range(n):
        record("udpdht", "get", await timed(functools.partial(our_get, keys["kademlia"][i])))
        record("kademlia", "get", await timed(functools.partial(their_get, keys["udpdht"][i])))
    results = {
        lib: {op: summary(times[lib][op], correct[lib][op]) for op in ("put", "get")}
        for lib in times
    }
    ratio = {
        op: {
            q: round(results["udpdht"][op][q] / results["kademlia"][op][q], 3)
            for q in ("p50_ms", "p99_ms")
        }
        for op in ("put", "get")
    }
    return {
        "nodes": args.nodes,
        "ops": n,
        "seed": args.seed,
        "results": results,
        "ratio_udpdht_to_kademlia": ratio,
    }


def table(out: dict[str, Any]) -> str:
    lines = [
        f"{out['nodes']} kademlia nodes on loopback, {out['ops']} ops per client and op, "
        "one at a time, taking turns",
        f"{'client':<22}{'op':<5}{'p50':>10}{'p99':>10}{'max':>10}{'mean':>10}{'correct':>10}",
    ]
    names = {"udpdht": "udpdht kad:// client", "kademlia": "kademlia Server"}
    for op in ("put", "get"):
        for lib in ("udpdht", "kademlia"):
            r = out["results"][lib][op]
            lines.append(
                f"{names[lib]:<22}{op:<5}{r['p50_ms']:>8.2f}ms{r['p99_ms']:>8.2f}ms"
                f"{r['max_ms']:>8.2f}ms{r['mean_ms']:>8.2f}ms{r['correct']:>6}/{r['ops']}"
            )
    ratio = out["ratio_udpdht_to_kademlia"]
    lines.append(
        "udpdht / kademlia: "
        + ", ".join(
            f"{op} p50 {ratio[op]['p50_ms']:.2f}x p99 {ratio[op]['p99_ms']:.2f}x" for op in ratio
        )
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="50 ops instead of --ops")
    p.add_argument("--ops", type=positive, default=200, help="puts, then gets, per client")
    p.add_argument("--nodes", type=positive, default=10, help="kademlia nodes in the network")
    p.add_argument("--seed", type=int, default=1, help="seeds the keys")
    p.add_argument("--deadline", type=float, default=600.0, help="give up after this many s")
    args = p.parse_args(argv)
    if args.quick:
        args.ops = 50
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = asyncio.run(asyncio.wait_for(run(args), args.deadline))
    except ImportError:
        print("bench/kad_client.py needs kademlia: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out))
    else:
        print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
