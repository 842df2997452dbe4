"""The security audit's eight findings, replayed against real node processes on loopback.

What is measured
    Each finding is tried the way it was found, against ``udpdht node`` child processes (a ring
    of three, A, B and C, unless said otherwise; each experiment starts a fresh ring in its own
    temp dir and kills it afterwards), by an attacker that crafts msgpack datagrams by hand
    (PROTOCOL.md) from plain sockets. The script reports numbers, it asserts nothing: the same
    run against the code before and after a fix shows what the fix changed.

    1. ``deafen``: one ``leaving`` to A naming B and handing over a peer with a bad address
       (``127.0.0.1\\0``, ``localhost``, ``0.0.0.0``, ``255.255.255.255``, ``::1``, port 0,
       port 70000, a 1000-entry list); then every node is pinged from a fresh socket every
       0.5 s for 15 s: nodes still answering, seconds until the first went deaf, and the
       answer the ``leaving`` got.
    2. ``versions``: records pushed with ``store_push`` (stamp 2**63-1, a tombstone that
       expires at infinity or 1e300, a stamp ten years ahead, 100 keys outside the node's
       range): whether they are applied, whether a later honest ``put`` still works and what a
       ``get`` returns, how far ahead a stamp is dragged.
    3. ``amplification``: one request of each of eight methods from a never-used socket, then
       the same datagram 100 times (20 ms apart): reply bytes / request bytes.
    4. ``fake node``: a fake that answers only ``ping`` notifies B with the id just below B's;
       then 200 puts through A (failures, time). A fuller fake (answers the ring and store
       methods, forges reads) is inserted the same way: how many gets return the forgery and
       how many lookups name it. Both again with an id the fake really has (a port whose
       ``sha1("127.0.0.1:port")`` lies in B's predecessor gap).
    5. ``store work``: a node started on a ~1 GB store (20,000 values of 60 KB): latency of
       ``status``, ``store_digest`` and ``store_scan`` over the whole ring, whether a ``ping``
       sent 100 ms later is answered meanwhile, and the node's RSS. (Here alone the request is
       sent again with the token when a token comes back: the finding is the work a request
       costs, and an attacker at its own address can always answer a token.)
    6. ``overload``: B flooded for 30 s by two sender processes (pings from many ports,
       ``status``, garbage): whether A and C drop B, whether B ends up alone, how long the
       ring takes to heal, and whether a key written afterwards reads the same everywhere.
    7. ``unbounded``: (a) 20,000 60 KB ``put``s to A for keys owned by a fake that answers
       ``store_write`` with BUSY: A's RSS; (b) ``notify`` from 2,000 sockets to B: B's log
       growth, tracebacks, counters; (c) public ``put``s and direct ``store_push``es of 60 KB
       values: how fast the data dirs grow.
    8. ``admin``: an ``admin_shutdown`` signed for P, sent to Q (same cookie); a ``leaving``
       naming A sent to B from a stranger.

    Every answer is classified: reply, error (with its code), token (``[1, 3, rid, token]``:
    the node wants proof that we receive at our address; the attacker never retries with it,
    except in finding 5; the status monitor does), or none.

Which code runs
    The interpreter decides: its installed ``udpdht`` is the one the node children run
    (``/work/before/.venv/bin/python bench/audit.py`` replays the findings on the code before
    the fixes). ``--loop`` chooses the nodes' event loop (``UDPDHT_LOOP``); ``both`` runs
    everything once per loop.

Usage::

    python bench/audit.py                  # human table, both loops (about 25 min)
    python bench/audit.py --json           # one JSON object on stdout, progress on stderr
    python bench/audit.py --quick          # smaller counts, shorter waits, fewer variants
    python bench/audit.py --only 1,3 --loop asyncio
"""

# Waits here take a plain ``timeout`` in seconds, like the RPC layer's calls.
# ruff: noqa: ASYNC109

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import random
import secrets
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import udpdht
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import udpdht

from attack import (  # bench/attack.py
    RING,
    Answer,
    Cluster,
    Endpoint,
    FloodSpec,
    Monitor,
    NodeProc,
    Refuse,
    classify,
    dir_bytes,
    find_port_id,
    idb,
    in_half_open,
    install_signal_handlers,
    keys_in,
    latency_summary,
    now_ms,
    one_shot,
    pack,
    predecessor_of,
    ring_order,
    run_flood,
    sample_memory,
    start_ring,
    view,
    wait_formed,
)
from common import HelpFormatter, progress  # bench/common.py

from udpdht import Client
from udpdht.storage import DiskStore, Record, Version

LOOPS = ("asyncio", "uvloop")
VALUE_BYTES = 59_990  # bytes() of this size encodes to 59,995 bytes: just under the limit


@dataclass(frozen=True)
class Settings:
    quick: bool
    deafen_s: float  # finding 1: how long the pings go on
    deafen_variants: tuple[str, ...]
    replays: int  # finding 3
    replay_wait_s: float
    puts: int  # finding 4
    store_values: int  # finding 5
    overload_s: float  # finding 6
    heal_s: float
    coordinator_puts: int  # finding 7a
    coordinator_watch_s: float
    notifiers: int  # finding 7b
    notify_watch_s: float
    fill_put_s: float  # finding 7c
    fill_push_s: float


def settings(quick: bool) -> Settings:
    if quick:
        return Settings(
            quick=True,
            deafen_s=8.0,
            deafen_variants=("nul",),
            replays=20,
            replay_wait_s=1.0,
            puts=100,
            store_values=1_700,  # 100 MB
            overload_s=10.0,
            heal_s=30.0,
            coordinator_puts=2_000,
            coordinator_watch_s=8.0,
            notifiers=300,
            notify_watch_s=10.0,
            fill_put_s=5.0,
            fill_push_s=3.0,
        )
    return Settings(
        quick=False,
        deafen_s=15.0,
        deafen_variants=tuple(DEAFEN_VARIANTS),
        replays=100,
        replay_wait_s=2.0,
        puts=200,
        store_values=20_000,  # 1.2 GB
        overload_s=30.0,
        heal_s=90.0,
        coordinator_puts=20_000,
        coordinator_watch_s=20.0,
        notifiers=2_000,
        notify_watch_s=30.0,
        fill_put_s=10.0,
        fill_push_s=5.0,
    )


def err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


async def bounded(coro: Awaitable[Any], seconds: float) -> tuple[str, Any]:
    """("ok", result) or ("error", text) or ("timeout", None): a Client call with a deadline."""
    try:
        return "ok", await asyncio.wait_for(coro, seconds)
    except TimeoutError:
        return "timeout", None
    except Exception as exc:
        return "error", err(exc)


