"""Whether ``get`` finds what ``set`` stored through ``udpdht.Server`` right after many joins.

What is measured
    ``--nodes`` servers (200; ``--quick``: 50), each a :class:`udpdht.Server` with a default
    :class:`~udpdht.node.NodeConfig` (``--stabilize-period`` to change its period, 1 s), all in
    this one process and on one event loop, listening on ``127.0.0.1`` at ephemeral ports.

    1. Joins. ``--join chain`` (the default): server i bootstraps from server i-1, one after
       another, each as soon as the previous ``bootstrap`` returned. ``--join star``: servers
       1..N-1 all bootstrap from server 0 at once (``asyncio.gather``). Recorded: the wall time
       of all the joins, each ``bootstrap``'s latency, and the joins that returned no node.
    2. Sets, right after the last join returned, with no pause: ``--keys`` (300) distinct keys
       with distinct values, key i set through server ``i % N``, ``--concurrency`` (16) calls
       in flight. Recorded: how many returned True, and the latencies (p50, p99, max).
    3. Gets of the same keys, key i through server ``(i * 7 + 3) % N`` (another server than the
       one that set it). Each is counted as correct, None, a wrong value, or a timeout; a None
       is further split into those the server logged as a failure (``get ... failed``: the
       ring could not serve it) and silent ones (the node asked said "no such key").
    4. Re-gets of the keys whose get failed, through the same servers, 5, 10 and 20 s after the
       gets ended (``--recheck``): how many still fail each time.

    Also recorded: the process's CPU time per phase and in all, and, after each phase, how many
    servers have the right successor and predecessor (compared with the sorted ids of all the
    servers: a local look at each server's leafset, no messages).

    ``--diagnose`` adds, for every failed get, the key's true primary and replicas (the
    ``replicas`` servers whose ids follow the key's ring position) and which servers hold the
    key's digest in their store (``server.dht.replicator.store.get(digest(key))``), with their
    place relative to the primary; that look is local and is taken right after the gets and at
    every recheck. After the last recheck, for each key still failing, the server that failed
    it is asked to look up the key's owner (a network call, so only then). It also counts,
    over all the keys, those whose true primary, and whose true replicas, hold the value
    (after the sets, after the gets, at every recheck).

    The loop is the standard asyncio one, as a kademlia script's ``asyncio.run`` gives
    (``--loop uvloop`` for uvloop). The JSON names the code under test: its path, git commit
    and a digest of its uncommitted changes to ``udpdht/``, taken when the run starts.

The same file runs against any udpdht checkout whose ``Server`` has this API: it imports
``udpdht`` from the interpreter's environment (``bench/common.py`` from its own directory).

Usage::

    python bench/settle.py                       # 200 nodes, chain join, human table
    python bench/settle.py --json                # one JSON object on stdout, progress on stderr
    python bench/settle.py --quick               # 50 nodes
    python bench/settle.py --join star --diagnose
    /other/checkout/.venv/bin/python bench/settle.py --json   # the same against other code

Every wait has a deadline (``--max-seconds`` for the whole run) and all the servers are stopped
at the end, also after an error or Ctrl-C: ``astop`` (a graceful leave) for at most
``STOP_TIMEOUT`` (30) seconds, then a forced stop of those still running.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

try:
    import udpdht  # noqa: F401  (installed editable in the venv; else run from a checkout)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import HelpFormatter, positive, progress  # bench/common.py

from udpdht import Server, ids, wire
from udpdht.net import run as run_loop
from udpdht.node import NodeConfig
from udpdht.server import digest

HOST = "127.0.0.1"
JOIN_TIMEOUT = 60.0  # seconds for one bootstrap
OP_TIMEOUT = 90.0  # seconds for one set or get (Server retries for 15 periods itself)
LISTEN_TIMEOUT = 10.0
LOOKUP_TIMEOUT = 15.0  # one diagnostic lookup
STOP_TIMEOUT = 30.0  # all the graceful leaves together
FORCE_TIMEOUT = 5.0  # one forced stop
RECHECKS = (5.0, 10.0, 20.0)
MAX_DETAILS = 100  # failed keys described one by one in --diagnose

T = TypeVar("T")


# --- logs --------------------------------------------------------------------------------------


class LogTally(logging.Handler):
    """Counts the udpdht log records by level and message template, and keeps the reason of
    every ``get ... failed`` (keyed by the key's repr). Echoes warnings when asked to."""

    def __init__(self, echo: bool) -> None:
        super().__init__(logging.INFO)
        self.echo = echo
        self.counts: Counter[str] = Counter()
        self.get_failures: dict[str, str] = {}
        self.set_failures = 0

    def emit(self, record: logging.LogRecord) -> None:
        template = str(record.msg)
        self.counts[f"{record.levelname} {record.name}: {template}"] += 1
        if template.startswith("get %r failed") and isinstance(record.args, tuple):
            key, reason = record.args[0], record.args[1] if len(record.args) > 1 else ""
            self.get_failures[repr(key)] = f"{type(reason).__name__}: {reason}"
        elif template.startswith("set %s failed"):
            self.set_failures += 1
        if self.echo and record.levelno >= logging.WARNING:
            progress(f"  [log] {record.levelname} {record.name}: {record.getMessage()}")

    def count(self, prefix: str) -> int:
        return sum(n for text, n in self.counts.items() if prefix in text)


def install_log_tally(echo: bool) -> LogTally:
    tally = LogTally(echo)
    root = logging.getLogger("udpdht")
    root.setLevel(logging.WARNING)
    root.addHandler(tally)
    root.propagate = False  # counted here, not printed by logging's last-resort handler
    logging.getLogger("udpdht.server").setLevel(logging.INFO)  # "ring not ready" retries
    return tally


# --- small helpers -----------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_ms(samples: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(samples)

    def ms(x: float) -> float | None:
        return None if math.isnan(x) else round(x * 1000, 1)

    return {
        "p50": ms(percentile(ordered, 0.50)),
        "p99": ms(percentile(ordered, 0.99)),
        "max": ms(ordered[-1] if ordered else math.nan),
    }


class Cpu:
    """CPU seconds of this process, per named phase."""

    def __init__(self) -> None:
        self.start = time.process_time()
        self.mark = self.start
        self.phases: dict[str, float] = {}

    def lap(self, name: str) -> float:
        now = time.process_time()
        self.phases[name] = round(now - self.mark, 2)
        self.mark = now
        return self.phases[name]

    def total(self) -> float:
        return round(time.process_time() - self.start, 2)


async def pool(
    count: int, concurrency: int, job: Callable[[int], Awaitable[None]], deadline: float
) -> None:
    """``job(0) .. job(count-1)``, ``concurrency`` at a time, all done before ``deadline``
    (loop time) or TimeoutError."""
    queue = list(range(count - 1, -1, -1))

    async def worker() -> None:
        while queue:  # bounded: every iteration takes one item off the queue
            await job(queue.pop())

    loop = asyncio.get_running_loop()
    workers = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, count))]
    try:
        _, pending = await asyncio.wait(workers, timeout=max(0.0, deadline - loop.time()))
    finally:
        for task in workers:  # after a timeout or Ctrl-C: none left running, none unretrieved
            task.cancel()
        outcomes = await asyncio.gather(*workers, return_exceptions=True)
    if pending:
        raise TimeoutError(f"{len(pending)} workers still busy at the deadline")
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


