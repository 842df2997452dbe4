"""Round trips of kademlia's wire protocol: a kademlia client on a kademlia network and on a
udpdht ring, side by side (issue #14).

What is measured
    Each *case* is a network of ``--nodes`` (10) nodes and a client that speaks kademlia's
    protocol to it. The network runs in a child process of its own (this file re-run with the
    hidden ``--serve KIND N`` flag: N nodes in one process, on ephemeral ports of 127.0.0.1,
    each joining through the first; a udpdht ring waits until it is ideal), the client in this
    process, so the two do not share an event loop. Cases, in order:

    * ``kad->kad``: a `kademlia.network.Server` client on a network of kademlia Servers.
    * ``kad->udpdht``: the same client on a ring of udpdht nodes (each answers kademlia's
      protocol on its own port: udpdht/kad/service.py), bootstrapped from one of them.
    * ``udpdht->kad``: udpdht's own kad:// client (udpdht/kad/client.py: what the shell and
      ``udpdht get --node kad://`` use) on the kademlia network.
    * ``udpdht->udpdht``: that client on the udpdht ring, through kademlia's protocol.

    The client bootstraps from the network's first node, runs ``--warmup`` (10) sets and gets
    that are not counted (a udpdht node proves the client's address with one ping before its
    first large answer, kad/service.py), then ``--ops`` (200) ``set(key, value)`` one after
    another (distinct keys, 20-character values), then ``get`` of each key one after another.
    Its storage forgets at once (``ForgetfulStorage(ttl=0)``): kademlia's ``get`` first looks
    in the client's own storage, which a ``set`` fills when the client is near the key; so
    every get here crosses the network. Latency is each call's wall time, failed ones
    included; a set is correct when it returned True, a get when it returned the value set.

    A kademlia ``set`` is a crawl (``find_node`` to the nodes nearest the key, α = 3 at a time,
    until the k = 20 nearest have answered: here every node) and a ``store`` to each; a
    ``get`` is a crawl of ``find_value`` that stops at the first value. On udpdht each
    ``store`` is a put on the ring (one write; the others find the same value there and write
    nothing) and each ``find_value`` a get on the ring.

Usage
    python bench/kad_interop.py            # about 30 s
    python bench/kad_interop.py --quick    # 50 ops, a few seconds
    python bench/kad_interop.py --json     # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import HelpFormatter, positive, progress

Address = tuple[str, int]
LOCAL = "127.0.0.1"
ROOT = str(Path(__file__).resolve().parent.parent)


class KadClient(Protocol):
    """What a case's client does: kademlia's Server API."""

    async def set(self, key: str, value: Any) -> bool: ...

    async def get(self, key: str) -> Any: ...


ClientFactory = Callable[[Address], "AsyncIterator[KadClient]"]


@dataclass(frozen=True)
class Case:
    name: str
    network: str  # the --serve kind: "kademlia" or "udpdht"
    client: str  # what the client is, for the table
    connect: Callable[[Address], Any]  # an async context manager yielding a KadClient


@asynccontextmanager
async def kademlia_client(bootstrap: Address) -> AsyncIterator[KadClient]:
    """A `kademlia.network.Server` that keeps nothing itself, bootstrapped from ``bootstrap``."""
    from kademlia.network import Server
    from kademlia.storage import ForgetfulStorage

    server = Server(storage=ForgetfulStorage(ttl=0))
    await server.listen(0, interface=LOCAL)
    try:
        found = await server.bootstrap([bootstrap])
        if not found:
            raise RuntimeError(f"kademlia could not bootstrap from {bootstrap}")
        yield server
    finally:
        server.stop()


class _OurKadClient:
    """udpdht's kad:// client (udpdht/kad/client.py, what `udpdht shell --attach kad://`
    and `udpdht get --node kad://` use) behind kademlia's Server API."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def set(self, key: str, value: Any) -> bool:
        result = await self.client.put(key, value)
        return bool(result.stored)

    async def get(self, key: str) -> Any:
        from udpdht.errors import KeyNotFound

        try:
            value, _ = await self.client.get(key)
        except KeyNotFound:
            return None
        return value


@asynccontextmanager
async def udpdht_kad_client(bootstrap: Address) -> AsyncIterator[KadClient]:
    """udpdht's kad:// client, bootstrapped (a ping, then a lookup of its own id, as kademlia's
    bootstrap does) from ``bootstrap``."""
    from udpdht.kad.client import KadClient as OurClient

    client = OurClient(bootstrap)
    await client.open()
    try:
        await client.find_node(client.id)
        yield _OurKadClient(client)
    finally:
        await client.close()


#: The cases, in the order they run: each client on each kind of network.
CASES = [
    Case("kad->kad", "kademlia", "kademlia.network.Server", kademlia_client),
    Case("kad->udpdht", "udpdht", "kademlia.network.Server", kademlia_client),
    Case("udpdht->kad", "kademlia", "udpdht kad:// client", udpdht_kad_client),
    Case("udpdht->udpdht", "udpdht", "udpdht kad:// client", udpdht_kad_client),
]


# --- the network, in a child process ------------------------------------------------------------


