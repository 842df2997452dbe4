"""``udpdht node`` and ``udpdht cluster``: the commands that run nodes until a signal.

Apart from :mod:`udpdht.cli` so that the other commands, and ``--help``, do not load what a
node needs (the event loop, the store and sqlite3, logging): :mod:`udpdht.cli` imports this
module only to run one of these two commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from . import ids
from .admin import COOKIE_FILE, default_data_dir, read_cookie, write_cookie
from .cli import UsageError
from .errors import DhtError
from .net import Address, format_addr, tune_gc
from .net import run as run_loop
from .node import LOCAL_RING, Node, NodeConfig
from .replication import StoreConfig

if TYPE_CHECKING:
    from .metrics import MetricsServer

log = logging.getLogger("udpdht")


class _LogFormat(logging.Formatter):
    """``12:03:04.123 1a2b3c4d INFO  message``: time, node id prefix, level; colour on a tty."""

    COLOURS = {"DEBUG": "\033[2m", "INFO": "", "WARNING": "\033[33m", "ERROR": "\033[31m"}

    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour
        self.node = "--------"

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = (
            f"{stamp}.{int(record.msecs):03d} {getattr(record, 'node', self.node)} "
            f"{record.levelname:<7} "
            f"{record.getMessage()}"
        )
        if record.exc_info and record.levelno >= logging.ERROR:
            line += "\n" + self.formatException(record.exc_info)
        if self.colour:
            start = self.COLOURS.get(record.levelname, "\033[31m")
            line = f"{start}{line}\033[0m" if start else line
        return line


def _setup_logging(level: str) -> _LogFormat:
    handler = logging.StreamHandler(sys.stderr)
    fmt = _LogFormat(colour=sys.stderr.isatty() and not os.environ.get("NO_COLOR"))
    handler.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    return fmt


def _refuse_wildcard(host: str) -> None:
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return
    if wildcard:
        raise UsageError(
            f"--host {host} listens on every address, but peers need the one address to "
            "reach this node at (its id is SHA-1 of it): give that address to --host"
        )


def _why(exc: OSError) -> str:
    """'address already in use', not uvloop's 'could not bind to local_addr'."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


LEAVE_DEADLINE = 10.0  # seconds a graceful leave may take before the node just stops
SETTLE_DEADLINE = 15.0  # seconds `udpdht cluster` waits for its ring to settle before "ready"


async def _run_node(args: argparse.Namespace, fmt: _LogFormat) -> int:
    metrics = _metrics_module() if args.metrics is not None else None
    if args.replicas > args.leafset // 2 + 1:
        raise UsageError(f"--replicas {args.replicas} needs --leafset {2 * (args.replicas - 1)}")
    _refuse_wildcard(args.host)
    data_dir = args.data_dir
    if data_dir is None and args.port != 0:
        data_dir = default_data_dir(args.port)
    node = Node(
        host=args.host,
        port=args.port,
        data_dir=data_dir,
        config=NodeConfig(leafset=args.leafset),
        store_config=StoreConfig(replicas=args.replicas, max_store_bytes=args.max_store_bytes),
        bootstrap=args.bootstrap,
    )
    if args.new_ring:
        node.memory.forget()
    try:
        await node.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {_why(exc)}") from None
    fmt.node = ids.short(node.id)
    cookie_path = _publish_cookie(node)
    print(f"udpdht node {ids.to_hex(node.id)} listening on {format_addr(node.addr)}", flush=True)
    print(f"admin cookie: {cookie_path}", flush=True)
    exporter = await _serve_metrics(metrics, node, args.metrics) if metrics else None
    tune_gc()  # what start-up made stays; collections get rarer (see net.tune_gc)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():  # the second Ctrl-C: no more waiting
            print("udpdht: stopping now, without hand-off", file=sys.stderr, flush=True)
            os._exit(130)
        log.info("leaving the ring (send the signal again to stop at once)")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        if args.bootstrap:
            try:
                await _join_any(node, args.bootstrap)
            except BaseException:
                await node.stop()
                raise
        # Run until a signal, or until an admin makes the node leave or shut down.
        finished = loop.create_task(node.finished.wait())
        signalled = loop.create_task(stop.wait())
        await asyncio.wait([finished, signalled], return_when=asyncio.FIRST_COMPLETED)
        finished.cancel()
        signalled.cancel()
        if not node.finished.is_set():
            try:
                await asyncio.wait_for(node.leave(), LEAVE_DEADLINE)
            except TimeoutError:
                log.warning("leave took over %.0f s; stopping without finishing it", LEAVE_DEADLINE)
        log.info("stopped")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await node.stop()
        _unpublish_cookie(node)
        if exporter is not None:
            await asyncio.to_thread(exporter.close)
    return 0


