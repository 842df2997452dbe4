"""Prometheus metrics of a node, served over HTTP (``udpdht node --metrics HOST:PORT``).

Needs the ``prometheus_client`` package (``pip install 'udpdht[metrics]'``); :mod:`udpdht.cli_node`
imports this module only when ``--metrics`` is given. Nothing here keeps counts of its own:

* :class:`NodeCollector` reads what the node already counts (its endpoint's
  :class:`~udpdht.rpc.RpcStats`, the store's sizes, the leafset, the replicator's repair
  counters) at each scrape. The HTTP server answers on a thread of its own while the node lives
  on its event loop's thread, so the collector asks the loop for a snapshot
  (:func:`snapshot`, plain numbers) and waits for it a moment; it never touches the store or
  the tables from the server's thread.
* :class:`LookupMetrics` is fed by the node's lookup observer hook
  (:attr:`Node.lookup_observers <udpdht.node.Node.lookup_observers>`): a histogram of the hops
  and one of the seconds of each lookup the node runs, and a counter of the failed ones.

Every name starts ``udpdht_``; docs/metrics.md lists them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from . import __version__, ids
from .net import Address, format_addr
from .ratelimit import TokenBucket

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from .lookup import Lookup
    from .node import Node

log = logging.getLogger("udpdht.metrics")

#: Each RpcStats counter: its metric name (``udpdht_rpc_<name>_total``) and help text. A
#: counter added to RpcStats later is exported too, under its own name (tests check this table
#: covers them all).
RPC_COUNTERS: dict[str, tuple[str, str]] = {
    "sent": ("datagrams_sent", "Datagrams sent: requests, resends and replies."),
    "received": ("datagrams_received", "Datagrams received that decoded."),
    "retries": ("retries", "Requests sent again after a timeout."),
    "timeouts": ("timeouts", "Calls that failed with no answer (RpcTimeout)."),
    "dropped_malformed": ("dropped_malformed", "Datagrams dropped because they did not decode."),
    "duplicates": (
        "duplicates",
        "Retried requests answered from the reply cache (or dropped while running).",
    ),
    "unexpected_replies": (
        "unexpected_replies",
        "Replies for no pending call, or from the wrong address.",
    ),
    "errors_sent": ("errors_sent", "Error replies sent."),
    "handler_failures": ("handler_failures", "Handlers that raised an unexpected exception."),
    "rate_limited": (
        "rate_limited",
        "Datagrams (all but answers) dropped by the per-source and overall rate limits.",
    ),
    "busy": ("busy", "Requests answered BUSY because the handlers were all running."),
    "tokens_sent": (
        "tokens_sent",
        "Retries with a token sent: in place of an answer, or of a dropped request.",
    ),
    "resends_refused": (
        "resends_refused",
        "Retransmitted requests not answered again (the resend limit reached).",
    ),
    "working_sent": (
        "working_sent",
        "Retransmitted requests answered WORKING: their handler was still running.",
    ),
    "send_errors": (
        "send_errors",
        "Datagrams not sent: a bad destination or an error from the socket.",
    ),
    "bytes_sent": ("sent_bytes", "Payload bytes of the datagrams sent (no UDP/IP headers)."),
    "bytes_received": (
        "received_bytes",
        "Payload bytes of the datagrams received that decoded.",
    ),
}

#: The replicator's repair counters (status ``repair``): metric name and help text.
REPAIR_COUNTERS: dict[str, tuple[str, str]] = {
    "rounds": ("repair_rounds", "Anti-entropy rounds finished."),
    "parts_compared": (
        "repair_parts_compared",
        "Range digests compared with a peer's (anti-entropy, early comparisons, hand-off).",
    ),
    "pushed": (
        "repair_records_pushed",
        "Records pushed to a peer that lacked them or held them older.",
    ),
    "pulled": (
        "repair_records_pulled",
        "Records pulled from a peer and applied (newer than what was held).",
    ),
    "moved": (
        "repair_records_moved",
        "Records no longer in this node's range moved to their holders and dropped here.",
    ),
    "sync_failures": (
        "repair_sync_failures",
        "Comparisons with a peer that failed (no answer, an error, nonsense).",
    ),
    "refused_full": (
        "repair_records_refused_full",
        "Records a peer lacked that it refused because its store is full, or that waited "
        "after such a refusal.",
    ),
    "comparisons_skipped": (
        "repair_comparisons_skipped",
        "Rounds that compared nothing: the last ones found every copy in sync, nothing changed.",
    ),
}

#: Lookup hop counts: a ring of n nodes takes about log2(n)/2 hops.
HOP_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 64)
#: Lookup seconds: a hop on a LAN takes a millisecond or less, a timeout a second or more.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True)
class Snapshot:
    """What a scrape reports of a node, read on its event loop's thread in one go."""

    id: str
    address: str
    uptime_s: float
    rpc: dict[str, int]
    store: dict[str, int]
    quota_bytes: int | None
    successors: int
    predecessors: int
    wanted: int  # L/2: successors wanted, and predecessors
    predecessor_known: bool
    fingers: int
    settled: bool
    isolated: bool
    data_dir_lost: bool
    calm_rounds: int
    peer_failures: int
    repair: dict[str, Any]
    writes_rate_limited: int
    writes_unchanged: int
    kad: dict[str, Any] | None  # KadService.status(); None with --no-kad