# --- the ring ----------------------------------------------------------------------------------


@dataclass
class Ring:
    """The servers, in the order they were created (server i joined i-th in a chain)."""

    servers: list[Server]
    replicas: int
    node_ids: list[int] = field(default_factory=list)  # by server index
    sorted_ids: list[int] = field(default_factory=list)
    index_of: dict[int, int] = field(default_factory=dict)  # node id -> server index

    def index(self) -> None:
        """Call once every server is listening: the ids are known then."""
        self.node_ids = []
        for server in self.servers:
            assert server.dht is not None
            self.node_ids.append(server.dht.id)
        self.index_of = {node_id: i for i, node_id in enumerate(self.node_ids)}
        self.sorted_ids = sorted(self.index_of)

    def owners(self, key_id: int, count: int) -> list[int]:
        """Server indexes of the first ``count`` nodes at or after ``key_id`` on the ring."""
        n = len(self.sorted_ids)
        start = bisect.bisect_left(self.sorted_ids, key_id)
        return [self.index_of[self.sorted_ids[(start + k) % n]] for k in range(min(count, n))]

    def rank(self, server_index: int, key_id: int) -> int:
        """Place of a server relative to the key's primary: 0 the primary, 1 its successor,
        ..., -1 its predecessor (whichever of the two ways round is shorter)."""
        n = len(self.sorted_ids)
        start = bisect.bisect_left(self.sorted_ids, key_id) % n
        pos = bisect.bisect_left(self.sorted_ids, self.node_ids[server_index])
        ahead = (pos - start) % n
        return ahead if ahead <= n // 2 else ahead - n

    def neighbours_right(self) -> dict[str, int]:
        """How many running servers have the true successor and predecessor in their leafset."""
        n = len(self.sorted_ids)
        succ_ok = pred_ok = running = 0
        for pos, node_id in enumerate(self.sorted_ids):
            node = self.servers[self.index_of[node_id]].dht
            if node is None or not node.running:
                continue
            running += 1
            succ = node.leafset.successor
            preds = node.leafset.predecessors
            if succ is not None and succ.id == self.sorted_ids[(pos + 1) % n]:
                succ_ok += 1
            if preds and preds[0].id == self.sorted_ids[(pos - 1) % n]:
                pred_ok += 1
        return {"running": running, "successor_right": succ_ok, "predecessor_right": pred_ok}

    def holders(self, key: str, value: str) -> list[dict[str, Any]]:
        """Every server whose store holds the key's digest, with its rank and whether it holds
        the value that was set."""
        dkey = digest(key)
        key_id = ids.hash_key(dkey)
        out: list[dict[str, Any]] = []
        for i, server in enumerate(self.servers):
            node = server.dht
            if node is None or not node.running:
                continue
            record = node.replicator.store.get(dkey)
            if record is None:
                continue
            held: Any = None if record.value is None else wire.unpack_value(record.value)
            out.append(
                {
                    "server": i,
                    "rank": self.rank(i, key_id),
                    "right_value": held == value,
                    "tombstone": record.value is None,
                }
            )
        out.sort(key=lambda h: abs(h["rank"]))
        return out

    def placement(self, keys: Keys) -> dict[str, Any]:
        """Over all the keys: how many have the right value on their true primary, on all of
        their true replicas (ranks 0..replicas-1), and how many right copies each has."""
        primary = full = 0
        copies: Counter[int] = Counter()
        for name, value in zip(keys.names, keys.values, strict=True):
            right = {h["rank"] for h in self.holders(name, value) if h["right_value"]}
            primary += 0 in right
            full += all(r in right for r in range(self.replicas))
            copies[len(right)] += 1
        return {
            "keys": len(keys.names),
            "primary_holds": primary,
            "all_replicas_hold": full,
            "copies_histogram": dict(sorted(copies.items())),
        }


