"""One million hostile datagrams at one node of a real ring, while an honest client uses it.

What is measured
    A ring of three ``udpdht node`` processes on loopback (fresh, in a temp dir, killed at the
    end); the target T is one of them. Two sender processes (multiprocessing), each with 64
    source sockets, send ``--count`` datagrams (default 1,000,000; ``--quick`` 100,000) at T as
    fast as they can, rotating through a mix. The sockets are bound to ``--attacker-hosts``
    loopback addresses of their own (127.0.0.2 on; default one, an attacking machine: a node
    limits a source by its IP), or with ``--attacker-hosts 0`` to 127.0.0.1 itself, which the
    nodes' machine shares, so that a node tells local processes apart by port and each of the
    128 sockets counts as a source of its own (the attack at its strongest):

    * random garbage (1 to 1,400 bytes), valid messages truncated, valid messages bit-flipped;
    * valid requests that are expensive or large: ``status``, ``neighbors``, ``get`` of a
      60 KB value stored beforehand, ``store_scan`` of the whole ring with values, ``find``;
    * ``notify`` with the id that matches the sending socket's address (sha1 of ``host:port``);
    * ``store_push`` of junk records (random keys and stamps, eternal tombstones, malformed);
    * ``leaving`` naming the other two nodes.

    Meanwhile a real :class:`udpdht.Client` attached to T issues a ``get`` of a known key every
    50 ms and a ``put`` every 500 ms (each in its own task, so a slow one does not delay the
    next); the latency of each is recorded (p50, p99, max) and errors counted. T's RSS is
    sampled every 100 ms.

    Reported: datagrams sent, send rate, seconds; T's RSS before, peak and after; client get
    and put latencies and error counts; bytes the attackers received back against bytes sent
    (amplification), with the answers by kind (reply, error code, token); T's ``status`` rpc
    counters afterwards (whatever counters it has, e.g. ``rate_limited``); whether all three
    nodes still answer, whether and when they form one ideal ring again, and whether the known
    key still reads correctly through each node.

Which code runs
    The interpreter decides: its installed ``udpdht`` is the one the node children run
    (``/work/before/.venv/bin/python bench/flood.py`` floods the code before the fixes).
    ``--loop`` chooses the nodes' event loop (``UDPDHT_LOOP``); ``both`` runs once per loop.

Usage::

    python bench/flood.py               # human table, 1,000,000 datagrams per loop
    python bench/flood.py --json        # one JSON object on stdout, progress on stderr
    python bench/flood.py --quick       # 100,000 datagrams
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

try:
    import udpdht
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import udpdht

from attack import (  # bench/attack.py
    HOST,
    Cluster,
    FloodSpec,
    Monitor,
    install_signal_handlers,
    latency_summary,
    one_shot,
    run_flood,
    start_ring,
    view,
    wait_formed,
)
from common import HelpFormatter, positive, progress  # bench/common.py

from udpdht import Client

LOOPS = ("asyncio", "uvloop")
KINDS = [
    "garbage",
    "truncated",
    "bitflip",
    "status",
    "neighbors",
    "get",
    "store_scan",
    "find",
    "notify",
    "store_push",
    "leaving",
]
KNOWN_VALUE = "known value, must survive"
GET_EVERY = 0.05
PUT_EVERY = 0.5
MAX_OUTSTANDING = 400  # client operations in flight at most (each ends within ~10 s anyway)


def err(exc: BaseException) -> str:
    return type(exc).__name__


async def honest_client(client: Client, known: bytes, stop: asyncio.Event) -> dict[str, Any]:
    """get every 50 ms, put every 500 ms until ``stop``; latencies and errors."""
    lat: dict[str, list[float]] = {"get": [], "put": []}
    errors: dict[str, Counter[str]] = {"get": Counter(), "put": Counter()}
    wrong = 0
    tasks: set[asyncio.Task[None]] = set()
    skipped = 0

    async def op(kind: str, i: int) -> None:
        nonlocal wrong
        t = time.perf_counter()
        try:
            if kind == "get":
                value = await asyncio.wait_for(client.get(known), 30)
                if value != KNOWN_VALUE:
                    wrong += 1
            else:
                await asyncio.wait_for(client.put(b"flood-put-%d" % i, i), 30)
        except TimeoutError:
            errors[kind]["Deadline"] += 1
            return
        except Exception as exc:
            errors[kind][err(exc)] += 1
            return
        lat[kind].append(time.perf_counter() - t)

    loop = asyncio.get_running_loop()
    start = loop.time()
    i = 0
    while not stop.is_set() and i < 1_000_000:
        if len(tasks) < MAX_OUTSTANDING:
            for kind in ("get", "put") if i % round(PUT_EVERY / GET_EVERY) == 0 else ("get",):
                task = loop.create_task(op(kind, i))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        else:
            skipped += 1
        i += 1
        next_at = start + i * GET_EVERY
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))
    if tasks:
        await asyncio.wait(tasks, timeout=40)
    return {
        "get": {**latency_summary(lat["get"]), "errors": dict(errors["get"]), "wrong": wrong},
        "put": {**latency_summary(lat["put"]), "errors": dict(errors["put"])},
        "ticks_skipped": skipped,
    }


async def sample_rss(node: Any, stop: asyncio.Event) -> float | None:
    peak: float | None = None
    for _ in range(100_000):
        rss = node.rss_mb()
        if rss is not None:
            peak = rss if peak is None else max(peak, rss)
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
            break
        except TimeoutError:
            pass
    return peak


async def flood_once(loop_name: str, count: int, opts: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"count": count}
    with Cluster(loop_name, prefix="udpdht-flood-") as cl:
        mon = await Monitor.open()
        try:
            a, t, c = nodes = await start_ring(cl, mon, ("A", "T", "C"))
            known = b"flood-known"
            big = b"flood-big"
            async with Client(t.addr) as client:
                await asyncio.wait_for(client.put(known, KNOWN_VALUE), 30)
                await asyncio.wait_for(client.put(big, os.urandom(59_990)), 30)
            st0 = await mon.status(t)
            out["rss_mb_before"] = t.rss_mb()
            per = count // opts.senders
            specs = [
                FloodSpec(
                    target=t.addr,
                    kinds=KINDS,
                    count=per + (count - per * opts.senders if i == 0 else 0),
                    seconds=opts.max_seconds,
                    sockets=opts.sockets,
                    seed=1000 + i,
                    target_id=t.id,
                    others=[a.id, c.id],
                    key=big,
                    drain_s=1.0,
                    hosts=attacker_hosts(opts.attacker_hosts),
                )
                for i in range(opts.senders)
            ]
            out["attacker_hosts"] = attacker_hosts(opts.attacker_hosts)
            progress(f"[{loop_name}] {count:,} datagrams at T from {opts.senders} processes")
            stop = asyncio.Event()
            stop_rss = asyncio.Event()  # sampled until the checks after the flood are done
            rss_task = asyncio.ensure_future(sample_rss(t, stop_rss))
            async with Client(t.addr) as client:
                client_task = asyncio.ensure_future(honest_client(client, known, stop))
                t0 = time.monotonic()
                stats = await run_flood(specs, timeout=opts.max_seconds + 60)
                flood_s = time.monotonic() - t0
                stop.set()
                out["client"] = await client_task
            sent, sent_bytes = stats.get("sent", 0), stats.get("sent_bytes", 0)
            seconds = stats.get("seconds", flood_s)
            out["sent"] = sent
            out["send_attempts"] = stats.get("attempts", 0)
            out["send_errors"] = stats.get("send_errors", 0)
            out["seconds"] = round(seconds, 2)
            out["rate_per_s"] = round(sent / seconds) if seconds else None
            out["sent_bytes"] = sent_bytes
            out["received_back"] = stats.get("recv", 0)
            out["received_back_bytes"] = stats.get("recv_bytes", 0)
            out["amplification"] = (
                round(stats.get("recv_bytes", 0) / sent_bytes, 3) if sent_bytes else None
            )
            out["answers"] = stats.get("answers", {})
            out["by_kind"] = stats.get("by_kind", {})
            out["senders_reported"] = stats.get("processes_reported")
            progress(
                f"[{loop_name}] flood done: {sent:,} sent in {seconds:.1f} s; checking the ring"
            )
            st1 = await mon.status(t, timeout=1.0, tries=10)
            out["T_rpc"] = st1.get("rpc") if st1 else None
            if st0 and st1:
                out["T_rpc_delta"] = {
                    k: v - st0["rpc"].get(k, 0) for k, v in st1["rpc"].items() if isinstance(v, int)
                }
                out["T_store_after"] = st1.get("store")
                delta = out["T_rpc_delta"]
                out["T_processed"] = delta.get("received", 0) + delta.get("dropped_malformed", 0)
            pings = await asyncio.gather(*(one_shot(n.addr, "ping", timeout=1.0) for n in nodes))
            out["answering"] = sum(p.answered for p in pings)
            sts = await mon.statuses(nodes)
            out["views_after"] = {
                n.name: {
                    "succs": [m.name for m in nodes if m.id in view(st).get("succs", [])],
                    "preds": [m.name for m in nodes if m.id in view(st).get("preds", [])],
                }
                for n, st in zip(nodes, sts, strict=True)
            }
            healed = await wait_formed(mon, nodes, within=opts.heal_s)
            out["one_ring_after_s"] = "never" if healed is None else round(healed, 1)
            reads: dict[str, Any] = {}
            for n in nodes:
                async with Client(n.addr) as client:
                    try:
                        value = await asyncio.wait_for(client.get(known), 30)
                        reads[n.name] = "ok" if value == KNOWN_VALUE else f"wrong: {value!r}"[:80]
                    except Exception as exc:
                        reads[n.name] = err(exc)
            out["known_key_after"] = reads
            stop_rss.set()
            out["rss_mb_peak"] = await rss_task
            out["rss_mb_after"] = t.rss_mb()
            out["alive"] = sum(n.alive() for n in nodes)
        finally:
            mon.close()
    return out


def table(result: dict[str, Any]) -> str:
    lines = [f"udpdht under test: {result['udpdht']}"]
    for loop_name, r in result["loops"].items():
        lines.append("")
        if "error" in r:
            lines.append(f"{loop_name}: error {r['error']}")
            continue
        g, p = r["client"]["get"], r["client"]["put"]
        rpc = r.get("T_rpc") or {}
        lines += [
            f"== {loop_name}",
            f"sent                 {r['sent']:,} datagrams in {r['seconds']} s "
            f"({r['rate_per_s']:,}/s), {r['sent_bytes'] / 1e6:.1f} MB",
            f"received back        {r['received_back']:,} datagrams, "
            f"{r['received_back_bytes'] / 1e6:.1f} MB (amplification {r['amplification']})",
            f"answers              {r['answers']}",
            f"T RSS MB             before {r['rss_mb_before']}, peak {r['rss_mb_peak']}, "
            f"after {r['rss_mb_after']}",
            f"client get           p50 {g['p50_ms']} ms, p99 {g['p99_ms']} ms, max {g['max_ms']} "
            f"ms, ok {g['n']}, errors {g['errors']}, wrong {g['wrong']}",
            f"client put           p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} "
            f"ms, ok {p['n']}, errors {p['errors']}",
            f"T rpc counters       {rpc}",
            f"T decoded or dropped {r.get('T_processed')} datagrams during the run (the kernel "
            "drops the rest)",
            f"nodes answering      {r['answering']}/3; one ring after: {r['one_ring_after_s']} s",
            f"views after flood    {r['views_after']}",
            f"known key reads      {r['known_key_after']}",
        ]
    lines.append("")
    lines.append(f"total {result['total_s']} s")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter, description="One million hostile datagrams at one node."
    )
    parser.add_argument("--count", type=positive, default=1_000_000, help="datagrams to send")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "both"], default="both")
    parser.add_argument("--senders", type=positive, default=2, help="sender processes")
    parser.add_argument("--sockets", type=positive, default=64, help="source sockets per sender")
    parser.add_argument(
        "--attacker-hosts",
        type=int,
        default=1,
        metavar="N",
        help="send from N loopback addresses of their own, 127.0.0.2 on (default 1: one "
        "attacking machine); 0: from 127.0.0.1, the address the nodes' own machine shares, "
        "where every source port counts as a process of its own",
    )
    parser.add_argument("--max-seconds", type=float, default=300.0, help="cap on flood time")
    parser.add_argument("--heal-s", type=float, default=60.0, help="wait for one ring after")
    parser.add_argument("--quick", action="store_true", help="100,000 datagrams")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    return parser.parse_args(argv)


def attacker_hosts(n: int) -> list[str]:
    """The source addresses of the flood: ``n`` loopback hosts from 127.0.0.2 (0: 127.0.0.1)."""
    return [f"127.0.{(i + 2) // 256}.{(i + 2) % 256}" for i in range(n)] or [HOST]


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    install_signal_handlers()
    count = 100_000 if opts.quick else opts.count
    loops = list(LOOPS) if opts.loop == "both" else [opts.loop]
    if "uvloop" in loops and importlib.util.find_spec("uvloop") is None:
        progress("uvloop is not installed for this interpreter: asyncio only")
        loops.remove("uvloop")
    where = str(Path(udpdht.__file__).resolve().parent)
    progress(f"udpdht under test: {where}; loops: {', '.join(loops)}")
    started = time.monotonic()
    result: dict[str, Any] = {
        "udpdht": where,
        "python": sys.version.split()[0],
        "count": count,
        "kinds": KINDS,
        "loops": {},
    }
    for loop_name in loops:
        try:
            result["loops"][loop_name] = asyncio.run(flood_once(loop_name, count, opts))
        except Exception as exc:
            result["loops"][loop_name] = {"error": f"{type(exc).__name__}: {exc}"}
    result["total_s"] = round(time.monotonic() - started, 1)
    if opts.json:
        print(json.dumps(result, default=repr))
    else:
        print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
