"""bench/rpc.py measures RpcEndpoint beside a bare echo, and in two processes both sides' CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_script

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


def test_a_pure_run_that_misses_the_target_names_the_compiled_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A user's `make bench` on the default (pure) build reads why its ratio is below 0.9."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # (for its `from common import`)
    bench = load_script(monkeypatch, "_bench_rpc", ROOT / "bench" / "rpc.py")
    settings = bench.Settings(
        calls=100, warmup=10, warmup_s=0.0, rounds=1, concurrency=1, payload=0, modes=(bench.TWO,)
    )
    row = bench.Row("asyncio", bench.TWO)
    row.echo.append(bench.Sample(per_s=1000.0, p50_us=100.0, p99_us=200.0, cpu_us=10.0))
    row.rpc.append(bench.Sample(per_s=780.0, p50_us=120.0, p99_us=250.0, cpu_us=13.0))
    for built, hinted in (("pure", True), ("compiled", False)):
        monkeypatch.setattr(bench, "build", lambda built=built: built)
        text = bench.table([row], ["asyncio"], settings)
        assert "NOT met: ratio 0.78 < 0.9" in text
        assert ("make compiled" in text) is hinted