async def start_servers(count: int, period: float) -> list[Server]:
    servers: list[Server] = []
    try:
        for _ in range(count):  # bounded by count
            server = Server(config=NodeConfig(stabilize_period=period))
            servers.append(server)
            await asyncio.wait_for(server.listen(0, HOST), LISTEN_TIMEOUT)
    except BaseException:
        await stop_all(servers)
        raise
    return servers


async def stop_all(servers: list[Server]) -> dict[str, Any]:
    """Graceful leaves for STOP_TIMEOUT seconds at most, then a forced stop of the rest."""
    started = time.perf_counter()
    running = [s for s in servers if s.dht is not None and s.dht.running]
    graceful_ok = True
    if running:
        results = asyncio.gather(*(s.astop() for s in running), return_exceptions=True)
        try:
            await asyncio.wait_for(results, STOP_TIMEOUT)
        except TimeoutError:
            graceful_ok = False
    forced = 0
    for server in servers:
        node = server.dht
        if node is None or not node.running:
            continue
        forced += 1
        try:
            await asyncio.wait_for(node.stop(), FORCE_TIMEOUT)
        except Exception:  # the last resort: close the socket
            with contextlib.suppress(Exception):
                node.endpoint.close()
    return {
        "stop_s": round(time.perf_counter() - started, 2),
        "graceful_in_time": graceful_ok,
        "forced": forced,
    }


# --- the phases --------------------------------------------------------------------------------