async def many(
    items: list[Any], fn: Callable[[Any], Awaitable[Any]], concurrency: int
) -> list[Any]:
    """fn(item) for every item, ``concurrency`` at a time, results in order."""
    sem = asyncio.Semaphore(concurrency)

    async def one(item: Any) -> Any:
        async with sem:
            return await fn(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


async def ring_of_three(cl: Cluster, mon: Monitor) -> list[NodeProc]:
    return await start_ring(cl, mon, ("A", "B", "C"))


# --- 1. deafen the ring with one datagram ------------------------------------------------------

DEAFEN_VARIANTS: dict[str, tuple[str, int | None, int]] = {
    # name: (host, port (None: a free port nobody listens on), entries in the list)
    "nul": ("127.0.0.1\x00", None, 1),
    "localhost": ("localhost", None, 1),
    "0.0.0.0": ("0.0.0.0", None, 1),
    "255.255.255.255": ("255.255.255.255", None, 1),
    "::1": ("::1", None, 1),
    "port0": ("127.0.0.1", 0, 1),
    "port70000": ("127.0.0.1", 70000, 1),
    "list1000": ("127.0.0.1\x00", None, 1000),
}


async def free_port() -> int:
    ep = await Endpoint.open()
    port = ep.port
    ep.close()
    return port


async def deafen_variant(loop: str, name: str, s: Settings) -> dict[str, Any]:
    host, port, entries = DEAFEN_VARIANTS[name]
    with Cluster(loop) as cl:
        mon = await Monitor.open()
        try:
            a, b, c = await ring_of_three(cl, mon)
            nodes = [a, b, c]
            port = port if port is not None else await free_port()
            fake = [[idb(b.id + 1 + i), host, port] for i in range(entries)]
            # Two 1000-entry lists would not fit in one datagram: the long one goes as succs.
            args = {"id": idb(b.id), "succs": fake, "preds": fake[:64]}
            start = time.monotonic()
            ans = await one_shot(a.addr, "leaving", args, timeout=2.0)
            deaf_at: dict[str, float | None] = {n.name: None for n in nodes}
            last: dict[str, bool] = {}
            for _ in range(1000):  # bounded; the deadline ends it
                if time.monotonic() - start >= s.deafen_s:
                    break
                pings = await asyncio.gather(
                    *(one_shot(n.addr, "ping", timeout=1.0) for n in nodes)
                )
                t = time.monotonic() - start
                for n, p in zip(nodes, pings, strict=True):
                    last[n.name] = p.answered
                    if not p.answered and deaf_at[n.name] is None:
                        deaf_at[n.name] = round(t, 2)
                await asyncio.sleep(0.5)
            firsts = [v for v in deaf_at.values() if v is not None]
            fatal = sum(n.log_text().count("Fatal write error") for n in nodes)
            return {
                "leaving_answer": ans.as_dict(),
                "answering_at_end": sum(last.values()),
                "answering": [k for k, v in last.items() if v],
                "first_deaf_s": min(firsts) if firsts else None,
                "deaf_at_s": deaf_at,
                "processes_alive": sum(n.alive() for n in nodes),
                "fatal_write_errors_logged": fatal,
            }
        finally:
            mon.close()


async def f1_deafen(loop: str, s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"watch_s": s.deafen_s}
    for name in s.deafen_variants:
        progress(f"  [{loop}] 1 deafen: variant {name!r}")
        try:
            out[name] = await deafen_variant(loop, name, s)
        except Exception as exc:
            out[name] = {"error": err(exc)}
    return out


# --- 2. poisoned versions ----------------------------------------------------------------------


async def push_all(mon: Monitor, nodes: list[NodeProc], record: list[Any]) -> dict[str, Any]:
    """store_push one record to every node (from the monitor's socket): applied per node."""
    out: dict[str, Any] = {}
    for n in nodes:
        ans = await mon.ep.call(n.addr, "store_push", {"records": [record]}, timeout=2.0)
        if ans.ok and isinstance(ans.result, dict):
            out[n.name] = ans.result.get("applied")
        else:
            out[n.name] = ans.short()
    return out


async def f2_versions(loop: str, s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Cluster(loop) as cl:
        mon = await Monitor.open()
        try:
            a, b, c = nodes = await ring_of_three(cl, mon)
            writer = os.urandom(20)
            async with Client(a.addr) as client:
                # (a) a stamp of 2**63-1 on an existing key
                k = b"poison-" + os.urandom(6).hex().encode()
                progress(f"  [{loop}] 2a max stamp")
                first = await bounded(client.put(k, "old"), 30)
                pushed = await push_all(
                    mon, nodes, [k, pack("POISON"), (1 << 63) - 1, writer, None]
                )
                put = await bounded(client.put(k, "new"), 30)
                got = await bounded(client.get(k), 30)
                out["a_max_stamp"] = {
                    "first_put": first[0],
                    "push_applied": pushed,
                    "put_new": put[0] if put[0] != "error" else put[1],
                    "get_after": got[1] if got[0] != "timeout" else "timeout",
                }
                # (b) tombstones that never expire
                progress(f"  [{loop}] 2b eternal tombstones")
                tomb: dict[str, Any] = {}
                for label, expiry in (("inf", float("inf")), ("1e300", 1e300)):
                    key = b"tomb-" + os.urandom(6).hex().encode()
                    rec = [key, None, now_ms(), writer, expiry]
                    tomb[label] = {"push_applied": await push_all(mon, nodes, rec)}
                    g = await bounded(client.get(key), 30)
                    tomb[label]["get_after"] = g[1] if g[0] != "timeout" else "timeout"
                out["b_tombstone"] = tomb
                # (c) a stamp ten years ahead drags every later write along
                progress(f"  [{loop}] 2c future stamp")
                m = b"future-" + os.urandom(6).hex().encode()
                ten_years = 10 * 365 * 24 * 3600 * 1000
                pushed = await push_all(mon, nodes, [m, pack("FUTURE"), now_ms() + ten_years,
                                                     writer, None])  # fmt: skip
                put = await bounded(client.put(m, "x"), 30)
                ans = await mon.call(a, "get", {"key": m})
                ahead = None
                value = None
                if ans.ok and isinstance(ans.result, dict):
                    stamp = ans.result["version"][0]
                    ahead = round((stamp - now_ms()) / 1000, 1)
                    with contextlib.suppress(Exception):
                        value = udpdht.wire.unpack_value(ans.result["value"])
                out["c_future_stamp"] = {
                    "push_applied": pushed,
                    "put_x": put[0] if put[0] != "error" else put[1],
                    "get": ans.short(),
                    "value": value,
                    "stamp_ahead_s": ahead,
                    "stamp_ahead_years": None if ahead is None else round(ahead / 31_536_000, 2),
                }
            # (d) records for keys outside the node's range. In a ring of three with r = 3 every
            # node holds every key, so two more nodes join first: a node of five holds 3/5.
            progress(f"  [{loop}] 2d foreign keys (ring grows to 5)")
            d_, e_ = await asyncio.gather(cl.start("D", [a]), cl.start("E", [a]))
            five = [a, b, c, d_, e_]
            formed = await wait_formed(mon, five, within=40)
            order = ring_order(five)
            i = order.index(a)
            low = order[(i - 3) % 5].id  # A holds (pred_3, A]
            keys: list[bytes] = []
            for _ in range(100_000):
                key = os.urandom(12)
                if not in_half_open(udpdht.ids.hash_key(key), low, a.id):
                    keys.append(key)
                    if len(keys) == 100:
                        break
            records = [[k, pack("foreign"), now_ms(), writer, None] for k in keys]
            ans = await mon.ep.call(a.addr, "store_push", {"records": records}, timeout=3.0)
            applied = ans.result.get("applied") if ans.ok and isinstance(ans.result, dict) else None
            out["d_foreign_keys"] = {
                "ring_of_5_formed_s": None if formed is None else round(formed, 1),
                "keys": len(keys),
                "answer": ans.short(),
                "applied": applied,
            }
        finally:
            mon.close()
    return out


# --- 3. amplification --------------------------------------------------------------------------


async def f3_amplification(loop: str, s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Cluster(loop) as cl:
        mon = await Monitor.open()
        try:
            a, _b, _c = await ring_of_three(cl, mon)
            key = b"big-" + os.urandom(6).hex().encode()
            async with Client(a.addr) as client:
                stored = await bounded(client.put(key, os.urandom(VALUE_BYTES)), 30)
            out["stored"] = stored[0] if stored[0] != "error" else stored[1]
            whole = {"lo": idb(a.id), "hi": idb(a.id), "after": None, "values": True}
            probes: dict[str, dict[str, Any]] = {
                "get": {"key": key},
                "store_read": {"keys": [key]},
                "store_scan": whole,
                "status": {},
                "neighbors": {},
                "find": {"key": os.urandom(20)},
                "lookup": {"key": key},
                "ping": {},
            }
            for method, args in probes.items():
                progress(f"  [{loop}] 3 amplification: {method}")
                ep = await Endpoint.open()
                try:
                    rid = random.getrandbits(64)
                    data = udpdht.wire.encode_request(rid, method, args)
                    t0 = time.monotonic()
                    first = await ep.send_wait(a.addr, data, rid, timeout=2.0)
                    await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))
                    first_n, first_bytes = ep.received, ep.received_bytes
                    for _ in range(s.replays):
                        ep.send(data, a.addr)
                        await asyncio.sleep(0.02)
                    await asyncio.sleep(s.replay_wait_s)
                    n = ep.received - first_n
                    nbytes = ep.received_bytes - first_bytes
                    out[method] = {
                        "request_bytes": len(data),
                        "first": first.short(),
                        "first_reply_bytes": first_bytes,
                        "first_ratio": round(first_bytes / len(data), 2),
                        "replays": s.replays,
                        "replay_replies": n,
                        "replay_reply_bytes": nbytes,
                        "replay_ratio": round(nbytes / (s.replays * len(data)), 2),
                        "answer_kinds": dict(ep.kinds),
                    }
                finally:
                    ep.close()
        finally:
            mon.close()
    return out


# --- 4. a fake node captures keys --------------------------------------------------------------

FORGED = pack("FORGED")


def ping_only(fid: int) -> dict[str, Any]:
    return {"ping": lambda args, src: {"id": idb(fid)}}


def full_fake(fid: int, addr: tuple[str, int], v: NodeProc, ring: list[NodeProc]) -> dict[str, Any]:
    """A fake just before ``v`` that claims plausible lists, owns every key it is asked about
    (``find`` answers done with itself), forges reads and swallows writes."""
    me = [idb(fid), addr[0], addr[1]]
    order = ring_order(ring)
    i = order.index(v)
    succs = [order[(i + k) % len(order)].peer() for k in range(len(order))]
    preds = [order[(i - k) % len(order)].peer() for k in range(1, len(order) + 1)]

    def records(keys: Any) -> list[Any]:
        keys = keys if isinstance(keys, list) else []
        return [[k, FORGED, now_ms() + 1, idb(fid), None] for k in keys if isinstance(k, bytes)]

    return {
        "ping": lambda args, src: {"id": idb(fid)},
        "neighbors": lambda args, src: {
            "id": idb(fid),
            "succs": succs,
            "preds": preds,
            **({"hint": None} if "id" in args else {}),
        },
        "find": lambda args, src: {"id": idb(fid), "done": True, "nodes": [me]},
        "notify": lambda args, src: {},
        "store_read": lambda args, src: {
            "records": records(args.get("keys")),
            "read": len(args.get("keys") or []),
        },
        "store_write": lambda args, src: {"version": [now_ms(), idb(fid)], "existed": True},
        "store_push": lambda args, src: {"applied": len(args.get("records") or [])},
        # not in the brief, but a fake that stays in successor lists must answer the sync too
        "store_digest": lambda args, src: {"digest": bytes(20), "count": 0},
        "store_scan": lambda args, src: {"items": [], "next": None},
    }


async def capture(loop: str, s: Settings, chosen_id: bool, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Cluster(loop) as cl:
        mon = await Monitor.open()
        fake: Endpoint | None = None
        renotify: asyncio.Task[None] | None = None
        try:
            a, b, _c = nodes = await ring_of_three(cl, mon)
            v = b
            p = predecessor_of(v, nodes)
            honest: list[bytes] = []
            if full:  # honest data first
                honest = [b"honest-%d-" % i + os.urandom(4).hex().encode() for i in range(s.puts)]
                async with Client(a.addr) as client:
                    res = await many(honest, lambda k: bounded(client.put(k, k.decode()), 60), 16)
                out["honest_puts_ok"] = sum(r[0] == "ok" for r in res)
            if chosen_id:
                fid = (v.id - 1) % RING
                fake = await Endpoint.open()
            else:
                cands = find_port_id(p.id, v.id)
                out["port_candidates"] = len(cands)
                got = None
                for port, ident in cands[:200]:
                    try:
                        got = (await Endpoint.open(port=port), ident)
                        break
                    except OSError:
                        continue
                if got is None:
                    return {"error": "no free port with an id in the predecessor gap"}
                fake, fid = got
                out["fake_port"] = fake.port
                out["fake_gap_position"] = round(
                    ((fid - p.id) % RING) / ((v.id - p.id) % RING), 6
                )  # 1.0 = just below the victim
            fake.handlers = full_fake(fid, fake.addr, v, nodes) if full else ping_only(fid)
            notify = {"id": idb(fid), "preds": []}
            ans = await fake.call(v.addr, "notify", notify, timeout=2.0)
            out["notify_victim"] = ans.short()
            if full:
                others = [n for n in nodes if n is not v]
                out["notify_others"] = {
                    n.name: (await fake.call(n.addr, "notify", notify, timeout=2.0)).short()
                    for n in others
                }
                fake_ep = fake

                async def keep_notifying() -> None:
                    for _ in range(600):  # bounded; cancelled when the experiment ends
                        await asyncio.sleep(1.0)
                        for n in nodes:
                            fake_ep.send(udpdht.wire.encode_request(
                                random.getrandbits(64), "notify", notify), n.addr)  # fmt: skip

                renotify = asyncio.get_running_loop().create_task(keep_notifying())
                await asyncio.sleep(4.0)  # two or three stabilize rounds
            else:
                await asyncio.sleep(0.5)
            sts = await mon.statuses(nodes)
            vv = view(sts[1])
            out["victim_predecessor_is_fake"] = vv.get("pred") == fid
            out["nodes_listing_fake"] = sum(
                fid in (view(st).get("succs", []) + view(st).get("preds", [])) for st in sts
            )
            if not full:
                keys = [b"probe-%d-" % i + os.urandom(4).hex().encode() for i in range(s.puts)]
                out["keys_in_fake_range"] = sum(
                    in_half_open(udpdht.ids.hash_key(k), p.id, fid) for k in keys
                )
                out["keys_in_victim_range"] = sum(
                    in_half_open(udpdht.ids.hash_key(k), p.id, v.id) for k in keys
                )
                progress(f"  [{loop}] 4 {len(keys)} puts through A")
                async with Client(a.addr) as client:

                    async def put(k: bytes) -> tuple[str, Any, float]:
                        t = time.monotonic()
                        r = await bounded(client.put(k, "v"), 60)
                        return r[0], r[1], time.monotonic() - t

                    t0 = time.monotonic()
                    res = await many(keys, put, 50)
                    total = time.monotonic() - t0
                fails = [r for r in res if r[0] != "ok"]
                out["puts"] = len(keys)
                out["puts_failed"] = len(fails)
                out["put_errors"] = dict(
                    Counter(r[1].split(":")[0] if r[0] == "error" else r[0] for r in fails)
                )
                out["puts_wall_s"] = round(total, 1)
                out["put_latency"] = latency_summary([r[2] for r in res])
                out["failed_put_latency"] = latency_summary([r[2] for r in fails])
            else:
                progress(f"  [{loop}] 4 gets and lookups of {len(honest)} keys on each node")
                forged: Counter[str] = Counter()
                correct: Counter[str] = Counter()
                errors: Counter[str] = Counter()
                names_fake: Counter[str] = Counter()
                for n in nodes:
                    async with Client(n.addr) as client:

                        async def get(k: bytes, client: Client = client) -> tuple[str, Any]:
                            return await bounded(client.get(k), 60)

                        async def look(k: bytes, client: Client = client) -> tuple[str, Any]:
                            return await bounded(client.lookup(k), 60)

                        for k, r in zip(honest, await many(honest, get, 32), strict=True):
                            if r[0] == "ok" and r[1] == "FORGED":
                                forged[n.name] += 1
                            elif r[0] == "ok" and r[1] == k.decode():
                                correct[n.name] += 1
                            else:
                                errors[n.name] += 1
                        for r in await many(honest, look, 32):
                            if r[0] == "ok" and r[1].owner.id == fid:
                                names_fake[n.name] += 1
                out["gets_per_node"] = len(honest)
                out["gets_forged"] = dict(forged)
                out["gets_correct"] = dict(correct)
                out["gets_failed"] = dict(errors)
                out["lookups_naming_fake"] = dict(names_fake)
                out["keys_in_fake_range"] = sum(
                    in_half_open(udpdht.ids.hash_key(k), p.id, fid) for k in honest
                )
            sts = await mon.statuses(nodes)
            out["victim_predecessor_is_fake_after"] = view(sts[1]).get("pred") == fid
            out["fake_was_asked"] = dict(fake.requests_seen)
        finally:
            await close_fake(renotify, fake, mon)
    return out


async def close_fake(
    renotify: asyncio.Future[Any] | None, fake: Endpoint | None, mon: Monitor
) -> None:
    """End a fake node: its re-notify task, its socket, and the monitor beside it."""
    if renotify is not None:
        renotify.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renotify
    if fake is not None:
        fake.close()
    mon.close()


async def f4_fake_node(loop: str, s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, chosen, full in (
        ("a_chosen_id_ping_only", True, False),
        ("b_chosen_id_full_fake", True, True),
        ("c_port_id_ping_only", False, False),
        ("c_port_id_full_fake", False, True),
    ):
        progress(f"  [{loop}] 4 fake node: {label}")
        try:
            out[label] = await capture(loop, s, chosen, full)
        except Exception as exc:
            out[label] = {"error": err(exc), "trace": traceback.format_exc()[-800:]}
    return out


# --- 5. O(store) work on the event loop --------------------------------------------------------


def fill_store(directory: Path, count: int) -> dict[str, Any]:
    start = time.monotonic()
    store = DiskStore(directory)
    rng = random.Random(5)
    writer = os.urandom(20)
    try:
        for i in range(count):
            key = b"bulk-%08d" % i
            store.put(Record(key, rng.randbytes(60_000), Version(now_ms(), writer), None))
    finally:
        store.close()
    seconds = time.monotonic() - start
    size = dir_bytes([directory])
    return {
        "values": count,
        "fill_s": round(seconds, 1),
        "dir_mb": round(size / 1e6, 1),
        "fill_mb_per_s": round(size / 1e6 / seconds, 1),
    }


async def f5_store_work(loop: str, s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Cluster(loop) as cl:
        progress(f"  [{loop}] 5 filling a store with {s.store_values} values of 60 KB")
        directory = cl.data_dir("X")
        out["fill"] = await asyncio.get_running_loop().run_in_executor(
            None, fill_store, directory, s.store_values
        )
        x = await cl.start("X")
        for _ in range(300):  # wait (at most 30 s) until it answers
            if (await one_shot(x.addr, "ping", timeout=0.1)).answered:
                break
        mem = x.memory()
        out["rss_mb_before"] = round(mem.get("VmRSS", 0) / 1024, 1)
        out["hwm_mb_before"] = round(mem.get("VmHWM", 0) / 1024, 1)
        whole = idb(x.id)
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("status", "status", {}),
            ("store_digest", "store_digest", {"lo": whole, "hi": whole}),
            ("store_scan_values", "store_scan",
             {"lo": whole, "hi": whole, "after": None, "values": True}),
            ("store_scan_versions", "store_scan",
             {"lo": whole, "hi": whole, "after": None, "values": False}),
        ]  # fmt: skip
        for label, method, args in requests:
            progress(f"  [{loop}] 5 {label}")
            ep, pinger = await Endpoint.open(), await Endpoint.open()
            try:
                # The finding is the work, not spoofing: a token is answered (once), so that
                # a node that hands out tokens still gets the request it asks for.
                call = asyncio.ensure_future(
                    ep.call(x.addr, method, args, timeout=60.0, use_token=True)
                )
                await asyncio.sleep(0.1)
                ping = asyncio.ensure_future(pinger.call(x.addr, "ping", timeout=60.0))
                peak = 0.0
                for _ in range(1300):  # 130 s at most
                    if call.done() and ping.done():
                        break
                    peak = max(peak, x.rss_mb() or 0.0)
                    await asyncio.sleep(0.1)
                ans: Answer = await call
                pans: Answer = await ping
                mem = x.memory()
                out[label] = {
                    "answer": ans.short(),
                    "token_first": ep.kinds.get("token", 0) > 0,
                    "latency_s": round(ans.seconds, 3) if ans.answered else None,
                    "reply_bytes": ans.nbytes,
                    "ping_answered": pans.answered,
                    "ping_latency_s": round(pans.seconds, 3) if pans.answered else None,
                    "rss_peak_mb": round(peak, 1),
                    "rss_mb_after": round(mem.get("VmRSS", 0) / 1024, 1),
                    "hwm_mb_after": round(mem.get("VmHWM", 0) / 1024, 1),
                }
            finally:
                ep.close()
                pinger.close()
        out["alive_at_end"] = x.alive()
    return out


# --- 6. overload evicts a node -----------------------------------------------------------------


def lists(st: dict[str, Any] | None, node: NodeProc) -> bool | None:
    v = view(st)
    if not v["answered"]:
        return None
    return node.id in v["succs"] or node.id in v["preds"]


async def f6_overload(loop: str, s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"flood_s": s.overload_s}
    with Cluster(loop) as cl:
        mon = await Monitor.open()
        try:
            a, b, c = nodes = await ring_of_three(cl, mon)
            specs = [
                FloodSpec(target=b.addr, kinds=["ping", "ping", "status", "garbage"],
                          count=10**9, seconds=s.overload_s, sockets=32, seed=60 + i,
                          target_id=b.id)
                for i in range(2)
            ]  # fmt: skip
            progress(f"  [{loop}] 6 flooding B for {s.overload_s:.0f} s")
            flood = asyncio.ensure_future(run_flood(specs, timeout=s.overload_s + 60))
            samples: list[dict[str, Any]] = []
            t0 = time.monotonic()
            for _ in range(int(s.overload_s) + 60):  # one a second, until the flood ends
                if flood.done():
                    break
                sts = await mon.statuses(nodes, timeout=0.5, tries=1)
                vb = view(sts[1])
                samples.append({
                    "t": round(time.monotonic() - t0, 1),
                    "A_lists_B": lists(sts[0], b),
                    "C_lists_B": lists(sts[2], b),
                    "B_answered": vb["answered"],
                    "B_alone": (not vb["succs"] and vb["pred"] is None) if vb["answered"]
                    else None,
                })  # fmt: skip
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0) % 1.0))
            stats = await flood
            out["sent"] = stats.get("sent", 0)
            out["send_rate_per_s"] = round(
                stats.get("sent", 0) / max(stats.get("seconds", 1), 1e-9)
            )
            out["answers_to_flood"] = stats.get("answers", {})
            out["evicted"] = any(x["A_lists_B"] is False and x["C_lists_B"] is False
                                 for x in samples)  # fmt: skip
            out["evicted_by_A_or_C"] = any(
                x["A_lists_B"] is False or x["C_lists_B"] is False for x in samples
            )
            out["B_alone"] = any(x["B_alone"] for x in samples)
            out["B_status_unanswered_samples"] = sum(not x["B_answered"] for x in samples)
            out["samples"] = len(samples)
            out["timeline"] = samples
            sts = await mon.statuses(nodes)
            out["views_after"] = {
                n.name: {
                    "answered": st is not None,
                    "succs": [m.name for m in nodes if m.id in view(st).get("succs", [])],
                    "preds": [m.name for m in nodes if m.id in view(st).get("preds", [])],
                }
                for n, st in zip(nodes, sts, strict=True)
            }
            healed = await wait_formed(mon, nodes, within=s.heal_s)
            out["rejoin_s"] = "never" if healed is None else round(healed, 1)
            key = b"after-flood-" + os.urandom(4).hex().encode()
            async with Client(a.addr) as client:
                put = await bounded(client.put(key, "same everywhere"), 30)
            out["put_via_A"] = put[0] if put[0] != "error" else put[1]
            reads: dict[str, Any] = {}
            for n in (b, c):
                async with Client(n.addr) as client:
                    r = await bounded(client.get(key), 30)
                    reads[n.name] = r[1] if r[0] != "timeout" else "timeout"
            out["get_after"] = reads
            out["split_brain"] = any(v != "same everywhere" for v in reads.values())
            st_b = await mon.status(b)
            out["B_rpc"] = st_b.get("rpc") if st_b else None
        finally:
            mon.close()
    return out