def _metrics_module() -> ModuleType:
    """udpdht.metrics, or a UsageError when prometheus_client is not installed."""
    try:
        from . import metrics
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != "prometheus_client":
            raise
        raise UsageError(
            "--metrics needs the prometheus_client package: pip install 'udpdht[metrics]'"
        ) from None
    return metrics


async def _serve_metrics(metrics: ModuleType, node: Node, addr: Address) -> MetricsServer:
    """Serve the node's metrics at ``addr`` and say where; a UsageError (after stopping the
    node) when the address cannot be bound."""
    try:
        exporter: MetricsServer = metrics.serve(node, addr)
    except OSError as exc:
        await node.stop()
        _unpublish_cookie(node)
        why = exc.strerror if isinstance(exc, socket.gaierror) else _why(exc)
        raise UsageError(f"cannot serve metrics on {format_addr(addr)}: {why}") from None
    print(f"metrics: {exporter.url}", flush=True)
    return exporter


def _publish_cookie(node: Node) -> Path:
    """Where local tools find the node's cookie: its data dir, else the default per port
    (for a memory node; :func:`_unpublish_cookie` removes it again at exit)."""
    if node.data_dir is not None:
        return node.data_dir / COOKIE_FILE
    assert node.cookie is not None
    path = default_data_dir(node.addr[1]) / COOKIE_FILE
    write_cookie(path, node.cookie)
    return path


def _unpublish_cookie(node: Node) -> None:
    if node.data_dir is not None or node.addr[1] == 0:
        return
    path = default_data_dir(node.addr[1]) / COOKIE_FILE
    with contextlib.suppress(OSError):
        if read_cookie(path) == node.cookie:  # not one a later node on this port wrote
            path.unlink()
            path.parent.rmdir()  # only if nothing else is kept there


async def _join_any(node: Node, bootstraps: list[Address]) -> None:
    """Join through the first bootstrap that answers; DhtError naming them all if none does."""
    errors = []
    for addr in bootstraps:
        try:
            await node.join(addr)
            return
        except DhtError as exc:
            errors.append(f"{format_addr(addr)}: {exc}")
    raise DhtError("could not join the ring: " + "; ".join(errors))


async def _run_cluster(args: argparse.Namespace) -> int:
    nodes: list[Node] = []
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            print("udpdht: stopping now, without hand-off", file=sys.stderr, flush=True)
            os._exit(130)
        stop.set()

    _refuse_wildcard(args.host)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        for i in range(args.count):
            port = args.base_port + i if args.base_port else 0
            node = Node(host=args.host, port=port, config=LOCAL_RING)
            try:
                await node.start()
            except OSError as exc:
                raise UsageError(f"cannot listen on {args.host}:{port}: {_why(exc)}") from None
            nodes.append(node)
            if i:
                await node.join(nodes[0].addr)
            cookie = _publish_cookie(node)
            print(f"node {i}: {format_addr(node.addr)}  id {ids.short(node.id)}  cookie {cookie}")
        # Until its nodes are settled, a ring answers a get of an absent key Unavailable
        # (replication.settled): wait for that (a couple of seconds), within reason.
        deadline = loop.time() + SETTLE_DEADLINE
        while not stop.is_set() and loop.time() < deadline:
            if all(n.replicator.settled() for n in nodes):
                break
            await asyncio.sleep(0.1)
        print(f"{args.count} nodes in one ring; Ctrl-C leaves gracefully", flush=True)
        await stop.wait()
        log.info("leaving the ring")
        try:
            await asyncio.wait_for(
                asyncio.gather(*(n.leave() for n in nodes), return_exceptions=True),
                LEAVE_DEADLINE,
            )
        except TimeoutError:
            log.warning("leaving took over %.0f s; stopping", LEAVE_DEADLINE)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await asyncio.gather(*(n.stop() for n in nodes))
        for n in nodes:
            _unpublish_cookie(n)
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    fmt = _setup_logging(args.log_level)
    return run_loop(_run_node(args, fmt))


def cmd_cluster(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    return run_loop(_run_cluster(args))