@dataclass
class Joins:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    empty: list[int] = field(default_factory=list)  # servers whose bootstrap returned []
    errors: dict[int, str] = field(default_factory=dict)


async def timed_join(server: Server, via: Server, i: int, joins: Joins) -> None:
    start = time.perf_counter()
    try:
        reached = await asyncio.wait_for(server.bootstrap([(HOST, via.port or 0)]), JOIN_TIMEOUT)
    except Exception as exc:  # a timeout, or a bug in the code under test: recorded
        joins.errors[i] = f"{type(exc).__name__}: {exc}"
        return
    finally:
        joins.latencies.append(time.perf_counter() - start)
    if not reached:
        joins.empty.append(i)


async def join_all(servers: list[Server], mode: str) -> Joins:
    joins = Joins()
    start = time.perf_counter()
    if mode == "chain":
        for i in range(1, len(servers)):
            await timed_join(servers[i], servers[i - 1], i, joins)
            if i % 25 == 0 or i == len(servers) - 1:
                progress(f"  joined {i + 1}/{len(servers)} ({time.perf_counter() - start:.1f} s)")
    else:
        await asyncio.gather(
            *(timed_join(servers[i], servers[0], i, joins) for i in range(1, len(servers)))
        )
    joins.seconds = time.perf_counter() - start
    return joins


@dataclass
class Ops:
    """Outcomes and latencies of one batch of sets or gets."""

    outcome: dict[int, str] = field(default_factory=dict)  # key index -> outcome
    latency: dict[int, float] = field(default_factory=dict)  # key index -> seconds
    seconds: float = 0.0

    @property
    def latencies(self) -> list[float]:
        return list(self.latency.values())

    def failed_latencies(self) -> list[float]:
        return [t for i, t in self.latency.items() if self.outcome.get(i) != "ok"]

    def count(self, what: str) -> int:
        return sum(1 for o in self.outcome.values() if o == what)

    def failed(self) -> list[int]:
        return sorted(i for i, o in self.outcome.items() if o != "ok")


async def run_ops(
    label: str,
    indexes: list[int],
    op: Callable[[int], Awaitable[str]],
    concurrency: int,
    deadline: float,
) -> Ops:
    ops = Ops()

    async def one(n: int) -> None:
        i = indexes[n]
        start = time.perf_counter()
        try:
            ops.outcome[i] = await asyncio.wait_for(op(i), OP_TIMEOUT)
        except TimeoutError:
            ops.outcome[i] = "timeout"
        except Exception as exc:  # a bug in the code under test: recorded, the run goes on
            ops.outcome[i] = f"error {type(exc).__name__}"
        ops.latency[i] = time.perf_counter() - start

    start = time.perf_counter()
    await pool(len(indexes), concurrency, one, deadline)
    ops.seconds = time.perf_counter() - start
    progress(f"  {label}: {dict(Counter(ops.outcome.values()))} in {ops.seconds:.1f} s")
    return ops


@dataclass
class Keys:
    names: list[str]
    values: list[str]

    @classmethod
    def make(cls, count: int) -> Keys:
        tag = secrets.token_hex(4)
        return cls(
            [f"settle-{tag}-key-{i}" for i in range(count)],
            [f"settle-{tag}-value-{i}-{secrets.token_hex(8)}" for i in range(count)],
        )


def set_via(i: int, n: int) -> int:
    return i % n


def get_via(i: int, n: int) -> int:
    return (i * 7 + 3) % n


def describe(ring: Ring, keys: Keys, i: int, tally: LogTally) -> dict[str, Any]:
    """A failed key: who was asked, its true primary and replicas, who holds it."""
    key_id = ids.hash_key(digest(keys.names[i]))
    owners = ring.owners(key_id, ring.replicas)
    holders = ring.holders(keys.names[i], keys.values[i])
    return {
        "key": i,
        "set_via": set_via(i, len(ring.servers)),
        "get_via": get_via(i, len(ring.servers)),
        "primary": owners[0],
        "replicas": owners[1:],
        "primary_holds": any(h["rank"] == 0 and h["right_value"] for h in holders),
        "right_copies": sum(1 for h in holders if h["right_value"]),
        "holders": holders,
        "logged_failure": tally.get_failures.get(repr(keys.names[i])),
    }