# --- 7. unbounded work -------------------------------------------------------------------------


def sensible_fake(
    fid: int, addr: tuple[str, int], ring: list[NodeProc], busy: bool
) -> dict[str, Any]:
    """A fake that routes correctly over the ring plus itself, and answers BUSY to writes."""
    members = sorted([(n.id, list(n.peer())) for n in ring] + [(fid, [idb(fid), *addr])])
    ids = [m[0] for m in members]
    me = ids.index(fid)
    size = len(members)

    def owner_index(key: int) -> int:
        for i, ident in enumerate(ids):
            if ident >= key:
                return i
        return 0

    def find(args: dict[str, Any], src: Any) -> dict[str, Any]:
        raw = args.get("key")
        key = int.from_bytes(raw, "big") if isinstance(raw, bytes) else 0
        i = owner_index(key)
        nodes = [members[(i + k) % size][1] for k in range(3)]
        return {"id": idb(fid), "done": True, "nodes": nodes}

    succs = [members[(me + k) % size][1] for k in range(1, size)]
    preds = [members[(me - k) % size][1] for k in range(1, size)]

    def write(args: dict[str, Any], src: Any) -> Any:
        if busy:
            raise Refuse(7, "busy")
        return {"version": [now_ms(), idb(fid)], "existed": False}

    return {
        "ping": lambda args, src: {"id": idb(fid)},
        "neighbors": lambda args, src: {
            "id": idb(fid),
            "succs": succs,
            "preds": preds,
            **({"hint": None} if "id" in args else {}),
        },
        "find": find,
        "notify": lambda args, src: {},
        "store_write": write,
        "store_push": lambda args, src: {"applied": len(args.get("records") or [])},
        "store_read": lambda args, src: {"records": [], "read": len(args.get("keys") or [])},
        "store_digest": lambda args, src: {"digest": bytes(20), "count": 0},
        "store_scan": lambda args, src: {"items": [], "next": None},
    }