def snapshot(node: Node) -> Snapshot | None:
    """The node's numbers now; None when it is not running. Call it on the node's loop."""
    if not node.running:
        return None
    replicator = node.replicator
    ls = node.leafset
    return Snapshot(
        id=ids.to_hex(node.id),
        address=format_addr(node.addr),
        uptime_s=round(node.uptime(), 3),  # (not 1.7259999999987485)
        rpc=node.endpoint.stats.as_dict(),
        store=replicator.counts(),
        quota_bytes=replicator.config.max_store_bytes,
        successors=len(ls.successors),
        predecessors=len(ls.predecessors),
        wanted=ls.half,
        predecessor_known=ls.predecessor is not None,
        fingers=len(node.fingers.distinct()),
        settled=replicator.settled(),
        isolated=node.isolated,
        data_dir_lost=node.data_dir_lost,
        calm_rounds=node.maintenance.calm,
        peer_failures=node.maintenance.failures,
        repair=replicator.repair_stats(),
        writes_rate_limited=replicator.writes_rate_limited,
        writes_unchanged=replicator.writes_unchanged,
        kad=node.kad.status() if node.kad is not None else None,
    )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"udpdht_{name}", doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"udpdht_{name}", doc, value=value)


class NodeCollector(Collector):
    """The node's own counters and sizes, read at each scrape (see the module's doc)."""

    def __init__(
        self, node: Node, loop: asyncio.AbstractEventLoop, *, timeout: float = 2.0
    ) -> None:
        self.node = node
        self.loop = loop
        self.timeout = timeout  # seconds a scrape waits for the loop before it reports the last
        self.stale = 0  # scrapes that got the last snapshot: the loop did not answer in time
        self._last: Snapshot | None = None

    def snapshot(self) -> Snapshot | None:
        """A snapshot taken on the node's loop: at once when called there, else by asking the
        loop and waiting up to ``timeout`` (then the last one, counted as stale)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._last = snapshot(self.node)
            return self._last
        result: concurrent.futures.Future[Snapshot | None] = concurrent.futures.Future()

        def take() -> None:
            if not result.set_running_or_notify_cancel():
                return  # the scrape gave up waiting
            try:
                result.set_result(snapshot(self.node))
            except Exception as exc:
                result.set_exception(exc)

        try:
            self.loop.call_soon_threadsafe(take)
        except RuntimeError:  # the loop is closed: the node is gone
            return None
        try:
            self._last = result.result(self.timeout)
        except concurrent.futures.TimeoutError:
            result.cancel()
            self.stale += 1
            log.warning("the node's loop did not answer a scrape within %.1f s", self.timeout)
        return self._last

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        yield _counter(
            "metrics_stale_scrapes",
            "Scrapes answered with the previous snapshot: the node's event loop was too busy.",
            self.stale,
        )
        if snap is None:
            return
        info = GaugeMetricFamily(
            "udpdht_node_info",
            "The node: its id (40 hex digits), the address it is known by, udpdht's version.",
            labels=["id", "address", "version"],
        )
        info.add_metric([snap.id, snap.address, __version__], 1)
        yield info
        yield _gauge("uptime_seconds", "Seconds since the node started.", snap.uptime_s)
        yield from self._rpc(snap)
        yield from self._store(snap)
        yield from self._ring(snap)
        yield from self._kad(snap)
        for field, (name, doc) in REPAIR_COUNTERS.items():
            yield _counter(name, doc, snap.repair.get(field, 0))
        yield _gauge(
            "repair_last_round_seconds",
            "The last anti-entropy round's wall time, calls' waits included.",
            snap.repair.get("last_round_ms", 0.0) / 1000,
        )
        yield _gauge(
            "repair_max_round_seconds",
            "The longest anti-entropy round's wall time since the node started.",
            snap.repair.get("max_round_ms", 0.0) / 1000,
        )

    @staticmethod
    def _rpc(snap: Snapshot) -> Iterator[Metric]:
        for field, value in snap.rpc.items():
            name, doc = RPC_COUNTERS.get(field, (field, f"RpcStats.{field}."))
            yield _counter(f"rpc_{name}", doc, value)

    @staticmethod
    def _store(snap: Snapshot) -> Iterator[Metric]:
        records = GaugeMetricFamily(
            "udpdht_store_records",
            "Records held, tombstones and expired ones not yet purged included: role primary "
            "(key in (predecessor, self]) or replica (the others).",
            labels=["role"],
        )
        records.add_metric(["primary"], snap.store["primary"])
        records.add_metric(["replica"], snap.store["replica"])
        yield records
        yield _gauge(
            "store_tombstones", "Tombstones among the records held.", snap.store["tombstones"]
        )
        yield _gauge("store_bytes", "Key and value bytes of the records held.", snap.store["bytes"])
        if snap.quota_bytes is not None:
            yield _gauge(
                "store_quota_bytes", "The store's quota (--max-store-bytes).", snap.quota_bytes
            )
            yield _gauge(
                "store_quota_used_bytes",
                "What the quota counts of the store: key and value bytes, and the engine's "
                "cost per record.",
                snap.store["quota_used"],
            )
        yield _counter(
            "store_records_refused_full",
            "Records refused or dropped for the quota: writes, copies for other nodes, repair's "
            "pulls. A replica that refuses leaves keys short of a copy.",
            snap.store.get("refused", 0),
        )
        yield _gauge(
            "store_full",
            "1 while the store refused a record for its quota within the last minute, or holds "
            "more than its quota, else 0.",
            int(snap.store.get("full", 0)),
        )
        yield _counter(
            "store_writes_rate_limited",
            "Writes refused RateLimited: their sender's write budget was spent.",
            snap.writes_rate_limited,
        )
        yield _counter(
            "store_writes_unchanged",
            "Writes that found the same value at the primary and wrote nothing (kademlia's "
            "store of a value already there).",
            snap.writes_unchanged,
        )

    @staticmethod
    def _kad(snap: Snapshot) -> Iterator[Metric]:
        kad = snap.kad
        if kad is None:
            return
        requests = CounterMetricFamily(
            "udpdht_kad_requests",
            "Requests of the kademlia protocol received, by method (well-formed ones).",
            labels=["method"],
        )
        for method, count in kad["requests"].items():
            requests.add_metric([method], count)
        yield requests
        refused = CounterMetricFamily(
            "udpdht_kad_refused",
            "Kademlia requests left unanswered, by reason: malformed arguments, a value "
            "kademlia cannot hold, a write budget spent, a store the ring did not take, too "
            "many of one source at once.",
            labels=["reason"],
        )
        for reason in ("malformed", "values_refused", "writes_rate_limited", "stores_failed"):
            refused.add_metric([reason], kad[reason])
        refused.add_metric(["busy"], kad["busy"])
        yield refused
        endpoint, guard = kad["endpoint"], kad["guard"]
        yield _counter(
            "kad_dropped_malformed",
            "Datagrams of the kademlia protocol that did not decode.",
            endpoint["dropped_malformed"],
        )
        yield _counter(
            "kad_address_probes",
            "Pings sent to prove an address before a large kademlia answer goes to it.",
            guard["probes"],
        )
        yield _counter(
            "kad_answers_dropped_unproven",
            "Large kademlia answers not sent: the address did not answer our ping.",
            guard["dropped"],
        )

    @staticmethod
    def _ring(snap: Snapshot) -> Iterator[Metric]:
        yield _gauge("leafset_successors", "Successors known.", snap.successors)
        yield _gauge("leafset_predecessors", "Predecessors known.", snap.predecessors)
        yield _gauge(
            "leafset_wanted",
            "Successors wanted, and predecessors: L/2 (a ring of fewer than L/2+1 nodes has "
            "fewer).",
            snap.wanted,
        )
        yield _gauge(
            "predecessor_known", "1 when the node knows its predecessor.", snap.predecessor_known
        )
        yield _gauge("fingers", "Distinct nodes in the finger table.", snap.fingers)
        yield _gauge(
            "settled",
            "1 when the node's 'no value' for a key of its range counts (status 'settled').",
            snap.settled,
        )
        yield _gauge(
            "isolated",
            "1 while the node has lost contact with its ring and is rejoining.",
            snap.isolated,
        )
        yield _gauge(
            "data_dir_lost",
            "1 while the node's data dir, or the store's file in it, is found removed or moved "
            "(status data_dir_lost; its log says what to do).",
            snap.data_dir_lost,
        )
        yield _gauge(
            "calm_rounds",
            "Maintenance rounds since the leafset last changed or a peer failed.",
            snap.calm_rounds,
        )
        yield _counter(
            "peer_failures",
            "Calls to peers that failed: no answer, or an answer that made no sense (BUSY is no "
            "failure).",
            snap.peer_failures,
        )


class LookupMetrics:
    """Histograms of the hops and seconds of the node's lookups, and a counter of failures;
    :meth:`observe` is the node's lookup observer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.hops = Histogram(
            "udpdht_lookup_hops",
            "Hops of the lookups this node ran (0: its own tables knew the owner).",
            buckets=HOP_BUCKETS,
            registry=registry,
        )
        self.seconds = Histogram(
            "udpdht_lookup_duration_seconds",
            "Seconds the lookups this node ran took, failed ones included.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.failures = Counter(
            "udpdht_lookup_failures",
            "Lookups this node ran that failed (no live route to the key).",
            registry=registry,
        )

    def observe(self, found: Lookup | None, seconds: float) -> None:
        self.seconds.observe(seconds)
        if found is None:
            self.failures.inc()
        else:
            self.hops.observe(len(found.hops))