def summarize_holders(details: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "keys": len(details),
        "primary_holds": sum(1 for d in details if d["primary_holds"]),
        "no_copy_anywhere": sum(1 for d in details if d["right_copies"] == 0),
        "copies_histogram": dict(Counter(d["right_copies"] for d in details)),
        "holder_ranks": dict(
            sorted(Counter(h["rank"] for d in details for h in d["holders"]).items())
        ),
    }


async def lookup_from(ring: Ring, keys: Keys, i: int) -> dict[str, Any]:
    """Ask the server that failed key i where the key lives (after the last recheck)."""
    server = ring.servers[get_via(i, len(ring.servers))]
    node = server.dht
    key_id = ids.hash_key(digest(keys.names[i]))
    primary = ring.owners(key_id, 1)[0]
    out: dict[str, Any] = {"key": i, "primary": primary}
    if node is None or not node.running:
        out["lookup"] = "server not running"
        return out
    try:
        found = await asyncio.wait_for(node.lookup_id(key_id), LOOKUP_TIMEOUT)
    except Exception as exc:  # what the lookup says is the finding
        out["lookup"] = f"{type(exc).__name__}: {exc}"
        return out
    owner = ring.index_of.get(found.owner.id)
    out["lookup_owner"] = owner
    out["lookup_right"] = owner == primary
    out["hops"] = len(found.hops)
    return out


# --- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    nodes: int
    keys: int
    join: str
    period: float
    concurrency: int
    recheck: tuple[float, ...]
    diagnose: bool
    max_seconds: float
    loop: str


async def measure(settings: Settings, tally: LogTally) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.max_seconds
    cpu = Cpu()
    result: dict[str, Any] = {}
    progress(f"starting {settings.nodes} servers")
    servers = await start_servers(settings.nodes, settings.period)
    try:
        ring = Ring(servers, servers[0].replicas)
        ring.index()
        cpu.lap("listen")
        remaining = deadline - loop.time()
        progress(f"joining ({settings.join})")
        joins = await asyncio.wait_for(join_all(servers, settings.join), remaining)
        cpu.lap("joins")
        result["joins"] = {
            "seconds": round(joins.seconds, 2),
            "latency_ms": latency_ms(joins.latencies),
            "empty": joins.empty,
            "errors": joins.errors,
            "ring": ring.neighbours_right(),
        }
        progress(f"  joins took {joins.seconds:.1f} s; neighbours right: {ring.neighbours_right()}")

        n, keys = len(servers), Keys.make(settings.keys)
        every = list(range(settings.keys))

        async def do_set(i: int) -> str:
            ok = await servers[set_via(i, n)].set(keys.names[i], keys.values[i])
            return "ok" if ok is True else "false"

        async def do_get(i: int) -> str:
            got = await servers[get_via(i, n)].get(keys.names[i])
            if got == keys.values[i]:
                return "ok"
            if got is None:
                return "none_logged" if repr(keys.names[i]) in tally.get_failures else "none"
            return "wrong"

        sets = await run_ops("sets", every, do_set, settings.concurrency, deadline)
        cpu.lap("sets")
        result["sets"] = {
            "true": sets.count("ok"),
            "false": sets.count("false"),
            "other": len(every) - sets.count("ok") - sets.count("false"),
            "outcomes": dict(Counter(sets.outcome.values())),
            "seconds": round(sets.seconds, 2),
            "latency_ms": latency_ms(sets.latencies),
            "ring": ring.neighbours_right(),
        }
        if settings.diagnose:
            result["sets"]["placement"] = ring.placement(keys)
        tally.get_failures.clear()
        gets = await run_ops("gets", every, do_get, settings.concurrency, deadline)
        cpu.lap("gets")
        gets_ended = loop.time()
        failed = gets.failed()
        result["gets"] = {
            "correct": gets.count("ok"),
            "none": gets.count("none") + gets.count("none_logged"),
            "none_not_found": gets.count("none"),
            "none_logged_failure": gets.count("none_logged"),
            "wrong": gets.count("wrong"),
            "timeout": gets.count("timeout"),
            "outcomes": dict(Counter(gets.outcome.values())),
            "seconds": round(gets.seconds, 2),
            "latency_ms": latency_ms(gets.latencies),
            "latency_ms_failed": latency_ms(gets.failed_latencies()),
            "ring": ring.neighbours_right(),
            "failed_keys": failed,
            "failed_get_via": sorted({get_via(i, n) for i in failed}),
        }
        diagnosis: dict[str, Any] = {}
        if settings.diagnose:
            result["gets"]["placement"] = ring.placement(keys)
        if settings.diagnose and failed:
            details = [describe(ring, keys, i, tally) for i in failed]
            diagnosis["after_gets"] = summarize_holders(details)
            diagnosis["details"] = details[:MAX_DETAILS]

        rechecks: list[dict[str, Any]] = []
        still = failed
        for offset in settings.recheck:  # bounded: a few offsets
            if not still:
                break
            wait = gets_ended + offset - loop.time()
            if wait > 0:
                await asyncio.wait_for(asyncio.sleep(wait), max(0.0, deadline - loop.time()))
            at = loop.time() - gets_ended
            tally.get_failures.clear()
            again = await run_ops(
                f"re-get at +{at:.0f} s", still, do_get, settings.concurrency, deadline
            )
            still = again.failed()
            entry: dict[str, Any] = {
                "planned_s": offset,
                "at_s": round(at, 2),
                "asked": len(again.outcome),
                "still_failing": len(still),
                "outcomes": dict(Counter(again.outcome.values())),
                "latency_ms": latency_ms(again.latencies),
                "ring": ring.neighbours_right(),
            }
            if settings.diagnose:
                entry["placement"] = ring.placement(keys)
            if settings.diagnose and still:
                entry["holders"] = summarize_holders(
                    [describe(ring, keys, i, tally) for i in still]
                )
            rechecks.append(entry)
        cpu.lap("rechecks")
        result["rechecks"] = rechecks
        result["still_failing_keys"] = still
        if settings.diagnose and still:
            lookups = await asyncio.gather(
                *(lookup_from(ring, keys, i) for i in still[:MAX_DETAILS])
            )
            for found in lookups:  # with who holds the key now
                found.update(describe(ring, keys, found["key"], tally))
            diagnosis["final_lookups"] = lookups
            diagnosis["final_lookups_right"] = sum(1 for x in lookups if x.get("lookup_right"))
        if settings.diagnose:
            result["diagnosis"] = diagnosis
        result["cpu_s"] = {"total": cpu.total(), **cpu.phases}
    finally:
        progress("stopping the servers")
        result["stop"] = await stop_all(servers)
    return result


