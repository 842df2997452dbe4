"""``udpdht node`` and ``udpdht cluster``: the commands that run nodes until a signal.

Apart from :mod:`udpdht.cli` so that the other commands, and ``--help``, do not load what a
node needs (the event loop, the store and sqlite3, logging): :mod:`udpdht.cli` imports this
module only to run one of these two commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from . import ids
from .admin import COOKIE_FILE, default_data_dir, read_cookie, write_cookie
from .cli import HostRefused, UsageError
from .cli_errors import joined_words
from .datadir import (
    ADDRESS_FILE,
    LOCK_FILE,
    RING_FILE,
    DataDirError,
    DataDirInUse,
    remembered_address,
)
from .errors import DhtError, RpcTimeout, StoreFull
from .net import Address, format_addr, resolve, route_from, tune_gc
from .net import run as run_loop
from .node import LOCAL_RING, Node, NodeConfig, OtherFamily
from .replication import StoreConfig
from .storage import DiskStore
from .text import plural

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


class _JsonFormat(logging.Formatter):
    """One JSON object per line, for log shippers: time (ISO 8601, UTC), level, node (its id
    prefix, null until known), logger, message, and exception (the traceback) when there is one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.node: str | None = None

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        out = {
            "time": stamp.replace("+00:00", "Z"),
            "level": record.levelname,
            "node": getattr(record, "node", self.node),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


Format = _LogFormat | _JsonFormat


def _setup_logging(level: str, style: str = "text") -> Format:
    handler = logging.StreamHandler(sys.stderr)
    fmt: Format
    if style == "json":
        fmt = _JsonFormat()
    else:
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
    """'address already in use', not uvloop's 'could not bind to local_addr (...)': uvloop's
    OSError has no errno, the one it was raised from has."""
    code = _errno(exc)
    if code:
        text = os.strerror(code)
        return text[:1].lower() + text[1:]
    return str(exc)


def _errno(exc: OSError) -> int | None:
    for error in (exc, exc.__cause__, exc.__context__):
        if isinstance(error, OSError) and error.errno:
            return error.errno
    return None


def _cannot_bind(what: str, exc: OSError) -> Exception:
    """The error that stops the command: "cannot <what>: <why>", exit status 1 when the host
    may yet allow it (HostRefused: the address in use, or not on any interface yet), else 2
    (a port below 1024, a family the host lacks: the settings)."""
    if isinstance(exc, socket.gaierror):  # (a name: "unknown error -2" before)
        return UsageError(f"cannot {what}: {exc.strerror}")
    message = f"cannot {what}: {_why(exc)}"
    if _errno(exc) in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
        return HostRefused(message)
    return UsageError(message)


LEAVE_DEADLINE = 10.0  # seconds a graceful leave may take before the node just stops
SETTLE_DEADLINE = 15.0  # seconds `udpdht cluster` waits for its ring to settle before "ready"


async def _advertised(
    args: argparse.Namespace, data_dir: Path | None
) -> tuple[Address | None, str | None]:
    """The address the node names itself by, when not the bound one, and why that one (for
    the log): --advertise; on a wildcard, the address the data dir remembers (unless
    --new-address), or the one this host sends from towards the first bootstrap; else a
    UsageError saying what to give."""
    if args.advertise is not None:
        host, port = args.advertise
        try:
            host = (await resolve((host, port)))[0]  # a name: the id is SHA-1 of its address
        except ValueError as exc:
            raise UsageError(f"--advertise: {exc}") from None
        return (host, port), None
    try:
        wildcard = ipaddress.ip_address(args.host).is_unspecified
    except ValueError:
        wildcard = False
    if not wildcard:
        return None, None
    # (Not with --new-address: the node moved, and its data dir remembers where it was. A
    # compose peer recreated on another address kept its old one, and its ring never listed
    # it: an operator's trial.)
    remembered = remembered_address(data_dir) if data_dir is not None else None
    if remembered is not None and remembered[1] in (args.port, 0) and not args.new_address:
        return remembered, "the address its data dir remembers"
    if args.bootstrap:
        target = args.bootstrap[0][0]
        host = route_from(v6=":" in target, target=target)
        if not ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(target).is_loopback:
            return (host, 0), f"the address this host sends from towards {target}"
        raise UsageError(
            f"this host has no route to the bootstrap {target}, so no address to advertise "
            "to it: check the network, or give --advertise HOST[:PORT]"
        )
    raise UsageError(
        f"--host {args.host} listens on every address, but peers need the one address to "
        "reach this node at (its id is SHA-1 of it): add --advertise HOST[:PORT]"
    )


def _warn_if_sent_from_elsewhere(node: Node, bootstraps: list[Address]) -> None:
    """A node bound to a wildcard sends from the address the kernel picks: when that is not
    the one it advertises, its peers refuse what it says of itself (a notify, a leave: its id
    is SHA-1 of the other address), while its calls are still answered: it may never take its
    place in the ring (a ring of two on loopback: not in 10 s), and its leave is taken for a
    crash."""
    bound = node.endpoint.addr[0]
    if not bootstraps or not ipaddress.ip_address(bound).is_unspecified:
        return
    target = bootstraps[0][0]
    if (":" in target) != (":" in node.addr[0]):
        return
    source = route_from(v6=":" in target, target=target)
    no_route = (
        ipaddress.ip_address(source).is_loopback and not ipaddress.ip_address(target).is_loopback
    )
    if source != node.addr[0] and not no_route:
        log.warning(
            "this host sends to %s from %s, not from the advertised %s: peers will refuse "
            "what this node says of itself (its id is SHA-1 of the advertised address), so it "
            "may never take its place in the ring; bind that address (--host %s) or "
            "advertise %s",
            target,
            source,
            node.addr[0],
            node.addr[0],
            source,
        )


def _announce(fmt: Format, text: str) -> None:
    """A start-up line on stdout: as it is, or with --log-format json as a log object."""
    if isinstance(fmt, _JsonFormat):
        text = json_line(text, logging.INFO, fmt)
    print(text, flush=True)


def json_line(text: str, level: int, fmt: _JsonFormat | None = None) -> str:
    """``text`` as a log object of ``level`` from the logger "udpdht" (--log-format json); by
    ``fmt``, else by the formatter the log has, which names the node once its id is known (the
    line that says why a node stopped said ``"node": null`` after its start-up lines had named
    it: a new user's trial)."""
    if fmt is None:
        used = (h.formatter for h in logging.getLogger().handlers)
        fmt = next((f for f in used if isinstance(f, _JsonFormat)), None) or _JsonFormat()
    fields = {"name": "udpdht", "msg": text, "levelno": level}
    record = logging.makeLogRecord({**fields, "levelname": logging.getLevelName(level)})
    return fmt.format(record)


async def _run_node(args: argparse.Namespace, fmt: Format) -> int:
    metrics = _metrics_module() if args.metrics is not None else None
    data_dir = args.data_dir
    if data_dir is None and args.port != 0:
        data_dir = default_data_dir(args.port)
    data_dir = Path(data_dir) if data_dir is not None else None
    advertise, why = await _advertised(args, data_dir)
    node = Node(
        host=args.host,
        port=args.port,
        data_dir=data_dir,
        config=NodeConfig(leafset=args.leafset, kad=not args.no_kad, ring=args.ring),
        store_config=StoreConfig(replicas=args.replicas, max_store_bytes=args.max_store_bytes),
        bootstrap=args.bootstrap,
        advertise=advertise,
        new_address=args.new_address,
    )
    if args.new_ring:
        node.memory.forget()
    # Before the node starts (it opens its data dir, loads its store and says so): a metrics
    # address that cannot be bound stops it with only the error said, and nothing written.
    # (Until the node runs, a scrape gets no node metrics: metrics.snapshot.)
    exporter = _serve_metrics(metrics, node, args.metrics) if metrics else None
    made = _missing_dirs(data_dir)
    there = _node_files(data_dir)  # (what was there before: a failed first join keeps it)
    try:
        await node.start()
    except (OSError, DataDirError, ValueError, StoreFull) as exc:
        if node.took_data_dir:
            # What this run wrote goes again, in a data dir that was there before too: a
            # damaged store refused, the address, cookie and lock stayed, and the dir then
            # refused a node on another port as "moved" (a new user's trial).
            _remove_written(data_dir, there)
        _remove_empty(made)  # a node that never ran leaves no data dir behind
        if exporter is not None:
            await asyncio.to_thread(exporter.close)
        if isinstance(exc, StoreFull):  # the host's state: exit 1, and a try later may work
            # (Its files stayed, the empty store's too; an operator's trial.)
            raise HostRefused(str(exc)) from None
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # (A write of its small files: no filename, and it read as "cannot listen on".)
            where = data_dir if data_dir is not None else "the data dir"
            raise HostRefused(f"the disk under {where} has no room") from None
        if isinstance(exc, OSError) and exc.filename is not None and data_dir is not None:
            # A file of the data dir, not the socket: "cannot listen on H:P: is a directory"
            # sent an operator after the port (a maintainer's review).
            raise UsageError(
                f"cannot use the data dir {data_dir}: {exc.filename}: {_why(exc)}"
            ) from None
        if isinstance(exc, OSError):
            raise _cannot_bind(f"listen on {args.host}:{args.port}", exc) from None
        if isinstance(exc, DataDirInUse) and args.data_dir is None:
            # The default data dir is per port: the clash is the port, which "give each node
            # its own --data-dir" sent a user past, to "address already in use" (a trial).
            who = f" (pid {exc.pid})" if exc.pid else ""
            raise UsageError(
                f"another node{who} runs on port {args.port} already: its data dir "
                f"{data_dir} is in use; give this one another --port"
            ) from None
        raise UsageError(str(exc)) from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():  # the second Ctrl-C: no more waiting
            if node.handed_off:
                text = (
                    "stopping now: the keys were handed over already; the neighbours learn "
                    "of the departure when they next ask"
                )
            else:
                text = "stopping now, without hand-off"
            # (As a log object under --log-format json, as every other line there.)
            if isinstance(fmt, _JsonFormat):
                text = json_line(text, logging.WARNING, fmt)
            else:
                text = f"udpdht: {text}"
            print(text, file=sys.stderr, flush=True)
            _unpublish_cookie(node)  # (os._exit runs no finally: a memory node's cookie stayed)
            os._exit(130)
        say_leaving()
        stop.set()

    said_leaving = False

    def say_leaving() -> None:
        """Say once that the node leaves, if it has a place in a ring to leave. (One that lost
        contact with its ring has none: it said "leaving the ring ... left the ring", a
        new-user trial of issue #11.)"""
        nonlocal said_leaving
        if not node.member or said_leaving:
            return
        said_leaving = True
        if node.isolated:
            log.info("stopping: it is rejoining its ring and has no neighbour yet to leave")
        else:
            log.info("leaving the ring (send the signal again to stop at once)")

    # From the moment the node runs, before it says so: a SIGTERM right after the "listening"
    # line (while start-up's collection ran) found no handler and killed it, exit 143, its
    # cookie left behind (a new-user trial of issue #11).
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        _announce_start(node, args, fmt, exporter, why)
        tune_gc()  # what start-up made stays; collections get rarer (see net.tune_gc)
        # (A node that remembers peers of its ring rejoins through them, and through the
        # bootstrap addresses when none of them answers: Maintenance._rejoin.)
        joins = bool(args.bootstrap) and not node.member
        if joins and not await _join_unless_stopped(
            node, args.bootstrap, stop, say_leaving, made, there
        ):
            print("udpdht: interrupted while joining the ring", file=sys.stderr)
            return 130
        # Run until a signal, or until an admin makes the node leave or shut down.
        finished = loop.create_task(node.finished.wait())
        signalled = loop.create_task(stop.wait())
        await asyncio.wait([finished, signalled], return_when=asyncio.FIRST_COMPLETED)
        finished.cancel()
        signalled.cancel()
        if not node.finished.is_set():
            try:
                if node.leave_begun:  # (an admin's, or its store's file deleted: let it end)
                    await asyncio.wait_for(node.finished.wait(), LEAVE_DEADLINE)
                else:
                    await asyncio.wait_for(node.leave(forget=False), LEAVE_DEADLINE)
            except TimeoutError:
                log.warning("leave took over %.0f s; stopping without finishing it", LEAVE_DEADLINE)
    finally:
        # The handlers stay until the node has stopped: closing its store can take a while
        # on a busy disk (the last checkpoint), and a second signal meanwhile must still end
        # it at once, as the README says (a new-user trial: it did not, under load).
        try:
            await node.stop()
            _unpublish_cookie(node)
            if exporter is not None:
                await asyncio.to_thread(exporter.close)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    if node.store_file_lost:
        log.warning(
            "stopped with its store's file %s lost: a start from %s begins empty",
            node.lost_path,
            data_dir,
        )
    elif node.data_dir_lost:
        log.warning("stopped with its data dir %s lost: a start from it begins empty", data_dir)
    log.info("stopped")  # (once it has: nothing of it runs after this line)
    # Status 2 when it left by itself (its store's file was deleted): an operator must act
    # (start it with --bootstrap); a service manager's restart on failure is not the answer.
    return 2 if node.left_because is not None else 0


def _announce_start(
    node: Node,
    args: argparse.Namespace,
    fmt: Format,
    exporter: MetricsServer | None,
    why: str | None,
) -> None:
    """The start-up lines: the node's id and address, where its data is, its cookie, the
    metrics address; and why it advertises what it does."""
    _say_if_a_new_ring_of_old_data(node, args)
    fmt.node = ids.short(node.id)
    cookie_path = _publish_cookie(node)
    bound = node.endpoint.addr
    also = f" (bound to {format_addr(bound)})" if bound != node.addr else ""
    listening = f"listening on {format_addr(node.addr)}{also}"
    _announce(fmt, f"udpdht node {ids.to_hex(node.id)} {listening}")
    kept = node.data_dir.resolve() if node.data_dir is not None else "memory only"
    _announce(fmt, f"data: {kept}")
    _announce(fmt, f"admin cookie: {cookie_path}")
    if why:
        log.info("advertising %s: %s (--advertise to choose)", format_addr(node.addr), why)
    if exporter is not None:
        _announce(fmt, f"metrics: {exporter.url}")
    _warn_if_sent_from_elsewhere(node, args.bootstrap)


async def _join_unless_stopped(
    node: Node,
    bootstrap: list[Address],
    stop: asyncio.Event,
    say_leaving: Callable[[], None],
    made: list[Path],
    there: set[str],
) -> bool:
    """Join through ``bootstrap`` unless a signal comes first: True once the node has a place
    in the ring; False when a signal stopped the join before it had one (the node is stopped
    and what it made is removed). A failed join stops it the same way and raises."""
    loop = asyncio.get_running_loop()
    joining = loop.create_task(_join_any(node, bootstrap))
    signalled = loop.create_task(stop.wait())
    try:
        await asyncio.wait([joining, signalled], return_when=asyncio.FIRST_COMPLETED)
        if not joining.done():  # Ctrl-C while joining
            joining.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await joining
            # It may have taken its place a moment before the signal (the join's last step,
            # telling its successor, was under way): then it leaves as after any signal,
            # handing back what it may have been handed.
            say_leaving()
            if not node.member:  # no ring to leave yet
                await _stop_unjoined(node, made, there)
                return False
        else:
            joining.result()  # the join's error, if it failed
    except BaseException:
        await _stop_unjoined(node, made, there)
        raise
    finally:
        signalled.cancel()
    return True


def _missing_dirs(path: Path | None) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing: list[Path] = []
    while path is not None and not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    return missing


#: The files a node keeps in its data dir.
_NODE_FILES = (
    LOCK_FILE,
    ADDRESS_FILE,
    RING_FILE,
    COOKIE_FILE,
    Node.PEERS_FILE,
    *(DiskStore.FILENAME + suffix for suffix in ("", "-wal", "-shm", "-journal")),
    # (Written first and renamed: a write that failed midway left one; a review.)
    *(name + ".tmp" for name in (ADDRESS_FILE, RING_FILE, COOKIE_FILE, Node.PEERS_FILE)),
)


def _node_files(data_dir: Path | None) -> set[str]:
    """Which of a node's files ``data_dir`` holds now."""
    if data_dir is None:
        return set()
    return {name for name in _NODE_FILES if (data_dir / name).exists()}


async def _stop_unjoined(node: Node, made: list[Path], there: set[str]) -> None:
    """Stop a node whose join failed or was interrupted. If it took no record, what this run
    wrote in its data dir goes again (``there``: the files that were there before), and the
    dirs it made: as after a failed start, a node that never ran leaves nothing behind. (A
    new-user trial: a join through a wrong address left an empty store, an address and a
    cookie, and the data dir then refused a node on another port as "moved".)"""
    data_dir = node.data_dir
    unused = not node.member and node.replicator.store.stats().count == 0
    await node.stop()
    if not unused:
        return
    _remove_written(data_dir, there)
    _remove_empty(made)


def _remove_written(data_dir: Path | None, there: set[str]) -> None:
    """Remove the node's files in ``data_dir`` that were not there before (``there``)."""
    if data_dir is None:
        return
    for name in set(_NODE_FILES) - there:
        with contextlib.suppress(OSError):
            (data_dir / name).unlink(missing_ok=True)


def _remove_empty(made: list[Path]) -> None:
    """Remove what a failed start created of ``made``: the lock file, then the folders, if
    nothing else is in them."""
    for path in made:
        with contextlib.suppress(OSError):
            if path == made[0]:
                (path / LOCK_FILE).unlink(missing_ok=True)
            path.rmdir()


def _say_if_a_new_ring_of_old_data(node: Node, args: argparse.Namespace) -> None:
    """A node that remembers no ring (it left one, or --new-ring) starts a ring of its own
    even with records on disk: say so, since the ring it left may well still be running."""
    if node.member or args.bootstrap or node.data_dir is None:
        return
    store = node.status()["store"]
    held = int(store["primary"]) + int(store["replica"])
    if not held:
        return
    why = (
        "--new-ring"
        if args.new_ring
        else "it remembers no ring: it left its ring, or never had one"
    )
    node.log.log(  # (the node's own logger: the line names the node)
        logging.INFO if args.new_ring else logging.WARNING,
        "starting a new ring of one with the %s its data dir holds (%s); --bootstrap H:P "
        "joins a running ring instead",
        plural(held, "record"),
        why,
    )


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


def _serve_metrics(metrics: ModuleType, node: Node, addr: Address) -> MetricsServer:
    """Serve the node's metrics at ``addr`` (before the node starts); the error that stops the
    command when the address cannot be bound (_cannot_bind)."""
    try:
        exporter: MetricsServer = metrics.serve(node, addr)
    except OSError as exc:
        raise _cannot_bind(f"serve metrics on {format_addr(addr)}", exc) from None
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
            # (Not the udpdht dir above, even when this leaves it empty: another node starting
            # at the same moment may be making its own dir there.)


async def _join_any(node: Node, bootstraps: list[Address]) -> None:
    """Join through the first bootstrap that answers; DhtError naming them all if none does."""
    failures: list[tuple[Address, BaseException]] = []
    for given in bootstraps:
        try:
            # A name that does not resolve is one bootstrap that failed, not a mistake in the
            # settings (exit 2, which systemd does not restart): DNS may be down at boot, and
            # the next bootstrap may be an address (an operator's trial).
            addr = await resolve(given)
        except ValueError as exc:
            log.warning("bootstrap %s: %s", format_addr(given), exc)
            failures.append((given, exc))
            continue
        log.info("joining the ring through %s…", format_addr(addr))
        try:
            await node.join(addr)  # (Refused at once for a closed port)
            return
        except DhtError as exc:
            # (Only after silence: a closed port, or a udpdht node's refusal, says enough.)
            silent = RpcTimeout in (type(exc), type(getattr(exc, "cause", None)))
            wrong = await _kademlia_instead(addr) if silent else None
            failures.append((addr, wrong or exc))
    if all(isinstance(exc, OtherFamily) for _, exc in failures):
        # (Exit 2: a service manager restarting it every 5 s changes nothing; an operator's
        # trial.)
        raise UsageError("could not join the ring: " + joined_words(failures))
    raise DhtError("could not join the ring: " + joined_words(failures))


async def _kademlia_instead(addr: Address) -> DhtError | None:
    """Why a join through ``addr`` failed when a node of the ``kademlia`` package answers
    there (kad/crosscheck.py): a udpdht node joins udpdht nodes, the other way round works."""
    from .kad.crosscheck import speaks
    from .kad.target import NOT_A_RING

    if await speaks(addr) != "kademlia":
        return None
    return DhtError(f"{format_addr(addr)} answers kademlia's protocol, not udpdht's: {NOT_A_RING}")


async def _run_cluster(args: argparse.Namespace) -> int:
    nodes: list[Node] = []
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            print("udpdht: stopping now, without hand-off", file=sys.stderr, flush=True)
            for n in nodes:
                _unpublish_cookie(n)
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
                raise _cannot_bind(f"listen on {args.host}:{port}", exc) from None
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
    fmt = _setup_logging(args.log_level, args.log_format)
    for warning in args.warnings:
        log.warning("%s", warning)
    given = sorted({o for o in args.origins.values() if o not in ("default", "flag")})
    if given:
        log.info("settings from %s (udpdht node --print-config shows them)", ", ".join(given))
    return run_loop(_run_node(args, fmt))


def check_cluster_ports(base: int, count: int) -> None:
    """A UsageError unless ports ``base .. base+count-1`` are all unprivileged ports (0: free
    ports chosen by the system)."""
    if base == 0:
        return
    last = base + count - 1
    top = 65535 - count + 1
    if last > 65535:
        raise UsageError(
            f"--base-port {base} with {count} nodes needs ports up to {last}, past 65535: "
            f"give at most {top} (or 0 for free ports)"
        )
    if base < 1024:
        raise UsageError(
            f"--base-port {base}: ports below 1024 are reserved for system services: "
            f"give 1024..{top} (or 0 for free ports)"
        )


def cmd_cluster(args: argparse.Namespace) -> int:
    check_cluster_ports(args.base_port, args.count)
    _setup_logging(args.log_level)
    return run_loop(_run_cluster(args))