async def f7a_coordinator(loop: str, s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Cluster(loop) as cl:
        mon = await Monitor.open()
        fake: Endpoint | None = None
        renotify: asyncio.Task[None] | None = None
        try:
            a, b, _c = nodes = await ring_of_three(cl, mon)
            p = predecessor_of(b, nodes)
            cands = find_port_id(p.id, b.id)
            got = None
            for port, ident in cands[:200]:
                try:
                    got = (await Endpoint.open(port=port), ident)
                    break
                except OSError:
                    continue
            if got is None:
                return {"error": "no free port with an id in B's predecessor gap"}
            fake, fid = got
            fake.handlers = sensible_fake(fid, fake.addr, nodes, busy=True)
            notify = {"id": idb(fid), "preds": []}
            out["notify_answers"] = {
                n.name: (await fake.call(n.addr, "notify", notify, timeout=2.0)).short()
                for n in nodes
            }
            fake_ep = fake

            async def keep_notifying() -> None:
                for _ in range(600):
                    await asyncio.sleep(1.0)
                    for n in nodes:
                        fake_ep.send(udpdht.wire.encode_request(
                            random.getrandbits(64), "notify", notify), n.addr)  # fmt: skip

            renotify = asyncio.ensure_future(keep_notifying())
            await asyncio.sleep(4.0)
            keys = keys_in(p.id, fid, s.coordinator_puts, prefix=b"busy")
            async with Client(a.addr) as client:
                look = await bounded(client.lookup(keys[0]), 20)
            out["fake_owns_keys"] = look[0] == "ok" and look[1].owner.id == fid
            st0 = await mon.status(a)
            mem0 = a.memory()
            out["rss_mb_before"] = round(mem0.get("VmRSS", 0) / 1024, 1)
            spec = FloodSpec(target=a.addr, kinds=["put_keys"], count=len(keys), seconds=60,
                             sockets=8, seed=7, put_keys=keys, value_size=VALUE_BYTES,
                             drain_s=s.coordinator_watch_s)  # fmt: skip
            progress(f"  [{loop}] 7a {len(keys)} puts of 60 KB to A, keys owned by a BUSY fake")
            flood = asyncio.ensure_future(run_flood([spec], timeout=120 + s.coordinator_watch_s))
            peak, _ = await sample_memory(a, s.coordinator_watch_s)
            stats = await flood
            st1 = await mon.status(a)
            mem1 = a.memory()
            out["puts_sent"] = stats.get("sent", 0)
            out["send_s"] = round(stats.get("seconds", 0.0), 2)
            if st0 and st1:
                out["A_received_delta"] = st1["rpc"]["received"] - st0["rpc"]["received"]
            out["answers"] = stats.get("answers", {})
            out["rss_mb_peak"] = peak
            out["rss_mb_after"] = round(mem1.get("VmRSS", 0) / 1024, 1)
            out["hwm_mb_after"] = round(mem1.get("VmHWM", 0) / 1024, 1)
            out["A_alive"] = a.alive()
            out["fake_store_writes"] = fake.requests_seen.get("store_write", 0)
        finally:
            await close_fake(renotify, fake, mon)
    return out


async def f7b_notifiers(loop: str, s: Settings) -> dict[str, Any]:
    import socket as socketlib

    out: dict[str, Any] = {}
    with Cluster(loop) as cl:
        mon = await Monitor.open()
        socks: list[socketlib.socket] = []
        try:
            _a, b, _c = nodes = await ring_of_three(cl, mon)
            log0 = b.err_size()
            st0 = await mon.status(b)
            progress(f"  [{loop}] 7b notify from {s.notifiers} sockets to B")
            for _ in range(s.notifiers):
                sock = socketlib.socket(socketlib.AF_INET, socketlib.SOCK_DGRAM)
                sock.bind(("127.0.0.1", 0))
                sock.setblocking(False)
                socks.append(sock)
                port = sock.getsockname()[1]
                args = {"id": idb(udpdht.ids.node_id_for("127.0.0.1", port)), "preds": []}
                with contextlib.suppress(OSError):
                    sock.sendto(udpdht.wire.encode_request(random.getrandbits(64), "notify",
                                                           args), b.addr)  # fmt: skip
            fakes = {udpdht.ids.node_id_for("127.0.0.1", sk.getsockname()[1]) for sk in socks}
            preds_seen: set[int] = set()
            fake_pred_samples = 0
            unanswered = 0
            t0 = time.monotonic()
            for _ in range(int(s.notify_watch_s) + 5):
                if time.monotonic() - t0 >= s.notify_watch_s:
                    break
                st = await mon.status(b, timeout=0.5, tries=1)
                v = view(st)
                if not v["answered"]:
                    unanswered += 1
                elif v["pred"] is not None:
                    preds_seen.add(v["pred"])
                    fake_pred_samples += v["pred"] in fakes
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0) % 1.0))
            kinds: Counter[str] = Counter()
            for sock in socks:
                for _ in range(100):
                    try:
                        data = sock.recv(70_000)
                    except OSError:
                        break
                    kinds[_kind(data)] += 1
            text = b.log_text(log0)
            st1 = await mon.status(b)
            out["notifiers"] = len(socks)
            out["answers"] = dict(kinds)
            out["B_log_bytes"] = b.err_size() - log0
            out["B_log_lines"] = text.count("\n")
            out["tracebacks"] = text.count("Traceback")
            out["failed_lines"] = text.count("failed")
            out["B_predecessors_seen"] = len(preds_seen)
            out["B_fake_predecessor_samples"] = fake_pred_samples
            out["B_status_unanswered"] = unanswered
            if st0 and st1:
                out["B_rpc_delta"] = {
                    k: st1["rpc"][k] - st0["rpc"].get(k, 0)
                    for k in st1["rpc"]
                    if isinstance(st1["rpc"][k], int)
                }
            out["B_rpc"] = st1.get("rpc") if st1 else None
            out["ring_ideal_after"] = await wait_formed(mon, nodes, within=20) is not None
        finally:
            for sock in socks:
                sock.close()
            mon.close()
    return out