def code_version(root: Path) -> dict[str, Any]:
    """The git commit of the code under test, and a digest of its uncommitted changes to
    ``udpdht/`` (None when clean), so that runs on a tree being edited can be told apart."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.decode(errors="replace")

    head = git("rev-parse", "--short", "HEAD")
    diff = git("diff", "HEAD", "--", "udpdht")
    return {
        "path": str(root),
        "commit": head.strip() if head else None,
        "uncommitted": None if not diff else hashlib.sha1(diff.encode()).hexdigest()[:12],
    }


def code_root() -> Path:
    import udpdht as pkg

    return Path(pkg.__file__ or ".").resolve().parent.parent


def report(
    settings: Settings, result: dict[str, Any], wall: float, tally: LogTally, version: Any
) -> dict[str, Any]:
    return {
        "code": str(code_root()),
        "code_version": version,  # taken when the run started
        "settings": {
            "nodes": settings.nodes,
            "keys": settings.keys,
            "join": settings.join,
            "stabilize_period": settings.period,
            "concurrency": settings.concurrency,
            "recheck_s": list(settings.recheck),
            "loop": settings.loop,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        **result,
        "wall_s": round(wall, 1),
        "logs": {
            "get_failed_warnings": tally.count("get %r failed"),
            "set_failed_warnings": tally.set_failures,
            "ring_not_ready_retries": tally.count("ring not ready"),
            "counts": dict(tally.counts.most_common(15)),
        },
    }


def table(data: dict[str, Any]) -> str:
    s, j, st, g = data["settings"], data["joins"], data["sets"], data["gets"]
    lines = [
        f"code: {data['code']} {data['code_version']}",
        f"{s['nodes']} servers, {s['join']} join, stabilize_period {s['stabilize_period']} s, "
        f"{s['keys']} keys, {s['concurrency']} in flight, loop {s['loop']}",
        f"joins   {j['seconds']:7.1f} s   bootstrap p50 {j['latency_ms']['p50']} ms, "
        f"max {j['latency_ms']['max']} ms; empty {len(j['empty'])}, errors {len(j['errors'])}; "
        f"right successor {j['ring']['successor_right']}/{j['ring']['running']}",
        f"sets    {st['true']:4}/{s['keys']} True   {st['seconds']:6.1f} s   "
        f"p50 {st['latency_ms']['p50']} ms  p99 {st['latency_ms']['p99']} ms  "
        f"max {st['latency_ms']['max']} ms   {st['outcomes']}",
        f"gets    {g['correct']:4}/{s['keys']} right  {g['seconds']:6.1f} s   "
        f"p50 {g['latency_ms']['p50']} ms  p99 {g['latency_ms']['p99']} ms  "
        f"max {g['latency_ms']['max']} ms",
        f"        None {g['none']} (not found {g['none_not_found']}, logged failure "
        f"{g['none_logged_failure']}), wrong {g['wrong']}, timeout {g['timeout']}",
    ]
    for r in data["rechecks"]:
        lines.append(
            f"re-get  +{r['at_s']:5.1f} s: {r['still_failing']:3} of {r['asked']} still fail   "
            f"{r['outcomes']}"
        )
    if "placement" in g:
        lines.append(f"placement after gets (all keys): {g['placement']}")
    if "diagnosis" in data and "after_gets" in data["diagnosis"]:
        lines.append(f"diagnosis after gets: {data['diagnosis']['after_gets']}")
    cpu = data["cpu_s"]
    lines.append(f"cpu     {cpu['total']} s  ({', '.join(f'{k} {v}' for k, v in cpu.items())})")
    lines.append(f"wall    {data['wall_s']} s; stop {data['stop']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        description="Sets then gets through udpdht.Server right after N servers joined.",
    )
    parser.add_argument("--nodes", type=positive, help="servers (default 200; 50 with --quick)")
    parser.add_argument("--keys", type=positive, default=300, help="keys set then got")
    parser.add_argument("--join", choices=["chain", "star"], default="chain")
    parser.add_argument("--stabilize-period", type=float, default=NodeConfig().stabilize_period)
    parser.add_argument("--concurrency", type=positive, default=16, help="sets/gets in flight")
    parser.add_argument(
        "--recheck",
        default=",".join(f"{x:g}" for x in RECHECKS),
        help="seconds after the gets to get the failed keys again (comma-separated)",
    )
    parser.add_argument("--diagnose", action="store_true", help="who holds each failed key")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="cap on the run")
    parser.add_argument("--verbose", action="store_true", help="echo udpdht warnings to stderr")
    parser.add_argument("--quick", action="store_true", help="50 servers")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        recheck = tuple(sorted(float(x) for x in opts.recheck.split(",") if x.strip()))
    except ValueError:
        raise SystemExit("--recheck takes seconds separated by commas, e.g. 5,10,20") from None
    if opts.stabilize_period <= 0 or opts.max_seconds <= 0 or any(x < 0 for x in recheck):
        raise SystemExit("--stabilize-period, --max-seconds and --recheck must be positive")
    nodes = opts.nodes or (50 if opts.quick else 200)
    if nodes < 2:
        raise SystemExit("--nodes must be at least 2")
    settings = Settings(
        nodes=nodes,
        keys=opts.keys,
        join=opts.join,
        period=opts.stabilize_period,
        concurrency=opts.concurrency,
        recheck=recheck,
        diagnose=opts.diagnose,
        max_seconds=opts.max_seconds,
        loop=opts.loop,
    )
    tally = install_log_tally(opts.verbose)
    version = code_version(code_root())
    started = time.perf_counter()
    try:
        result = run_loop(measure(settings, tally), use_uvloop=opts.loop == "uvloop")
    except KeyboardInterrupt:
        progress("interrupted (the servers were stopped)")
        return 130
    data = report(settings, result, time.perf_counter() - started, tally, version)
    progress(f"done in {data['wall_s']} s")
    if opts.json:
        print(json.dumps(data))
    else:
        print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
