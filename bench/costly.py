"""Costly datagrams from one socket, inside the rate limits' count, at one node of a ring.

What is measured
    A ring of three ``udpdht node`` processes on loopback (fresh, in a temp dir, killed at the
    end); the target T is one of them. For each attack below, one stranger socket sends ``--rate``
    datagrams a second (default 400, well under the 1,024 a second a source may send) at T for
    ``--seconds`` (default 5), each of them expensive to handle:

    * ``read1000``: a ``store_read`` of 1,000 two-byte keys (about 4 KB; idempotent, so its
      answer is not cached and every copy runs again);
    * ``arrays``: a ``ping`` whose arguments carry 16,000 empty arrays (about 16 KB: the decoder
      builds each);
    * ``answers``: what looks like an answer (first bytes ``94 01 01 cf``) to no call of T's,
      with the same 16,000 empty arrays;
    * ``gets``: a ``get`` of a key that no one wrote, a new request id each time (T runs it as
      a coroutine: it reads every holder, and the nodes after them, before it says "not
      found");
    * ``kad_finds``: kademlia's ``find_value`` (the rpcudp protocol on the same port) of a
      random key, a new message id each time (T reads the ring for it, as for a ``get``).

    Meanwhile an honest socket pings T every 50 ms (one try, 200 ms to answer). Reported per
    attack: T's CPU share over the attack (from ``/proc/PID/stat``), pings answered and lost,
    their p50 and max round trip, T's ``rate_limited`` counter's growth, and whether the other
    two nodes still list T among their successors once the attack is over (a node its peers
    declared dead is evicted). Before the fix, all three took T's whole core (1.00), most pings
    were lost, and ``rate_limited`` stayed 0.

Which code runs
    The interpreter decides: its installed ``udpdht`` is the one the node children run. ``--loop``
    chooses the nodes' event loop (``UDPDHT_LOOP``); ``both`` runs once per loop.

Usage::

    python bench/costly.py              # human table, both loops
    python bench/costly.py --json       # one JSON object on stdout, progress on stderr
    python bench/costly.py --quick      # 2 s per attack
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from attack import (  # bench/attack.py
    Cluster,
    Endpoint,
    Monitor,
    NodeProc,
    install_signal_handlers,
    pack,
)

ATTACKS = ("read1000", "arrays", "answers", "gets", "kad_finds")
FRESH = ("gets", "kad_finds")  # attacks whose datagrams differ each time (a new request id)
EMPTY_ARRAYS: list[list[Any]] = [[]] * 16_000


def datagram(shape: str, i: int = 0) -> bytes:
    if shape == "kad_finds":  # rpcudp: 0x00, a 20-byte message id, [method, args]
        return b"\x00" + i.to_bytes(20, "big") + pack(["find_value", [bytes(20), os.urandom(20)]])
    if shape == "gets":
        return pack([1, 0, 2**63 + 4 + i, "get", {"key": f"absent-{i}".encode()}])
    if shape == "read1000":
        keys = [i.to_bytes(2, "big") for i in range(1000)]
        return pack([1, 0, 2**63 + 1, "store_read", {"keys": keys}])
    if shape == "arrays":
        return pack([1, 0, 2**63 + 2, "ping", {"pad": EMPTY_ARRAYS}])
    if shape == "answers":  # a reply to a request id T never used
        return pack([1, 1, 2**63 + 3, {"pad": EMPTY_ARRAYS}])
    raise ValueError(shape)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def one_attack(
    shape: str, target: NodeProc, others: list[NodeProc], rate: float, seconds: float
) -> dict[str, Any]:
    monitor = await Monitor.open()
    attacker = await Endpoint.open()
    pinger = await Endpoint.open()
    try:
        before = await monitor.status(target)
        data = datagram(shape)
        rtts: list[float] = []
        lost = 0

        async def pings() -> None:
            nonlocal lost
            while True:
                ans = await pinger.call(target.addr, "ping", timeout=0.2, tries=1)
                if ans.answered:
                    rtts.append(ans.seconds)
                else:
                    lost += 1
                await asyncio.sleep(0.05)

        task = asyncio.ensure_future(pings())
        cpu0, start = cpu_seconds(target.pid), time.monotonic()
        sent = 0
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate) + 1
            while sent < due:
                attacker.send(datagram(shape, sent) if shape in FRESH else data, target.addr)
                sent += 1
            await asyncio.sleep(0.002)
        share = (cpu_seconds(target.pid) - cpu0) / (time.monotonic() - start)
        task.cancel()
        await asyncio.sleep(1.0)  # (the last pings' answers, the ring's next round)
        after = await monitor.status(target)
        listed = []
        for other in others:
            st = await monitor.status(other)
            succs = [s["addr"] for s in (st or {}).get("successors", [])]
            listed.append(f"{target.addr[0]}:{target.addr[1]}" in succs)
        limited = None
        if before is not None and after is not None:
            limited = after["rpc"]["rate_limited"] - before["rpc"]["rate_limited"]
        return {
            "attack": shape,
            "datagram_bytes": len(data),
            "sent": sent,
            "seconds": seconds,
            "target_cpu_share": round(share, 3),
            "pings_answered": len(rtts),
            "pings_lost": lost,
            "ping_p50_ms": round(statistics.median(rtts) * 1000, 2) if rtts else None,
            "ping_max_ms": round(max(rtts) * 1000, 1) if rtts else None,
            "rate_limited": limited,
            "still_listed_by_peers": all(listed),
        }
    finally:
        monitor.close()
        attacker.close()
        pinger.close()


async def run_loop(loop_name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    with Cluster(loop_name, prefix="udpdht-costly-") as cluster:
        first = await cluster.start("a")
        b = await cluster.start("b", [first])
        c = await cluster.start("c", [first])
        await asyncio.sleep(3.0)  # (one ring: the joins' rounds)
        for shape in ATTACKS:
            progress(f"[{loop_name}] {shape}: {args.rate:g} a second for {args.seconds:g} s")
            result = await one_attack(shape, b, [first, c], args.rate, args.seconds)
            results.append({"loop": loop_name, **result})
            await asyncio.sleep(3.0)  # (buckets refill; a node evicted would rejoin)
    return results


def table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'loop':8} {'attack':9} {'bytes':>6} {'sent':>5} {'cpu':>5} {'pings ok/lost':>13} "
        f"{'p50 ms':>7} {'max ms':>7} {'limited':>8} {'in ring':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r['loop']:8} {r['attack']:9} {r['datagram_bytes']:>6} {r['sent']:>5} "
            f"{r['target_cpu_share']:>5.2f} {r['pings_answered']:>6}/{r['pings_lost']:<6} "
            f"{r['ping_p50_ms']!s:>7} {r['ping_max_ms']!s:>7} {r['rate_limited']!s:>8} "
            f"{'yes' if r['still_listed_by_peers'] else 'NO':>7}"
        )
    lines.append("cpu: the target's share of a core during the attack; limited: its rate_limited")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="both")
    p.add_argument("--rate", type=float, default=400.0, help="datagrams a second (400)")
    p.add_argument("--seconds", type=float, help="seconds per attack (5; --quick 2)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    args = p.parse_args()
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    install_signal_handlers()
    loops = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    if "uvloop" in loops and importlib.util.find_spec("uvloop") is None:
        loops.remove("uvloop")
        progress("uvloop is not installed: asyncio only")
    results: list[dict[str, Any]] = []
    for loop_name in loops:
        results += asyncio.run(run_loop(loop_name, args))
    if args.json:
        print(json.dumps({"bench": "costly", "rate": args.rate, "results": results}))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