class NodeMetrics:
    """A node's metrics in a registry of their own: the collector and the lookup histograms
    (with ``process``, also the process's CPU, memory and GC, and Python's version)."""

    def __init__(self, node: Node, loop: asyncio.AbstractEventLoop, *, process: bool) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = NodeCollector(node, loop)
        self.registry.register(self.collector)
        self.lookups = LookupMetrics(self.registry)
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        node.lookup_observers.append(self.lookups.observe)

    def close(self) -> None:
        """Stop feeding the lookup histograms."""
        if self.lookups.observe in self.node.lookup_observers:
            self.node.lookup_observers.remove(self.lookups.observe)


class _Handler(WSGIRequestHandler):
    """One connection: silent (no access log on stderr), and given ``timeout`` seconds in all
    to send its request line and headers, then closed. (A connection that sends nothing held
    a thread for good; one that sent a byte every 2.5 s, under a timeout per read, held its
    slot for good: an attack on real nodes.)"""

    timeout = 3.0  # (socketserver also sets it on the connection's socket, for each read)

    def setup(self) -> None:
        super().setup()
        self._cutoff = threading.Timer(self.timeout, self._cut)
        self._cutoff.daemon = True
        self._cutoff.start()

    def _cut(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def parse_request(self) -> bool:
        parsed = super().parse_request()  # (reads the headers too)
        self._cutoff.cancel()
        return parsed

    def finish(self) -> None:
        self._cutoff.cancel()
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingMixIn, WSGIServer):
    """prometheus_client's server, a thread per connection, with at most MAX_CONNECTIONS at
    once: past that a connection is closed at once. 3,000 connections that sent half a
    request each held 3,000 threads (and 200 MB), then made 3,000 scrapes once closed; the node
    took 172 % of a core for 90 s and its peers evicted it (an attack on real nodes)."""

    daemon_threads = True
    MAX_CONNECTIONS = 8
    request_queue_size = 64  # (the listen backlog: 5 dropped bursts of connections for 1 s)
    #: Connections served a second, on average (a burst of twice that): past it, closed at
    #: once. A scraper asks every few seconds; 16 in a loop, 288 scrapes a second, took most
    #: of a core in these threads, with the node's loop waiting on the GIL.
    RATE = 20.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(self.MAX_CONNECTIONS)
        self._pace = TokenBucket(2 * self.RATE, time.monotonic())  # (this thread's alone)
        self.refused = 0  # connections closed at once: too many open, or too many lately
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        paced = self._pace.take(self.RATE, 2 * self.RATE, time.monotonic())
        if not paced or not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # (starts its thread)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection that timed out or broke: not a traceback on stderr (socketserver's
        # default), 17 lines for each silent connection, 54 lines a second for anyone.
        log.debug("metrics connection from %s failed", client_address, exc_info=True)


