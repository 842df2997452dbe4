"""Cost of the storage engines' operations on a large store: new indexed ways vs the old ways.

What is measured
    A :class:`~udpdht.storage.DiskStore` in a temporary directory (deleted afterwards), filled
    two ways:

    * ``big``: 20,000 records with 60,000-byte values, about 1.2 GB (``--quick``: 2,000);
    * ``small``: 1,000,000 records with 100-byte values (``--quick``: 100,000);

    and, for the same ``small`` contents, a :class:`~udpdht.storage.MemoryStore`. Every second
    record has an expiry far in the future, so the expiry index is not empty yet nothing is due.

    For each store, each operation runs ``--runs`` times (5) and the median wall time is kept:

    * ``open``: open the file, i.e. migrate check + the one pass that rebuilds the bucket state;
    * ``stats``, ``count_range 1/16``, ``digest 1/16``, ``digest ring`` (``lo == hi``);
    * ``scan_versions page`` and ``scan_records page``: the first page (60,000-byte budget)
      of the whole ring; ``... 10 pages``: ten consecutive pages, each resumed at the cursor;
    * ``outside 200``: 200 records outside a 1/16 range (the strays of a node);
    * ``purge (none due)``.

    The old ways, what ``replication.py`` does before this change, run on the same store in the
    same process: ``old status`` iterates ``records()`` summing live sizes (``counts()``),
    ``old digest 1/16`` and ``old digest ring`` sort ``(key, version)`` of ``in_range`` and
    hash them (``_digest``), ``old scan page`` sorts the live records of ``in_range`` by key
    and cuts the first page (``_rpc_scan``).

    Memory: the process's RSS (``VmRSS``) and its peak (``VmHWM``) after the new operations
    of each store, and the peak again after the old ways, which is where the old cost shows.

Usage::

    python bench/store_engine.py            # human table (several minutes: it writes 1.3 GB)
    python bench/store_engine.py --json     # one JSON object on stdout, progress on stderr
    python bench/store_engine.py --quick    # smoke test: a tenth of the data
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

try:
    import udpdht  # noqa: F401  (installed editable in the venv; else run from a checkout)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import HelpFormatter, positive, progress  # bench/common.py

from udpdht import ids
from udpdht.storage import DiskStore, MemoryStore, Record, Store, Version

RING = ids.RING
BUDGET = 60_000
NOW = 1_700_000_000.0
FAR = 4_000_000_000.0  # an expiry nothing reaches during the run
WRITER = b"\x42" * 20
BATCH = 500  # records per put_many (one transaction) while filling


def proc_status(field: str) -> int:
    """A ``/proc/self/status`` memory figure in bytes (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory() -> dict[str, float]:
    return {"rss_mb": proc_status("VmRSS") / 1e6, "peak_rss_mb": proc_status("VmHWM") / 1e6}


def make_records(count: int, value_size: int) -> Iterator[Record]:
    rng = random.Random(7)
    for i in range(count):
        value = rng.randbytes(value_size)
        yield Record(
            b"key-%08d" % i, value, Version(1_700_000_000_000 + i, WRITER), FAR if i % 2 else None
        )


def fill(store: Store, count: int, value_size: int) -> float:
    start = time.perf_counter()
    batch: list[Record] = []
    for record in make_records(count, value_size):
        batch.append(record)
        if len(batch) == BATCH:
            store.put_many(batch)
            batch.clear()
    store.put_many(batch)
    return time.perf_counter() - start


def median_time(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pages(store: Store, n: int, values: bool) -> int:
    """``n`` consecutive pages of the whole ring; returns the items read."""
    after = None
    items = 0
    for _ in range(n):
        if values:
            page, after = store.scan_records(0, 0, after, budget=BUDGET)
        else:
            versions, after = store.scan_versions(0, 0, after, budget=BUDGET)
            page = versions  # type: ignore[assignment]
        items += len(page)
        if after is None:
            break
    return items


# --- the old ways, as replication.py has them before this change -------------------------------


def old_status(store: Store) -> tuple[int, int]:
    count = size = 0
    for record in store.records():
        if record.is_tombstone or not record.live(NOW):
            continue
        count += 1
        size += record.size()
    return count, size


def old_digest(store: Store, lo: int, hi: int) -> tuple[bytes, int]:
    items = sorted((r.key, r.version) for r in store.in_range(lo, hi) if r.live(NOW))
    h = hashlib.sha1()
    for key, version in items:
        h.update(len(key).to_bytes(2, "big") + key)
        h.update(version.stamp.to_bytes(8, "big") + version.writer)
    return h.digest(), len(items)


def old_scan_page(store: Store, lo: int, hi: int) -> int:
    records = sorted((r for r in store.in_range(lo, hi) if r.live(NOW)), key=lambda r: r.key)
    size = n = 0
    for record in records:
        size += record.size() + 64
        if n and size > BUDGET:
            break
        n += 1
    return n


# --- one store -----------------------------------------------------------------------------------


def measure_ops(store: Store, runs: int, with_old: bool) -> tuple[dict[str, float], dict[str, Any]]:
    lo = ids.hash_key(b"somewhere on the ring")
    hi = (lo + RING // 16) % RING
    ops: dict[str, Callable[[], object]] = {
        "stats": store.stats,
        "count_range 1/16": lambda: store.count_range(lo, hi),
        "digest 1/16": lambda: store.digest(lo, hi),
        "digest ring": lambda: store.digest(lo, lo),
        "scan_versions page": lambda: store.scan_versions(lo, lo, budget=BUDGET),
        "scan_records page": lambda: store.scan_records(lo, lo, budget=BUDGET),
        "scan_versions 10 pages": lambda: pages(store, 10, values=False),
        "scan_records 10 pages": lambda: pages(store, 10, values=True),
        "outside 200": lambda: store.outside(lo, hi, 200),
        "purge (none due)": lambda: store.purge(NOW),
    }
    times = {}
    for name, fn in ops.items():
        times[name] = median_time(fn, runs)
        progress(f"  {name:24} {times[name] * 1e3:10.3f} ms")
    extra: dict[str, Any] = {"after_new": memory()}
    if with_old:
        # the same records either way (nothing here is expired or a tombstone)
        assert store.digest(lo, hi)[1] == old_digest(store, lo, hi)[1]
        old_ops: dict[str, Callable[[], object]] = {
            "old status": lambda: old_status(store),
            "old digest 1/16": lambda: old_digest(store, lo, hi),
            "old digest ring": lambda: old_digest(store, lo, lo),
            "old scan page": lambda: old_scan_page(store, lo, lo),
        }
        for name, fn in old_ops.items():
            times[name] = median_time(fn, runs)
            progress(f"  {name:24} {times[name] * 1e3:10.3f} ms")
        extra["after_old"] = memory()
    return times, extra


def bench_disk(
    root: Path, name: str, count: int, value_size: int, runs: int, with_old: bool
) -> dict[str, Any]:
    directory = root / name
    progress(f"{name}: filling a DiskStore with {count:,} x {value_size:,} B ...")
    store = DiskStore(directory)
    fill_s = fill(store, count, value_size)
    store.close()
    file_mb = sum(p.stat().st_size for p in directory.iterdir()) / 1e6
    progress(f"  filled in {fill_s:.1f} s, {file_mb:,.0f} MB on disk")

    def reopen() -> None:
        DiskStore(directory).close()

    open_s = median_time(reopen, runs)
    progress(f"  {'open (rebuild)':24} {open_s * 1e3:10.3f} ms")
    with closing(DiskStore(directory)) as opened:
        times, extra = measure_ops(opened, runs, with_old)
    shutil.rmtree(directory)
    return {
        "engine": "disk",
        "records": count,
        "value_bytes": value_size,
        "file_mb": round(file_mb, 1),
        "fill_s": round(fill_s, 2),
        "ms": {"open (rebuild)": open_s * 1e3, **{k: v * 1e3 for k, v in times.items()}},
        **extra,
    }


def bench_memory(count: int, value_size: int, runs: int) -> dict[str, Any]:
    progress(f"memory: filling a MemoryStore with {count:,} x {value_size:,} B ...")
    before = memory()["rss_mb"]
    store = MemoryStore()
    fill_s = fill(store, count, value_size)
    progress(f"  filled in {fill_s:.1f} s ({fill_s / count * 1e6:.1f} us per put)")
    times, extra = measure_ops(store, runs, with_old=False)
    return {
        "engine": "memory",
        "records": count,
        "value_bytes": value_size,
        "fill_s": round(fill_s, 2),
        "rss_growth_mb": round(extra["after_new"]["rss_mb"] - before, 1),
        "ms": {k: v * 1e3 for k, v in times.items()},
        **extra,
    }


def table(results: list[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(k for r in results for k in r["ms"]))
    heads = [f"{r['engine']} {r['records']:,}x{r['value_bytes']:,}B" for r in results]
    width = max(24, *(len(h) for h in heads))
    lines = [f"{'median ms':24}" + "".join(f" {h:>{width}}" for h in heads)]
    lines.append("-" * len(lines[0]))
    for name in names:
        cells = [r["ms"].get(name) for r in results]
        lines.append(
            f"{name:24}"
            + "".join(f" {'-':>{width}}" if c is None else f" {c:>{width}.3f}" for c in cells)
        )
    lines.append("")
    for r, head in zip(results, heads, strict=True):
        mem = r["after_new"]
        line = f"{head}: fill {r['fill_s']} s"
        if "file_mb" in r:
            line += f", file {r['file_mb']:,} MB"
        line += f"; RSS after new ops {mem['rss_mb']:.0f} MB (peak {mem['peak_rss_mb']:.0f} MB)"
        if "after_old" in r:
            line += f"; peak after old ways {r['after_old']['peak_rss_mb']:.0f} MB"
        lines.append(line)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter, description="Storage engine operations on a large store."
    )
    parser.add_argument("--runs", type=positive, default=5, help="runs per operation (median)")
    parser.add_argument("--quick", action="store_true", help="smoke test: a tenth of the data")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument("--no-old", action="store_true", help="skip the old ways (slow)")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary store")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    scale = 10 if opts.quick else 1
    big, small = 20_000 // scale, 1_000_000 // scale
    root = Path(tempfile.mkdtemp(prefix="udpdht-bench-store-", dir=opts.dir))
    try:
        results = [
            bench_disk(root, "big", big, 60_000, opts.runs, not opts.no_old),
            bench_disk(root, "small", small, 100, opts.runs, not opts.no_old),
            bench_memory(small, 100, opts.runs),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    settings = {
        "runs": opts.runs,
        "quick": opts.quick,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "sqlite": __import__("sqlite3").sqlite_version,
    }
    if opts.json:
        print(json.dumps({"settings": settings, "results": results}))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
