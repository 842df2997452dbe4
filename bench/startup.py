"""How long the ``udpdht`` command takes to start, next to the interpreter's own start.

What is measured
    Each command runs in a fresh interpreter (``os.posix_spawn`` of this venv's python, or of
    the ``udpdht`` console script beside it when the venv has one), stdout and stderr to
    /dev/null; this process waits for it with ``os.wait4``. Per run: the wall time from spawn
    to exit (``time.perf_counter``) and the child's CPU time, user + system, from the rusage
    ``wait4`` returns (the steadier figure on a busy machine). Per command: min / median / max
    over ``--rounds`` rounds (10; ``--quick``: 3), after one untimed warm-up round that fills
    the page cache and writes the byte-code caches.

The commands
    * ``python -c pass``: the floor, what any Python command costs here (``site`` included,
      and with it whatever the venv's ``.pth`` files load);
    * ``python -c "import asyncio"``: what the event loop's machinery adds to the floor;
    * ``udpdht --help``, ``udpdht get --help``, ``udpdht node --help``, each both as
      ``python -m udpdht`` and as the console script (``udpdht.cli:main``);
    * ``udpdht status --node H:P`` against a live node: a client command as a user runs it,
      one round trip on loopback included. The node (``udpdht node --port 0``, memory only)
      starts before the rounds and stops after them; ``--no-node`` skips it. A client command
      against a silent address would show the start-up cost alone, but it waits out the RPC
      retries (about 9 s) and the CLI has no timeout option, so it is not run.

    Each round runs every command once, in the order above, so that the ratios to the floor
    (median / median of ``python -c pass``) compare runs made side by side.

What is imported
    ``python -X importtime -m udpdht --help`` runs ``--importtime-runs`` times (3; ``--quick``
    1); per module the median of its self and cumulative microseconds. The table lists the
    ten largest by cumulative time (which includes the modules it imported first), each with
    the module that imported it, and whether some modules of note were loaded (the event
    loop, sqlite3, msgpack, logging, json, prompt_toolkit, udpdht's node, storage,
    replication, server and client). The "loaded?" check runs for the client command too.

The children import udpdht from this checkout (``PYTHONPATH`` is set to it) and keep what
they write under a temporary ``XDG_DATA_HOME`` that is deleted at the end. Their byte code
goes under it too (``PYTHONPYCACHEPREFIX``), and ``PYTHONDONTWRITEBYTECODE`` is not passed
on: an installed package has its byte code (pip compiles it, or the first run writes it), so
the rounds after the warm-up measure what a user waits for, not the compiling of the package
and the standard library from source each time (which ``PYTHONDONTWRITEBYTECODE`` in this
process's environment would otherwise make every run do: 120-150 ms instead of 80-110 for
``udpdht --help`` on the development machine).

Usage::

    python bench/startup.py            # human table (about 20 s)
    python bench/startup.py --json     # one JSON object on stdout, progress on stderr
    python bench/startup.py --quick    # smoke run: 3 rounds

Target (issue #11): ``udpdht --help`` <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import HelpFormatter, positive, progress  # bench/common.py

REPO = Path(__file__).resolve().parent.parent
TARGET_MS = 100.0
NODE_START_TIMEOUT = 20.0
NODE_STOP_TIMEOUT = 15.0
RUN_TIMEOUT = 60.0  # seconds one measured command may take before the bench gives up
NOTABLE = [
    "asyncio",
    "sqlite3",
    "msgpack",
    "logging",
    "json",
    "prompt_toolkit",
    "udpdht.node",
    "udpdht.storage",
    "udpdht.replication",
    "udpdht.server",
    "udpdht.client",
]


@dataclass
class Command:
    label: str
    argv: list[str]
    expect: int = 0  # the exit status a correct run has


@dataclass
class Sample:
    wall_ms: float
    cpu_ms: float


def spawn_and_wait(argv: list[str], env: dict[str, str]) -> tuple[int, Sample]:
    """Run ``argv`` (an absolute path first) to completion: exit status, wall and CPU ms."""
    devnull = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=devnull)
    pidfd = os.pidfd_open(pid)  # readable when the child exits: a wait with a deadline
    try:
        if not select.select([pidfd], [], [], RUN_TIMEOUT)[0]:
            os.kill(pid, signal.SIGKILL)
            os.wait4(pid, 0)
            raise RuntimeError(f"{' '.join(argv)} took over {RUN_TIMEOUT:.0f} s")
        _, status, usage = os.wait4(pid, 0)
    finally:
        os.close(pidfd)
    wall = (time.perf_counter() - start) * 1000
    return os.waitstatus_to_exitcode(status), Sample(wall, (usage.ru_utime + usage.ru_stime) * 1000)


def summary(samples: list[Sample]) -> dict[str, Any]:
    walls = [s.wall_ms for s in samples]
    cpus = [s.cpu_ms for s in samples]
    return {
        "wall_ms": [round(min(walls), 1), round(statistics.median(walls), 1), round(max(walls), 1)],
        "cpu_ms": [round(min(cpus), 1), round(statistics.median(cpus), 1), round(max(cpus), 1)],
        "runs": len(samples),
    }


def parse_importtime(stderr: str) -> list[tuple[str, str, int, int]]:
    """``-X importtime`` lines as (module, parent, self µs, cumulative µs).

    A module's line follows its children's, indented one level less: the parent of a line
    is the first later line with a smaller indentation ("" at the top level)."""
    lines = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$", line)
        if m:
            lines.append((m.group(4), len(m.group(3)), int(m.group(1)), int(m.group(2))))
    rows = []
    for i, (name, indent, own, cum) in enumerate(lines):
        parent = next((n for n, ind, _, _ in lines[i + 1 :] if ind < indent), "")
        rows.append((name, parent, own, cum))
    return rows


def import_profile(python: str, args: list[str], env: dict[str, str], runs: int) -> dict[str, Any]:
    """The heaviest imports of ``python -X importtime -m udpdht ARGS`` (medians over runs)."""
    per_module: dict[str, list[tuple[str, int, int]]] = {}
    totals: list[int] = []
    for _ in range(runs):
        done = subprocess.run(
            [python, "-X", "importtime", "-m", "udpdht", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        rows = parse_importtime(done.stderr)
        totals.append(sum(cum for _, parent, _, cum in rows if not parent))
        for name, parent, own, cum in rows:
            per_module.setdefault(name, []).append((parent, own, cum))
    medians = {
        name: (
            vals[0][0],
            int(statistics.median(v[1] for v in vals)),
            int(statistics.median(v[2] for v in vals)),
        )
        for name, vals in per_module.items()
    }
    top = sorted(medians.items(), key=lambda kv: -kv[1][2])[:10]
    return {
        "command": f"python -X importtime -m udpdht {' '.join(args)}",
        "runs": runs,
        "modules": len(medians),
        "total_us": int(statistics.median(totals)),
        "top": [
            {"module": name, "imported_by": parent, "self_us": own, "cumulative_us": cum}
            for name, (parent, own, cum) in top
        ],
        "loaded": {name: name in medians for name in NOTABLE},
    }


@contextmanager
def live_node(python: str, env: dict[str, str]) -> Iterator[str]:
    """A ``udpdht node --port 0`` child (memory only) for the client command; its address."""
    proc = subprocess.Popen(
        [python, "-m", "udpdht", "node", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        addr = None
        deadline = time.monotonic() + NODE_START_TIMEOUT
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while addr is None:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise RuntimeError("the node did not start: " + "".join(seen))
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError("the node exited: " + "".join(seen))
                seen.append(line)
                m = re.search(r"listening on (\S+)", line)
                addr = m.group(1) if m else None
        yield addr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(NODE_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def commands(python: str, script: str | None, node: str | None) -> list[Command]:
    out = [
        Command("python -c pass", [python, "-c", "pass"]),
        Command("python -c 'import asyncio'", [python, "-c", "import asyncio"]),
    ]
    launchers = [("python -m udpdht", [python, "-m", "udpdht"])]
    if script is not None:
        launchers.append(("udpdht (script)", [script]))
    for args in (["--help"], ["get", "--help"], ["node", "--help"]):
        for name, head in launchers:
            out.append(Command(f"{name} {' '.join(args)}", [*head, *args]))
    if node is not None:
        for name, head in launchers:
            out.append(Command(f"{name} status --node", [*head, "status", "--node", node]))
    return out


def measure(args: argparse.Namespace, env: dict[str, str], node: str | None) -> dict[str, Any]:
    python = args.python
    script_path = Path(python).parent / "udpdht"
    script = str(script_path) if script_path.exists() else None
    if script is None:
        progress(f"no console script at {script_path}: measuring python -m udpdht only")
    cmds = commands(python, script, node)
    samples: dict[str, list[Sample]] = {c.label: [] for c in cmds}
    for rnd in range(args.rounds + 1):
        for c in cmds:
            code, sample = spawn_and_wait(c.argv, env)
            if code != c.expect:
                raise RuntimeError(f"{c.label}: exit status {code}, expected {c.expect}")
            if rnd:  # round 0 warms up
                samples[c.label].append(sample)
        progress(f"round {rnd}/{args.rounds}" + (" (warm-up)" if rnd == 0 else ""))
    results = {label: summary(s) for label, s in samples.items()}
    floor = results["python -c pass"]
    for r in results.values():
        r["ratio_to_floor"] = round(r["wall_ms"][1] / floor["wall_ms"][1], 2)
        r["cpu_ratio_to_floor"] = round(r["cpu_ms"][1] / floor["cpu_ms"][1], 2)
        r["over_floor_ms"] = round(r["wall_ms"][1] - floor["wall_ms"][1], 1)
    return {"commands": results, "script": script}


def udpdht_location(python: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [python, "-c", "import udpdht; print(udpdht.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    return done.stdout.strip()


def table(result: dict[str, Any]) -> str:
    rows = result["commands"]
    width = max(len(k) for k in rows)
    lines = [
        f"{'command':{width}}  {'wall ms min / median / max':>28}  {'CPU ms median':>13}  "
        f"{'× floor':>7}  {'+ms':>6}"
    ]
    for label, r in rows.items():
        w = " / ".join(f"{v:.1f}" for v in r["wall_ms"])
        lines.append(
            f"{label:{width}}  {w:>28}  {r['cpu_ms'][1]:>13.1f}  "
            f"{r['ratio_to_floor']:>7.2f}  {r['over_floor_ms']:>6.1f}"
        )
    runs = next(iter(rows.values()))["runs"]
    lines.append(f"({runs} rounds; × floor and +ms: median wall against python -c pass)")
    for key in ("help", "status"):
        prof = result["imports"].get(key)
        if prof is None:
            continue
        lines.append("")
        lines.append(
            f"{prof['command']}: {prof['modules']} modules, "
            f"{prof['total_us'] / 1000:.1f} ms importing (median of {prof['runs']})"
        )
        if key == "help":
            lines.append(
                f"  {'module (by cumulative time)':34}  {'imported by':34}  "
                f"{'self µs':>8}  {'cum. µs':>8}"
            )
            for t in prof["top"]:
                lines.append(
                    f"  {t['module']:34}  {t['imported_by'] or '-':34}  "
                    f"{t['self_us']:>8}  {t['cumulative_us']:>8}"
                )
        loaded = [n for n, v in prof["loaded"].items() if v]
        absent = [n for n, v in prof["loaded"].items() if not v]
        lines.append(f"  loaded:     {', '.join(loaded) or '-'}")
        lines.append(f"  not loaded: {', '.join(absent) or '-'}")
    lines.append("")
    lines.append(f"udpdht from {result['udpdht']}")
    lines.append(result["verdict"])
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="3 rounds, 1 import-time run")
    p.add_argument("--rounds", type=positive, help="timed rounds (10; --quick: 3)")
    p.add_argument("--importtime-runs", type=positive, help="-X importtime runs (3; --quick: 1)")
    p.add_argument("--no-node", action="store_true", help="skip the client command (no node)")
    p.add_argument("--python", default=sys.executable, help="the interpreter to measure (this one)")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 10)
    args.importtime_runs = args.importtime_runs or (1 if args.quick else 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = tempfile.mkdtemp(prefix="udpdht-startup-")
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {
        "PYTHONPATH": path,
        "XDG_DATA_HOME": data,
        "PYTHONPYCACHEPREFIX": os.path.join(data, "pycache"),
    }
    try:
        where = udpdht_location(args.python, env)
        progress(f"udpdht from {where}")
        spawn_and_wait([args.python, "-m", "udpdht", "--help"], env)  # writes its byte code
        imports = {"help": import_profile(args.python, ["--help"], env, args.importtime_runs)}
        if args.no_node:
            result = measure(args, env, None)
        else:
            with live_node(args.python, env) as node:
                progress(f"node at {node}")
                result = measure(args, env, node)
                imports["status"] = import_profile(
                    args.python, ["status", "--node", node], env, args.importtime_runs
                )
    finally:
        shutil.rmtree(data, ignore_errors=True)
    helps = {k: v for k, v in result["commands"].items() if k.endswith(" --help")}
    label = (
        "udpdht (script) --help" if "udpdht (script) --help" in helps else "python -m udpdht --help"
    )
    median = helps[label]["wall_ms"][1]
    verdict = f"{label}: median {median:.1f} ms, target <= {TARGET_MS:.0f} ms: " + (
        "met" if median <= TARGET_MS else "NOT met"
    )
    out = {
        "bench": "startup",
        "python": args.python,
        "udpdht": where,
        "rounds": args.rounds,
        **result,
        "imports": imports,
        "client_against_silent_node": "skipped: the CLI has no timeout option",
        "target_ms": TARGET_MS,
        "verdict": verdict,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(table(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