def _cached(app: WSGIApplication, max_age: float) -> WSGIApplication:
    """``app``, whose answer to a request is given again to the same request for ``max_age``
    seconds: scrapes at any rate cost the node's loop one snapshot a second at most (16
    scrapers in a loop, 288 scrapes a second, took 92 % of a core and slowed its pings 160
    times). One request at a time computes; the others wait for it and take its answer."""
    lock = threading.Lock()
    answers: dict[tuple[bool, bool], tuple[float, str, list[tuple[str, str]], bytes]] = {}

    def cached(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") != "GET":
            # (With a reason phrase: wsgiref refused a bare "405", and every HEAD or POST
            # was a 500 and a traceback in the node's log; an operator's trial.)
            if environ.get("PATH_INFO") != "/metrics":
                status, headers = "404 Not Found", [("Content-Type", "text/plain")]
            else:
                status = "405 Method Not Allowed"
                headers = [("Content-Type", "text/plain"), ("Allow", "GET")]
            start_response(status, headers)
            return [b"GET /metrics\n"]
        # One answer per format and encoding, whatever else the request says: a query string
        # or an Accept header made anew for each request missed the cache (591 snapshots a
        # second, 87 % of a core: an attack on real nodes).
        key = (
            "openmetrics" in environ.get("HTTP_ACCEPT", ""),
            "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""),
        )
        environ = {
            **environ,
            "QUERY_STRING": "",
            "HTTP_ACCEPT": "application/openmetrics-text" if key[0] else "text/plain",
            "HTTP_ACCEPT_ENCODING": "gzip" if key[1] else "",
        }
        with lock:
            answer = answers.get(key)
            if answer is None or time.monotonic() - answer[0] > max_age:
                said: list[Any] = []

                def keep(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
                    said[:] = [status, headers]
                    return lambda data: None

                body = b"".join(app(environ, keep))
                answer = answers[key] = (time.monotonic(), said[0], said[1], body)
        start_response(answer[1], answer[2])
        return [answer[3]]

    return cached


class MetricsServer:
    """A node's metrics served over HTTP at ``/metrics``: prometheus_client's exposition,
    on a server with a cap on connections and a read timeout (_Server), whose answers are
    reused for a second (_cached)."""

    CACHE_S = 1.0

    def __init__(self, metrics: NodeMetrics, httpd: WSGIServer, thread: threading.Thread) -> None:
        self.metrics = metrics
        self.httpd = httpd
        self.thread = thread
        host, port = httpd.server_address[:2]
        self.addr: Address = (str(host), int(port))

    @property
    def url(self) -> str:
        return f"http://{format_addr(self.addr)}/metrics"

    def close(self) -> None:
        """Stop serving (blocks up to half a second: run it off the loop)."""
        self.metrics.close()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5.0)


def serve(node: Node, addr: Address, *, process: bool = True) -> MetricsServer:
    """Serve ``node``'s metrics at ``http://addr/metrics`` (port 0: any free port; ``.addr``
    tells which). Call it on the node's loop. Raises OSError when the address cannot be
    bound."""
    metrics = NodeMetrics(node, asyncio.get_running_loop(), process=process)
    try:
        family = socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_STREAM)[0][0]

        class Server(_Server):
            address_family = family  # (IPv6 for an IPv6 address)

        app = _cached(make_wsgi_app(metrics.registry), MetricsServer.CACHE_S)
        httpd = make_server(addr[0], addr[1], app, Server, handler_class=_Handler)
        thread = threading.Thread(target=httpd.serve_forever, name="metrics", daemon=True)
        thread.start()
    except BaseException:
        metrics.close()
        raise
    return MetricsServer(metrics, httpd, thread)