async def serve(kind: str, count: int) -> None:
    """``count`` nodes of ``kind``; prints the first one's address, then runs until stdin
    closes (the parent ends) or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)  # EOF: the parent is gone
    if kind == "kademlia":
        from kademlia.network import Server

        servers: list[Any] = []
        for i in range(count):
            server = Server()
            await server.listen(0, interface=LOCAL)
            if i:
                await server.bootstrap([(LOCAL, port(servers[0]))])
            servers.append(server)
        first: Address = (LOCAL, port(servers[0]))
        print(json.dumps({"bootstrap": first}), flush=True)
        await stop.wait()
        for server in servers:
            server.stop()
        return
    from udpdht.node import Node
    from udpdht.sim import ideal_problems

    nodes = [Node(LOCAL, 0)]
    await nodes[0].start()
    for _ in range(count - 1):
        node = Node(LOCAL, 0)
        await node.start()
        await node.join(nodes[0].addr)
        nodes.append(node)
    for _ in range(600):  # until the ring is ideal, 60 s at most
        if not ideal_problems(nodes):
            break
        await asyncio.sleep(0.1)
    print(json.dumps({"bootstrap": nodes[0].addr}), flush=True)
    await stop.wait()
    for node in nodes:
        await node.stop()


def port(server: Any) -> int:
    return int(server.transport.get_extra_info("sockname")[1])


@asynccontextmanager
async def network(kind: str, count: int) -> AsyncIterator[Address]:
    """The network of a case, in a child process; its first node's address."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        kind,
        str(count),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 90)
        if not line:
            raise RuntimeError(f"the {kind} network did not start")
        host, port_ = json.loads(line)["bootstrap"]
        yield (str(host), int(port_))
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# --- measuring ----------------------------------------------------------------------------------


def percentiles(seconds: list[float]) -> dict[str, float | None]:
    """p50 / p99 / max in ms (nearest rank)."""
    if not seconds:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50_ms": rank(0.50), "p99_ms": rank(0.99), "max_ms": round(1000 * ordered[-1], 2)}


async def timed(calls: list[Callable[[], Awaitable[Any]]]) -> tuple[list[float], list[Any]]:
    """Each call one after another: its wall time and its result (or the exception)."""
    times: list[float] = []
    results: list[Any] = []
    for call in calls:
        began = time.perf_counter()
        try:
            results.append(await call())
        except Exception as exc:
            results.append(exc)
        times.append(time.perf_counter() - began)
    return times, results


async def run_case(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    progress(f"{case.name}: starting {args.nodes} {case.network} nodes")
    async with network(case.network, args.nodes) as first, case.connect(first) as client:
        tag = os.urandom(3).hex()
        warm = [f"warm-{tag}-{i}" for i in range(args.warmup)]
        for key in warm:
            await client.set(key, "warm")
            await client.get(key)
        keys = [f"{case.name}-{tag}-{i}" for i in range(args.ops)]
        values = {k: f"value-{i:06d}-{tag}".ljust(20, ".") for i, k in enumerate(keys)}
        progress(f"{case.name}: {args.ops} sets")
        set_times, set_results = await timed(
            [lambda k=k: client.set(k, values[k]) for k in keys]  # type: ignore[misc]
        )
        progress(f"{case.name}: {args.ops} gets")
        get_times, get_results = await timed(
            [lambda k=k: client.get(k) for k in keys]  # type: ignore[misc]
        )
    return {
        "case": case.name,
        "network": f"{args.nodes} {case.network} nodes",
        "client": case.client,
        "set": {
            **percentiles(set_times),
            "ok": sum(r is True for r in set_results),
            "errors": sum(isinstance(r, Exception) for r in set_results),
        },
        "get": {
            **percentiles(get_times),
            "ok": sum(r == values[k] for r, k in zip(get_results, keys, strict=True)),
            "errors": sum(isinstance(r, Exception) for r in get_results),
        },
        "ops": args.ops,
    }


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    chosen = [c for c in CASES if not args.case or c.name in args.case]
    results = [await run_case(case, args) for case in chosen]
    return {
        "bench": "kad_interop",
        "nodes": args.nodes,
        "ops": args.ops,
        "warmup": args.warmup,
        "cases": results,
    }


def table(result: dict[str, Any]) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    heads = ["case", "network", "client", "set p50", "set p99", "get p50", "get p99", "ok"]
    rows = []
    for r in result["cases"]:
        s, g = r["set"], r["get"]
        rows.append(
            [
                r["case"],
                r["network"],
                r["client"],
                ms(s["p50_ms"]),
                ms(s["p99_ms"]),
                ms(g["p50_ms"]),
                ms(g["p99_ms"]),
                f"{s['ok']}/{r['ops']} set, {g['ok']}/{r['ops']} get",
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
    lines = [
        f"kademlia's protocol on loopback: {result['ops']} sets then gets, one at a time "
        f"(ms; {result['warmup']} warm-up ops not counted)",
        "  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip(),
    ]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="\n".join((__doc__ or "").split("\n")[2:]),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--nodes", type=positive, default=10, help="nodes in each network")
    parser.add_argument("--ops", type=positive, default=200, help="sets, then as many gets")
    parser.add_argument("--warmup", type=int, default=10, help="sets and gets not counted")
    parser.add_argument(
        "--case",
        action="append",
        choices=[c.name for c in CASES],
        help="run only this case (repeatable; default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="50 ops (a few seconds)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.ops = 50
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.disable(logging.CRITICAL)  # kademlia and rpcudp log every timeout
    if args.serve:
        kind, count = args.serve
        asyncio.run(serve(kind, int(count)))
        return 0
    result = asyncio.run(run_all(args))
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
