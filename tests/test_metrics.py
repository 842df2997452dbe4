"""Prometheus metrics (`udpdht node --metrics H:P`): what a scrape shows, and its errors."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import ENV, metrics_url, node_process, udpdht, wait_until
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from udpdht import Client, Node, __version__, ids
from udpdht.errors import Unavailable
from udpdht.lookup import Lookup
from udpdht.metrics import RPC_COUNTERS, NodeMetrics
from udpdht.replication import StoreConfig
from udpdht.rpc import RpcStats

DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


class Scrape:
    """One scrape's samples, by name and labels, and each family's help text."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.help: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.help[family.name] = family.documentation
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def __getitem__(self, name: str) -> float:
        return self.samples[(name, ())]

    def labelled(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {labels: v for (n, labels), v in self.samples.items() if n == name}


def fetch(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        return Scrape(reply.read().decode())


async def test_node_process_serves_metrics_that_move_with_use() -> None:
    with node_process("--metrics", "127.0.0.1:0") as node:
        url = metrics_url(node)
        before = await asyncio.to_thread(fetch, url)
        async with Client(node.addr) as client:
            for i in range(5):
                await client.put(f"key-{i}", {"n": i})
            assert await client.get("key-3") == {"n": 3}
            await client.lookup("key-4")
        # A scrape's answer is given again for MetricsServer.CACHE_S (1 s): the next one moves.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        after = await asyncio.to_thread(fetch, url)
        while after["udpdht_rpc_datagrams_received_total"] < 7 and loop.time() < deadline:
            await asyncio.sleep(0.2)
            after = await asyncio.to_thread(fetch, url)

        info = after.labelled("udpdht_node_info")
        assert info == {
            (
                ("address", node.addr_text),
                ("id", ids.to_hex(node.id)),
                ("version", __version__),
            ): 1.0
        }
        for name in ("datagrams_received", "datagrams_sent", "received_bytes", "sent_bytes"):
            metric = f"udpdht_rpc_{name}_total"
            assert after[metric] > before[metric], metric
        assert after["udpdht_rpc_datagrams_received_total"] >= 7  # 5 puts, a get, a lookup
        # A ring of one: every record is its own, nothing is replicated.
        assert after.labelled("udpdht_store_records") == {
            (("role", "primary"),): 5.0,
            (("role", "replica"),): 0.0,
        }
        assert after["udpdht_store_bytes"] > 0
        assert after["udpdht_leafset_successors"] == 0
        assert after["udpdht_leafset_wanted"] == 8  # the default leafset of 16
        assert after["udpdht_predecessor_known"] == 0
        assert after["udpdht_settled"] == 1 and after["udpdht_isolated"] == 0
        # Each put and get looks its key up, and so does the client's lookup.
        ran = after["udpdht_lookup_hops_count"] - before["udpdht_lookup_hops_count"]
        assert ran >= 7
        assert after["udpdht_lookup_duration_seconds_count"] >= ran
        assert after["udpdht_lookup_failures_total"] == 0
        for family, text in after.help.items():
            if family.startswith("udpdht_"):
                assert text, f"{family} has no help text"
        assert "process_cpu_seconds" in after.help  # the process's own metrics come along

        # Anything but a GET of /metrics: 404 or 405, not a 500 and a traceback in the log
        # (an operator's trial: every HEAD or POST was, as wsgiref refused a bare "405").
        for method, path, status in (("HEAD", "/metrics", 405), ("POST", "/metrics", 405)):
            ask = urllib.request.Request(url.replace("/metrics", path), method=method)
            with pytest.raises(urllib.error.HTTPError) as refused:
                await asyncio.to_thread(urllib.request.urlopen, ask, timeout=10)
            assert refused.value.code == status
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(urllib.request.urlopen, url + "x", timeout=10)
        assert refused.value.code == 404

        node.signal(signal.SIGTERM)
        code, output = node.wait()
        assert code == 0 and "Traceback" not in output, output


async def test_collector_reports_an_in_process_node() -> None:
    a, b = Node(port=0), Node(port=0)
    await a.start()
    await b.start()
    metrics = NodeMetrics(a, asyncio.get_running_loop(), process=False)
    try:
        await b.join(a.addr)
        await wait_until(lambda: a.leafset.predecessor is not None and bool(a.leafset.successors))
        await a.put("colour", "blue")
        assert await a.get("colour") == "blue"
        found = await a.lookup("colour")

        # On the loop's thread the collector reads the node at once: the numbers are status's.
        scrape = Scrape(generate_latest(metrics.registry).decode())
        status = a.status()
        for field, (name, _) in RPC_COUNTERS.items():
            assert scrape[f"udpdht_rpc_{name}_total"] == status["rpc"][field], field
        assert scrape["udpdht_leafset_successors"] == len(status["successors"]) == 1
        assert scrape["udpdht_leafset_predecessors"] == 1
        assert scrape["udpdht_predecessor_known"] == 1
        records = scrape.labelled("udpdht_store_records")
        assert sum(records.values()) == status["store"]["primary"] + status["store"]["replica"]
        assert sum(records.values()) == 1  # a's copy (b holds the other)
        assert scrape["udpdht_repair_rounds_total"] == status["repair"]["rounds"]
        # The put's and the lookup (a get whose holders our leafset names runs none).
        assert scrape["udpdht_lookup_hops_count"] >= 2
        assert scrape["udpdht_lookup_hops_sum"] >= len(found.hops)

        # From another thread (the HTTP server's) it asks the loop for a snapshot.
        text = await asyncio.to_thread(generate_latest, metrics.registry)
        other = Scrape(text.decode())
        assert other["udpdht_leafset_successors"] == 1
        assert other["udpdht_rpc_datagrams_sent_total"] >= scrape["udpdht_rpc_datagrams_sent_total"]
        assert other["udpdht_metrics_stale_scrapes_total"] == 0
    finally:
        metrics.close()
        await b.stop()
        await a.stop()
    assert metrics.lookups.observe not in a.lookup_observers


async def test_a_lost_data_dir_is_a_gauge_to_alert_on(tmp_path: Path) -> None:
    # Status and the log said so, but a Prometheus user had nothing to alert on (a review).
    node = Node(port=0, data_dir=tmp_path / "data")
    await node.start()
    metrics = NodeMetrics(node, asyncio.get_running_loop(), process=False)
    try:
        assert Scrape(generate_latest(metrics.registry).decode())["udpdht_data_dir_lost"] == 0
        (tmp_path / "data" / "store.sqlite3").unlink()
        node._check_data_dir()  # (each store round does)
        assert Scrape(generate_latest(metrics.registry).decode())["udpdht_data_dir_lost"] == 1
    finally:
        metrics.close()
        await node.stop()


async def test_a_scrape_while_the_loop_is_blocked_reports_the_last_snapshot() -> None:
    async with Node(port=0) as node:
        metrics = NodeMetrics(node, asyncio.get_running_loop(), process=False)
        metrics.collector.timeout = 0.05
        first = Scrape(generate_latest(metrics.registry).decode())  # on the loop: fresh
        got: list[bytes] = []
        scraper = threading.Thread(target=lambda: got.append(generate_latest(metrics.registry)))
        scraper.start()
        scraper.join(timeout=10.0)  # blocks the loop until the scrape has given up on it
        assert not scraper.is_alive()
        stale = Scrape(got[0].decode())
        assert stale["udpdht_metrics_stale_scrapes_total"] == 1
        assert stale["udpdht_uptime_seconds"] == first["udpdht_uptime_seconds"]
        metrics.close()


async def test_lookup_observers_see_successes_and_failures() -> None:
    async with Node(port=0) as node:
        metrics = NodeMetrics(node, asyncio.get_running_loop(), process=False)
        seen: list[tuple[Lookup | None, float]] = []

        def broken(found: Lookup | None, seconds: float) -> None:
            raise RuntimeError("an observer with a bug")

        node.lookup_observers += [broken, lambda found, s: seen.append((found, s))]
        await node.lookup("anything")  # alone: its own tables answer
        node.member = True  # a member with no neighbours: it has lost its ring
        with pytest.raises(Unavailable):
            await node.lookup("anything")
        assert [found is None for found, _ in seen] == [False, True]
        assert all(seconds >= 0 for _, seconds in seen)
        scrape = Scrape(generate_latest(metrics.registry).decode())
        assert scrape["udpdht_lookup_hops_count"] == 1
        assert scrape["udpdht_lookup_duration_seconds_count"] == 2
        assert scrape["udpdht_lookup_failures_total"] == 1
        assert scrape["udpdht_isolated"] == 1
        metrics.close()


def test_every_rpc_counter_has_a_metric_name_and_help() -> None:
    assert set(RPC_COUNTERS) == {f.name for f in dataclasses.fields(RpcStats)}
    names = [name for name, _ in RPC_COUNTERS.values()]
    assert len(set(names)) == len(names)


def test_metrics_without_prometheus_client_is_one_line_error() -> None:
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None  # as if it were not installed\n"
        "from udpdht.cli import main\n"
        "sys.exit(main(['node', '--port', '0', '--metrics', '127.0.0.1:0']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=ENV
    )
    assert done.returncode == 2
    assert done.stderr == (
        "udpdht: error: --metrics needs the prometheus_client package: "
        "pip install 'udpdht[metrics]'\n"
    )
    assert "listening" not in done.stdout  # refused before the node started


def test_metrics_on_a_taken_address_is_one_line_error(tmp_path: Path) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    data = tmp_path / "node"
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = udpdht(
            "node", "--port", "0", "--metrics", f"127.0.0.1:{port}", "--data-dir", str(data)
        )
    finally:
        taken.close()
    assert done.returncode == 1  # (the host's state: a service manager tries again)
    # Only the error: not "loaded 0 records" before it (the store was opened first), nor
    # "listening on" (a user's trial); and the node never ran, so it made no data dir.
    assert done.stderr == (
        f"udpdht: error: cannot serve metrics on 127.0.0.1:{port}: address already in use\n"
    )
    assert done.stdout == ""
    assert not data.exists()


def test_metrics_address_must_be_host_and_port() -> None:
    done = udpdht("node", "--port", "0", "--metrics", "9100")
    assert done.returncode == 2
    assert "argument --metrics: bad address '9100'" in done.stderr


async def test_docs_list_every_metric_a_node_exports() -> None:
    """docs/metrics.md names each udpdht_ family a scrape shows (quota included), and no
    other."""
    documented = set(re.findall(r"`(udpdht_[a-z_]+)", DOCS.read_text()))
    async with Node(port=0, store_config=StoreConfig(max_store_bytes=1 << 20)) as node:
        metrics = NodeMetrics(node, asyncio.get_running_loop(), process=False)
        scrape = Scrape(generate_latest(metrics.registry).decode())
        metrics.close()
    exported = {
        name
        for name in scrape.help
        if name.startswith("udpdht_") and not name.endswith("_created")  # (when it began)
    }
    # The parser names counters without _total; the docs use the full sample name.
    samples = {n for n, _ in scrape.samples if n.startswith("udpdht_")}
    shown = {n for n in samples if n.endswith("_total")} | {
        n for n in exported if f"{n}_total" not in samples
    }
    assert shown == documented