def _kind(data: bytes) -> str:
    kind, _, msg = classify(data)
    if kind == "error":
        return f"error {msg[3]}"
    return kind


async def windowed(
    ep: Endpoint,
    addr: tuple[str, int],
    make: Callable[[int], tuple[str, dict[str, Any]]],
    seconds: float,
    inflight: int = 32,
    timeout: float = 5.0,
) -> tuple[Counter[str], float]:
    """Send requests ``inflight`` at a time for ``seconds``: answers by kind, elapsed time."""
    counts: Counter[str] = Counter()
    end = time.monotonic() + seconds
    index = [0]

    async def worker() -> None:
        for _ in range(1_000_000):
            if time.monotonic() >= end:
                return
            i = index[0]
            index[0] += 1
            method, args = make(i)
            ans = await ep.call(addr, method, args, timeout=timeout)
            counts["ok" if ans.ok else ans.short().split(":")[0]] += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return counts, time.monotonic() - t0


async def f7c_disk(loop: str, s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Cluster(loop) as cl:
        mon = await Monitor.open()
        ep = await Endpoint.open()
        try:
            a, _b, _c = nodes = await ring_of_three(cl, mon)
            dirs = [n.data_dir for n in nodes]
            value = os.urandom(VALUE_BYTES)
            tag = os.urandom(4).hex().encode()

            def put(i: int) -> tuple[str, dict[str, Any]]:
                return "put", {"key": b"fill-%s-%d" % (tag, i), "value": value, "ttl": None}

            progress(f"  [{loop}] 7c public puts for {s.fill_put_s:.0f} s")
            size0 = dir_bytes(dirs)
            counts, elapsed = await windowed(ep, a.addr, put, s.fill_put_s)
            size1 = dir_bytes(dirs)
            out["puts"] = dict(counts)
            out["puts_ok_per_s"] = round(counts["ok"] / elapsed, 1)
            out["put_growth_mb"] = round((size1 - size0) / 1e6, 1)
            out["put_growth_mb_per_s"] = round((size1 - size0) / 1e6 / elapsed, 2)

            def push(i: int) -> tuple[str, dict[str, Any]]:
                rec = [os.urandom(16), value[:59_900], now_ms(), os.urandom(20), None]
                return "store_push", {"records": [rec]}

            progress(f"  [{loop}] 7c store_push to A for {s.fill_push_s:.0f} s")
            size0 = dir_bytes([a.data_dir])
            counts, elapsed = await windowed(ep, a.addr, push, s.fill_push_s)
            size1 = dir_bytes([a.data_dir])
            out["pushes"] = dict(counts)
            out["push_growth_mb"] = round((size1 - size0) / 1e6, 1)
            out["push_growth_mb_per_s"] = round((size1 - size0) / 1e6 / elapsed, 2)
        finally:
            ep.close()
            mon.close()
    return out


async def f7_unbounded(loop: str, s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, fn in (
        ("a_coordinator_memory", f7a_coordinator),
        ("b_notify_sources", f7b_notifiers),
        ("c_disk_fill", f7c_disk),
    ):
        try:
            out[label] = await fn(loop, s)
        except Exception as exc:
            out[label] = {"error": err(exc), "trace": traceback.format_exc()[-800:]}
    return out


# --- 8. admin and leaving ----------------------------------------------------------------------


async def f8_admin(loop: str, s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Cluster(loop) as cl:
        mon = await Monitor.open()
        try:
            progress(f"  [{loop}] 8a admin_shutdown signed for P, sent to Q")
            cookie = secrets.token_bytes(32)
            for name in ("P", "Q"):
                d = cl.data_dir(name)
                d.mkdir(parents=True, exist_ok=True)
                fd = os.open(d / "cookie", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(cookie.hex() + "\n")
            p = await cl.start("P")
            q = await cl.start("Q", [p])
            formed = await wait_formed(mon, [p, q], within=30)
            a8: dict[str, Any] = {"ring_formed": formed is not None}
            try:
                # A signer that binds the target node takes its id: sign for P, send to Q.
                params = inspect.signature(udpdht.admin.sign).parameters
                extra = {"target": idb(p.id)} if "target" in params else {}
                a8["signed_for_target"] = "P" if extra else "(sign takes no target)"
                args = udpdht.admin.sign(cookie, "admin_shutdown", {}, time.time(), **extra)
            except Exception as exc:
                a8["sign"] = err(exc)
            else:
                ans = await one_shot(q.addr, "admin_shutdown", args, timeout=2.0)
                a8["answer"] = ans.short()
                for _ in range(50):  # 5 s at most
                    if not q.alive():
                        break
                    await asyncio.sleep(0.1)
                a8["Q_process_exited"] = not q.alive()
                a8["Q_answers_ping"] = (await one_shot(q.addr, "ping", timeout=1.0)).answered
                a8["P_answers_ping"] = (await one_shot(p.addr, "ping", timeout=1.0)).answered
            out["a_cross_node_shutdown"] = a8
            cl.kill(p)
            cl.kill(q)

            progress(f"  [{loop}] 8b leaving naming A, sent to B by a stranger")
            a, b, _c = await start_ring(cl, mon, ("A8", "B8", "C8"))
            log0 = b.err_size()
            ans = await one_shot(b.addr, "leaving", {"id": idb(a.id)}, timeout=2.0)
            st = await mon.status(b)  # at once: B's next stabilize round may bring A back
            t0 = time.monotonic()
            back = None
            for _ in range(100):  # 20 s at most
                st2 = await mon.status(b)
                if lists(st2, a):
                    back = round(time.monotonic() - t0, 2)
                    break
                await asyncio.sleep(0.2)
            lines = [ln for ln in b.log_text(log0).splitlines() if "left" in ln]
            out["b_forged_leaving"] = {
                "answer": ans.short(),
                "B_dropped_A": lists(st, a) is False,
                "A_back_in_B_leafset_after_s": back,
                "B_log_left_lines": lines[:5],
            }
        finally:
            mon.close()
    return out


# --- the driver --------------------------------------------------------------------------------

FINDINGS: dict[int, tuple[str, Callable[[str, Settings], Awaitable[dict[str, Any]]]]] = {
    1: ("f1_deafen", f1_deafen),
    2: ("f2_poisoned_versions", f2_versions),
    3: ("f3_amplification", f3_amplification),
    4: ("f4_fake_node", f4_fake_node),
    5: ("f5_store_work", f5_store_work),
    6: ("f6_overload", f6_overload),
    7: ("f7_unbounded", f7_unbounded),
    8: ("f8_admin", f8_admin),
}


async def run_loop(loop: str, only: list[int], s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number in only:
        key, fn = FINDINGS[number]
        progress(f"[{loop}] finding {number}: {key}")
        t0 = time.monotonic()
        try:
            out[key] = await fn(loop, s)
        except Exception as exc:
            out[key] = {"error": err(exc), "trace": traceback.format_exc()[-1500:]}
        out[key]["_seconds"] = round(time.monotonic() - t0, 1)
        progress(f"[{loop}] finding {number} done in {out[key]['_seconds']} s")
    return out


# --- the human table ---------------------------------------------------------------------------


def fmt(v: Any, width: int = 90) -> str:
    text = _fmt(v)
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)


def rows(key: str, r: dict[str, Any]) -> list[tuple[str, Any]]:
    """The figures of one finding as (label, value) rows."""
    if "error" in r:
        return [("error", r["error"])]
    out: list[tuple[str, Any]] = []
    if key == "f1_deafen":
        for name, v in r.items():
            if not isinstance(v, dict):
                continue
            if "error" in v:
                out.append((f"{name}", v["error"]))
                continue
            out.append(
                (
                    f"{name}: leaving answer",
                    v["leaving_answer"].get("kind")
                    + (
                        f" {v['leaving_answer'].get('code')}"
                        if v["leaving_answer"].get("code")
                        else ""
                    ),
                )
            )
            out.append((f"{name}: answering at end / first deaf s",
                        f"{v['answering_at_end']}/3, {fmt(v['first_deaf_s'])}"))  # fmt: skip
    elif key == "f2_poisoned_versions":
        a = r.get("a_max_stamp", {})
        out += [("a: push 2^63-1 applied", a.get("push_applied")), ("a: put new", a.get("put_new")),
                ("a: get after", a.get("get_after"))]  # fmt: skip
        for label, t in r.get("b_tombstone", {}).items():
            out.append((f"b: tombstone expiry {label} applied", t.get("push_applied")))
        cc = r.get("c_future_stamp", {})
        out += [("c: +10y push applied", cc.get("push_applied")), ("c: put x", cc.get("put_x")),
                ("c: stamp ahead (years)", cc.get("stamp_ahead_years"))]  # fmt: skip
        d = r.get("d_foreign_keys", {})
        out.append(("d: foreign keys applied (of 100)", d.get("applied", d.get("answer"))))
    elif key == "f3_amplification":
        for m, v in r.items():
            if isinstance(v, dict) and "first_ratio" in v:
                out.append(
                    (
                        f"{m}: first ratio / replay ratio / replies",
                        f"{v['first_ratio']} / {v['replay_ratio']} / {v['replay_replies']}",
                    )
                )
    elif key == "f4_fake_node":
        for label, v in r.items():
            if not isinstance(v, dict):
                continue
            if "error" in v:
                out.append((label, v["error"]))
                continue
            out.append(
                (
                    f"{label}: notify / victim pred is fake",
                    f"{v.get('notify_victim')} / {fmt(v.get('victim_predecessor_is_fake'))}",
                )
            )
            out.append((f"{label}: random keys in the fake's range", v.get("keys_in_fake_range")))
            if "puts_failed" in v:
                out.append(
                    (
                        f"{label}: puts failed / wall s",
                        f"{v['puts_failed']}/{v['puts']} / {v['puts_wall_s']}",
                    )
                )
            if "gets_forged" in v:
                out.append((f"{label}: gets FORGED per node", fmt(v["gets_forged"]) or "0"))
                out.append((f"{label}: lookups naming fake", fmt(v["lookups_naming_fake"]) or "0"))
    elif key == "f5_store_work":
        out.append(("fill", fmt(r.get("fill"))))
        out.append(("rss MB before", r.get("rss_mb_before")))
        for label in ("status", "store_digest", "store_scan_values", "store_scan_versions"):
            v = r.get(label)
            if isinstance(v, dict):
                out.append((f"{label}: latency s / ping s / rss peak MB",
                            f"{fmt(v['latency_s'])} / {fmt(v['ping_latency_s'])} / "
                            f"{v['rss_peak_mb']}"))  # fmt: skip
    elif key == "f6_overload":
        out += [
            ("sent / rate", f"{r.get('sent')} / {r.get('send_rate_per_s')}/s"),
            ("B evicted by both / by A or C",
             f"{fmt(r.get('evicted'))} / {fmt(r.get('evicted_by_A_or_C'))}"),
            ("B alone", r.get("B_alone")),
            ("rejoin s", r.get("rejoin_s")),
            ("split brain", r.get("split_brain")),
            ("reads after", fmt(r.get("get_after"))),
        ]  # fmt: skip
    elif key == "f7_unbounded":
        a = r.get("a_coordinator_memory", {})
        out.append(("a: fake owns keys / puts sent / A received",
                    f"{fmt(a.get('fake_owns_keys'))} / {a.get('puts_sent')} / "
                    f"{a.get('A_received_delta')}"))  # fmt: skip
        out.append(
            (
                "a: A rss MB before/peak/after",
                f"{a.get('rss_mb_before')}/{a.get('rss_mb_peak')}/{a.get('rss_mb_after')}",
            )
        )
        b = r.get("b_notify_sources", {})
        out.append(
            ("b: B log bytes / tracebacks", f"{b.get('B_log_bytes')} / {b.get('tracebacks')}")
        )
        c = r.get("c_disk_fill", {})
        out.append(("c: put MB/s / puts", f"{c.get('put_growth_mb_per_s')} / {fmt(c.get('puts'))}"))
        out.append(("c: push MB/s", c.get("push_growth_mb_per_s")))
    elif key == "f8_admin":
        a = r.get("a_cross_node_shutdown", {})
        out.append(
            ("a: answer / Q shut down", f"{a.get('answer')} / {fmt(a.get('Q_process_exited'))}")
        )
        b = r.get("b_forged_leaving", {})
        out.append(("b: answer / B dropped A / back after s",
                    f"{b.get('answer')} / {fmt(b.get('B_dropped_A'))} / "
                    f"{fmt(b.get('A_back_in_B_leafset_after_s'))}"))  # fmt: skip
    return out


def table(result: dict[str, Any]) -> str:
    loops = list(result["loops"])
    lines = [f"udpdht under test: {result['udpdht']}  (quick: {result['quick']})"]
    for number in result["findings"]:
        key = FINDINGS[number][0]
        lines.append("")
        lines.append(f"== {number}. {key}")
        per_loop = {lp: dict(rows(key, result["loops"][lp].get(key, {}))) for lp in loops}
        labels: list[str] = []
        for lp in loops:
            labels += [lb for lb in per_loop[lp] if lb not in labels]
        width = max([len(lb) for lb in labels] + [10])
        lines.append(f"{'':{width}}  " + "  |  ".join(loops))
        for lb in labels:
            vals = "  |  ".join(fmt(per_loop[lp].get(lb)) for lp in loops)
            lines.append(f"{lb:{width}}  {vals}")
    lines.append("")
    lines.append(f"total {result['seconds']} s")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter, description="Replay the security audit's findings."
    )
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "both"], default="both")
    parser.add_argument("--only", default="1,2,3,4,5,6,7,8", help="findings to run, e.g. 1,3")
    parser.add_argument("--quick", action="store_true", help="smaller counts, shorter waits")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    return parser.parse_args(argv)


def json_default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.hex()
    return repr(obj)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    install_signal_handlers()
    only = sorted({int(x) for x in opts.only.split(",") if x.strip()})
    if not set(only) <= set(FINDINGS):
        raise SystemExit(f"--only: findings are 1..8, not {opts.only}")
    loops = list(LOOPS) if opts.loop == "both" else [opts.loop]
    if "uvloop" in loops and importlib.util.find_spec("uvloop") is None:
        progress("uvloop is not installed for this interpreter: asyncio only")
        loops.remove("uvloop")
    s = settings(opts.quick)
    where = str(Path(udpdht.__file__).resolve().parent)
    progress(f"udpdht under test: {where}; loops: {', '.join(loops)}; findings: {only}")
    started = time.monotonic()
    result: dict[str, Any] = {
        "udpdht": where,
        "python": sys.version.split()[0],
        "quick": opts.quick,
        "findings": only,
        "loops": {},
    }
    for loop in loops:
        result["loops"][loop] = asyncio.run(run_loop(loop, only, s))
    result["seconds"] = round(time.monotonic() - started, 1)
    if opts.json:
        print(json.dumps(result, default=json_default))
    else:
        print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
