"""bench/ops.py runs the libraries and the limit in child processes, side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # about 6 s, mostly udpdht's first set waiting for a fresh ring
def test_ops_bench_smoke_reports_the_libraries_the_limit_and_their_ratios() -> None:
    pytest.importorskip("kademlia.network")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "bench" / "ops.py"), "--server-only", "--json"]
    cmd += ["--sizes", "3", "--rounds", "1", "--ops", "5", "--idle", "0", "--deadline", "60"]
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=120, check=True)
    result = json.loads(done.stdout)
    runs = result["server"]["runs"]
    assert sorted(r["lib"] for r in runs) == ["kademlia", "limit", "udpdht"]
    assert not [r for r in runs if "error" in r]
    for r in runs:
        assert r["set"]["ops"] == r["get"]["ops"] == r["cget"]["ops"] == 5
        assert r["set"]["correct"] == 5  # both libraries store in a ring of three
    per = result["server"]["summary"]["3"]
    assert set(per["ratio"]) == set(per["limit_ratio"]) == {"set", "get", "cget"}
    assert per["limit"]["get"]["correct"] == 5  # the limit stores and reads back too
    assert per["failed_runs"] == 0
