"""bench/rpc.py measures RpcEndpoint beside a bare echo, and in two processes both sides' CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_rpc_bench_two_process_reports_the_servers_cpu_too() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "bench" / "rpc.py"), "--quick", "--json"]
    cmd += ["--mode", "two", "--no-uvloop", "--warmup-s", "0.2", "--calls", "2000"]
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=120, check=True)
    (row,) = json.loads(done.stdout)["results"]
    assert (row["loop"], row["mode"]) == ("asyncio", "two-process")
    assert row["rpc_per_s"] > 0 and row["echo_per_s"] > 0 and row["rpc_timeouts"] == 0
    # Each side's CPU a call: the client's (this process) and the server child's, for both.
    for kind in ("rpc", "echo"):
        assert 0 < row[f"{kind}_cpu_us_per_call"] < 10_000
        assert 0 < row[f"{kind}_server_cpu_us_per_call"] < 10_000
