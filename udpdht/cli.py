"""The ``udpdht`` command (also ``python -m udpdht``).

User mistakes (a malformed address, a node that does not answer) print one line to stderr and
exit non-zero; a traceback means a bug in udpdht.

Start-up is kept short (issue #11): the parser and ``--help`` need only this module, argparse
and :mod:`udpdht.errors`. A command imports what it uses when it runs: the client commands
:mod:`udpdht.client` (the event loop, msgpack, the RPC layer), ``node`` and ``cluster``
:mod:`udpdht.cli_node` (the node, its store and sqlite3, logging), ``shell`` prompt_toolkit.
tests/test_startup.py checks that ``--help`` loads none of them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from . import BUILD, __version__
from .config import CONFIG_ENV, NODE_ENV, ConfigError, Layers
from .errors import UNREADABLE, DhtError, KeyNotFound
from .kad.target import KAD_CLIENT_COMMANDS
from .limits import DEFAULT_PORT, parse_ttl
from .text import duration, plural, printable

if TYPE_CHECKING:
    from .client import Client
    from .lookup import Lookup
    from .net import Address

T = TypeVar("T")


class UsageError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


class HostRefused(Exception):
    """The host, not the settings, refused what the command needs: an address in use, or not
    (yet) on any interface. Printed as one line, exit status 1, after which a service manager
    tries again (after 2 it does not: docs/deploy.md). Both stopped a node for good under
    systemd: an address that DHCP had not given yet at boot, a port another program held a
    moment."""


#: What ``--version`` adds for each build (udpdht.BUILD; README "A compiled build").
BUILT = {
    "pure": " (pure Python)",
    "compiled": " (compiled)",
    "sources": " (the sources: its compiled build is not loaded)",
}


def _addr(text: str) -> Address:
    from .net import parse_addr  # net loads asyncio; with --help no address is parsed

    try:
        return parse_addr(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ring_addr(text: str) -> Address:
    """A udpdht node to join (``--bootstrap``): ``kad://`` is a kademlia network's, which a
    udpdht node cannot join (a user's trial: it read as a badly written IPv6 address)."""
    from .kad.target import NOT_A_RING, SCHEME

    if text.lower().startswith(SCHEME):
        raise argparse.ArgumentTypeError(f"{text!r} is a kademlia network's address: {NOT_A_RING}")
    return _addr(text)


def _target(text: str) -> Address:
    """``HOST:PORT``, or ``kad://HOST:PORT`` for a kademlia network (a ``KadAddr``)."""
    from .kad.target import parse_target

    try:
        return parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _listen_addr(text: str) -> Address:
    """``HOST:PORT`` to listen at; port 0: any free port."""
    from .net import parse_addr

    try:
        return parse_addr(text, allow_port_zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"port must be a number 0..65535, got {text!r}")
    return int(text)


def _advertise(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``V6`` or ``[V6]:PORT`` -> (host, port); port 0: the bound one."""
    if text.count(":") > 1 and not text.startswith("["):
        return text, 0  # a bare IPv6 address
    if ":" not in text:
        return text, 0
    from .net import parse_addr

    try:
        return parse_addr(text, allow_port_zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _leafset(text: str) -> int:
    from .limits import MAX_LEAFSET

    if not text.isdigit() or not 2 <= int(text) <= MAX_LEAFSET or int(text) % 2:
        raise argparse.ArgumentTypeError(
            f"leafset size must be an even number 2..{MAX_LEAFSET}, got {text}"
        )
    return int(text)


def _ring_name(text: str) -> str:
    from .ids import check_ring_name  # (light, but only a node's options need it)

    try:
        return check_ring_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _replicas(text: str) -> int:
    from .limits import MAX_REPLICAS

    if not text.isdigit() or not 1 <= int(text) <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(
            f"replicas must be a number 1..{MAX_REPLICAS}, and at most L/2+1 for --leafset L "
            f"(the default 16: 9), got {text}"
        )
    return int(text)


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _bytes(text: str) -> int:
    """``500000``, ``64M``, ``2G`` (powers of 1024; a trailing ``B`` or ``iB`` is fine)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (t[:-1], t[-1]) if t and t[-1] in _UNITS else (t, "")
    try:
        value = int(float(number) * _UNITS[unit])
    except (ValueError, OverflowError):  # not a number; inf
        raise argparse.ArgumentTypeError(
            f"expected a size like 500000, 64M or 2G, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"a size must be positive, got {text!r}")
    return value


def _ttl(text: str) -> float:
    try:
        return parse_ttl(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):  # NaN fails here too
        raise argparse.ArgumentTypeError(f"a timeout is a positive number of seconds, not {text}")
    return value


def _tries(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"tries must be a number 1..100, got {text}")
    return int(text)


_parsing: list[str] = []  # the words the command line is being parsed from (for hints)


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr (exit 2), not a usage block; words left
    over after a subcommand's arguments point to that subcommand's --help."""

    def error(self, message: str) -> NoReturn:
        if "arguments are required" in message:
            message += self._dash_hint()
        text = f"{message} (see {self.prog} --help)"
        if self.prog.split()[-1] == "node" and _json_log(None):
            import logging

            from .cli_node import json_line

            self.exit(2, json_line(text, logging.ERROR) + "\n")
        self.exit(2, f"udpdht: error: {text}\n")

    def _dash_hint(self) -> str:
        """A key that starts with '-' is taken for an option, and the command then lacks its
        KEY (a new user's trial: 'udpdht get -dash'): say how to pass it."""
        command = self.prog.split()[-1]  # (the words after it are this parser's)
        words = _parsing[_parsing.index(command) + 1 :] if command in _parsing else _parsing
        for word in words:
            if word == "--":
                break
            unknown = word.split("=", 1)[0] not in self._option_string_actions
            if word.startswith("-") and word != "-" and unknown:
                return (
                    f"; {word!r} was read as an option: put '--' before a key or value that "
                    "starts with '-'"
                )
        return ""

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        _parsing[:] = list(sys.argv[1:] if args is None else args)
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            sub = self._subcommand(getattr(parsed, "command", None))
            words = " ".join(extra)
            if sub is not None and sub.prog.endswith(" put"):
                sub.error(f"too many arguments: {words} (quote a VALUE that has spaces)")
            parser = sub or self
            parser.error(f"unrecognized arguments: {words}{_did_you_mean(parser, extra)}")
        return parsed

    def _subcommand(self, name: str | None) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and name is not None:
                found: argparse.ArgumentParser | None = action.choices.get(name)
                return found
        return None


class _Extend(argparse.Action):
    """``action="extend"`` that also starts from a default that is not a list (config.Layers
    puts its marker there, to tell a flag given from one not)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        items = getattr(namespace, self.dest, None)
        kept = list(items) if isinstance(items, list) else []
        setattr(namespace, self.dest, kept + list(values or ()))


def _did_you_mean(parser: argparse.ArgumentParser, extra: Sequence[str]) -> str:
    """A hint for the first of ``extra`` that looks like a mistyped option of ``parser``
    ("; did you mean --port?"), as a config file's or an environment variable's mistyped
    name gets one; "" when none looks like one."""
    import difflib  # (only when something went wrong: not on every start)

    options = [o for o in parser._option_string_actions if o.startswith("--")]
    for word in extra:
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            if name in options:  # (an option after '--', where every word is a key or value)
                return "; options go before '--'"
            # Compared without the "--" they all share: --bogus is not --host.
            close = difflib.get_close_matches(name[2:], [o[2:] for o in options], n=1)
            if close:
                return f"; did you mean --{close[0]}?"
    return ""


def _log_level(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="how much to log (default info)",
    )


def _client_command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A subcommand that talks to one node: ``NAME [--node H:P] [--timeout S] [--tries N]``."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    kad = "; kad://H:P: a node of a kademlia network" if name in KAD_CLIENT_COMMANDS else ""
    p.add_argument(
        "--node",
        type=_target,
        metavar="H:P",
        help=f"the node to ask (default: ${NODE_ENV}; one of the two is needed){kad}",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="give up after this long (default: when --tries sends got no answer, about 9 s)",
    )
    p.add_argument(
        "--tries",
        type=_tries,
        metavar="N",
        help="sends of each request before the node counts as not answering (default 6)",
    )
    return p


def _key(text: str) -> str:
    """A KEY argument: 1 to MAX_KEY bytes of UTF-8. A mistake on the command line (exit 2) for
    every key command alike, found before any node is asked."""
    from .limits import MAX_KEY

    if not text:
        raise argparse.ArgumentTypeError(f"KEY is empty; a key is 1 to {MAX_KEY} bytes")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("KEY is not valid UTF-8") from None
    if size > MAX_KEY:
        raise argparse.ArgumentTypeError(
            f"KEY is {size:,} bytes in UTF-8; a key is at most {MAX_KEY:,} bytes"
        )
    return text


def _key_command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A subcommand that asks one node about one key: ``NAME --node H:P KEY``."""
    p = _client_command(sub, name, help_text)
    p.add_argument(
        "key", type=_key, metavar="KEY", help="the key: a string (1 to 1024 bytes in UTF-8)"
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="udpdht", description="A peer-to-peer distributed hash table over UDP.")
    version = f"udpdht {__version__}{BUILT[BUILD]}"
    parser.add_argument("--version", action="version", version=version)
    # Not required: `udpdht` alone prints this help (main).
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_node(sub)
    _add_status(sub)
    _add_put(sub)
    _add_get(sub)
    _add_delete_and_lookup(sub)
    _add_cluster(sub)
    _add_shell(sub)
    # The client commands the shell also has (udpdht/cli_client.py; argparse only until run).
    from . import cli_client, cli_help

    cli_client.add_ring(sub)
    cli_client.add_ping(sub)
    cli_client.add_keys(sub)
    cli_client.add_leave(sub)
    cli_client.add_shutdown(sub)
    cli_help.document(sub)  # each command's description and examples
    return parser


def _add_node(sub: Any) -> None:
    """``udpdht node``: its options are also config-file keys and environment variables."""
    p = sub.add_parser("node", help="run a node until SIGINT/SIGTERM")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"UDP port (default {DEFAULT_PORT}; 0: any free port)",
    )
    p.add_argument(
        "--advertise",
        type=_advertise,
        metavar="HOST[:PORT]",
        help="the address peers reach this node at (its id is SHA-1 of it, and of --ring; "
        "default: --host "
        "and the bound port); needed with a wildcard --host (0.0.0.0, ::) unless --bootstrap "
        "is given (then: the address this host sends from towards it) or the data dir "
        "remembers one",
    )
    p.add_argument(
        "--bootstrap",
        type=_ring_addr,
        nargs="+",
        action=_Extend,  # (given twice: both lists, not the last alone, a new user's trial)
        default=[],
        metavar="H:P",
        help="join the ring through one of these nodes (tried in order; default none: a new "
        "ring, or the ring the data dir remembers)",
    )
    p.add_argument(
        "--leafset",
        type=_leafset,
        default=16,
        metavar="L",
        help="leafset size: L/2 successors and L/2 predecessors (even, 2..64; default 16)",
    )
    p.add_argument(
        "--ring",
        type=_ring_name,
        default="",
        metavar="NAME",
        help="the ring's name (default: none); every node of a ring has the same, and nodes of "
        "rings of other names never join it nor merge with it (a test ring beside a real one)",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the node keeps its values (default: $XDG_DATA_HOME/udpdht/PORT, else "
        "~/.local/share/udpdht/PORT; with --port 0, memory only)",
    )
    p.add_argument(
        "--replicas",
        type=_replicas,
        default=3,
        metavar="R",
        help="copies of each key, the primary included (1..L/2+1; default 3)",
    )
    p.add_argument(
        "--new-ring",
        action="store_true",
        help="forget the peers this data dir remembers and start a new ring, keeping the data "
        "(by default a restarted node rejoins its ring through them, and serves nothing until "
        "it has)",
    )
    p.add_argument(
        "--new-address",
        action="store_true",
        help="accept an advertised address other than the one the data dir remembers (the "
        "node moved: it gets a new id and rejoins under it)",
    )
    p.add_argument(
        "--no-kad",
        action="store_true",
        help="do not answer the kademlia package's protocol on this port (by default a node "
        "answers its ping, stun, find_node, find_value and store: docs/kademlia-interop.md)",
    )
    p.add_argument(
        "--max-store-bytes",
        type=_bytes,
        metavar="N",
        help="the store's quota: keys and values, and 80 bytes a record on disk (448 without "
        "--data-dir) (e.g. 512M, 20G; default: none); writes past it are refused ('store full')",
    )
    p.add_argument(
        "--metrics",
        type=_listen_addr,
        metavar="H:P",
        help="serve Prometheus metrics over HTTP at this address (default: none; needs the "
        "metrics extra)",
    )
    _log_level(p)
    p.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text for people; json: one object per line (time, level, node, logger, message) "
        "for log shippers (default text)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help=f"read settings from this TOML file: keys are the long options above without "
        f"the dashes (default: ${CONFIG_ENV}); each is also an environment variable "
        "(UDPDHT_PORT, UDPDHT_DATA_DIR, ...); flags win, then the environment, then the file",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the settings as a config file, saying where each came from, and exit",
    )
    p.set_defaults(func=cmd_node, layers=Layers(p, skip=("config", "print_config")))


def _add_status(sub: Any) -> None:
    """``udpdht status``."""
    p = _client_command(sub, "status", "show a node's state")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_status)


def _add_put(sub: Any) -> None:
    """``udpdht put``."""
    p = _key_command(sub, "put", "store a value under a key")
    p.add_argument(
        "value",
        metavar="VALUE",
        nargs="?",
        help="the value: a string, or JSON with --json; '-' reads it from stdin",
    )
    p.add_argument(
        "--file", metavar="FILE", help="read the value from FILE (its bytes, unless --text/--json)"
    )
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--json",
        action="store_true",
        help='the value is JSON: any msgpack type, bytes as {"$bytes": "<base64>"}',
    )
    kind.add_argument(
        "--text", action="store_true", help="stdin or FILE is UTF-8 text: store a string"
    )
    p.add_argument(
        "--ttl", type=_ttl, metavar="SECONDS", help="expire after this long (at most 366 days)"
    )
    p.set_defaults(func=cmd_put)


def _add_get(sub: Any) -> None:
    """``udpdht get``."""
    p = _key_command(sub, "get", "print the value of a key (exit 1 when absent)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument(
        "--json",
        action="store_true",
        help='print the value as JSON that put --json reads back (bytes: {"$bytes": ...})',
    )
    shape.add_argument(
        "--raw",
        action="store_true",
        help="write the value's bytes exactly (a string as UTF-8), no newline; other types "
        "are an error",
    )
    p.add_argument(
        "--meta",
        action="store_true",
        help="also show the type, version, writer and time left to live (with --raw: on stderr)",
    )
    p.set_defaults(func=cmd_get)


def _add_delete_and_lookup(sub: Any) -> None:
    """``udpdht delete`` and ``udpdht lookup``."""
    p = _key_command(sub, "delete", "delete a key (exit 1 when absent)")
    p.set_defaults(func=cmd_delete)

    p = _key_command(sub, "lookup", "find the node that owns a key, with the hop trace")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_lookup)


def _add_cluster(sub: Any) -> None:
    """``udpdht cluster``."""
    p = sub.add_parser("cluster", help="run N nodes in one process, forming one ring")
    p.add_argument("count", type=_cluster_size, metavar="N", help="how many nodes (1..500)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--base-port",
        type=_port,
        default=0,
        metavar="P",
        help="ports P, P+1, ..., P+N-1, all within 1024..65535 (default 0: free ports chosen "
        "by the system)",
    )
    _log_level(p)
    p.set_defaults(func=cmd_cluster)


def _add_shell(sub: Any) -> None:
    """``udpdht shell``."""
    p = sub.add_parser("shell", help="interactive shell (no --attach: an embedded local ring)")
    p.add_argument(
        "--attach",
        type=_target,
        metavar="H:P",
        help=f"a running node to attach to (default: ${NODE_ENV}, as the client commands' "
        "--node; neither: an embedded local ring); kad://H:P: a kademlia network",
    )
    p.add_argument(
        "--cookie", metavar="FILE", help="the node's cookie file or data dir, for admin commands"
    )
    p.set_defaults(func=cmd_shell)


# --- node (udpdht/cli_node.py) -----------------------------------------------------------------


def cmd_node(args: argparse.Namespace) -> int:
    if args.replicas > args.leafset // 2 + 1:
        raise UsageError(
            f"--replicas {args.replicas} needs --leafset {2 * (args.replicas - 1)} or more "
            f"(--leafset {args.leafset} holds {args.leafset // 2 + 1} replicas at most)"
        )
    if args.print_config:
        for warning in args.warnings:
            print(f"udpdht: warning: {warning}", file=sys.stderr)
        layers: Layers = args.layers
        shown, notes = as_run(args)
        print(layers.to_toml(shown, notes), end="")
        return 0
    from .cli_node import cmd_node as run  # the node, its store, the event loop: loaded here

    return run(args)


def as_run(args: argparse.Namespace) -> tuple[argparse.Namespace, dict[str, str]]:
    """The settings as the node would run with them (``--print-config``): the advertised port
    filled in, the default data dir spelt out; and a note for what is decided only at start."""
    import ipaddress

    from .admin import default_data_dir

    shown = argparse.Namespace(**vars(args))
    notes: dict[str, str] = {}
    if args.data_dir is None and args.port != 0:
        shown.data_dir = str(default_data_dir(args.port))
    elif args.data_dir is None:
        notes["data_dir"] = "memory only (--port 0 and no data dir)"
    try:
        wildcard = ipaddress.ip_address(args.host).is_unspecified
    except ValueError:
        wildcard = False
    if args.advertise is not None:
        host, port = args.advertise
        if port == 0 and args.port != 0:
            shown.advertise = (host, args.port)  # "the bound port" is --port
        elif port == 0:
            shown.advertise = host  # read back the same: the port bound at start
            notes["advertise"] = "with the port bound at start (--port 0)"
    elif wildcard:
        notes["advertise"] = (
            "peers are told the address the data dir remembers, or the one this host sends "
            "from towards the first bootstrap"
        )
    else:
        from .net import format_addr

        where = (
            f"{format_addr((args.host, args.port))} (--host, --port)"
            if args.port
            else f"{args.host}, on the port bound at start"
        )
        notes["advertise"] = f"peers reach it at {where}"
    return shown, notes


# --- client commands ---------------------------------------------------------------------------


def render_status(st: dict[str, Any]) -> str:
    from . import render  # as the shell words it: status reads the same in both

    return "\n".join(render.status_lines(st))


def _client(args: argparse.Namespace, cookie: bytes | None = None) -> Client:
    """The command's client of ``--node``. Commands print their answer once it is closed: it
    then ends the ``waiting for…`` line first (_Waiting.stop), so the answer starts clean."""
    import dataclasses

    from .client import CLIENT_RPC, Client  # the event loop, msgpack, the RPC layer: on demand

    class CommandClient(Client):
        async def close(self) -> None:
            waiting: _Waiting | None = getattr(args, "waiting", None)
            if waiting is not None:
                waiting.stop()
            await super().close()

    config = dataclasses.replace(CLIENT_RPC, tries=args.tries) if args.tries else None
    client = CommandClient(args.node, cookie=cookie, rpc_config=config)
    args.client = client  # for _Waiting: is the node busy with us, or silent?
    return client


def _node_from_env() -> Address:
    """The client commands' --node when none is given: $UDPDHT_NODE."""
    text = os.environ.get(NODE_ENV, "").strip()
    if not text:
        raise UsageError(f"--node H:P is required (or set {NODE_ENV})")
    try:
        return _target(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{NODE_ENV}: {exc}") from None


async def _within(args: argparse.Namespace, coro: Coroutine[Any, Any, int]) -> int:
    """``coro``, given up after ``--timeout`` seconds with one line naming the node; on a
    terminal, a wait of over a second says what it waits for (``_waiting``)."""
    import asyncio

    from .net import format_addr

    shown = format_addr(args.node)
    waiting = args.waiting = _Waiting(shown, args) if sys.stderr.isatty() else None
    try:
        if args.timeout is None:
            return await _checked(args, coro)
        deadline = asyncio.timeout(args.timeout)
        try:
            async with deadline:
                return await _checked(args, coro)
        except TimeoutError:
            if not deadline.expired():
                raise
            client = getattr(args, "client", None)
            if client is not None and client.busy():
                raise DhtError(
                    f"{shown} was still working on it after {args.timeout:g} s (--timeout); "
                    "it may yet finish: a write can land after this, so read the key to see"
                ) from None
            raise DhtError(f"{shown} did not answer within {args.timeout:g} s") from None
    finally:
        if waiting is not None:
            waiting.stop()


async def _checked(args: argparse.Namespace, coro: Coroutine[Any, Any, int]) -> int:
    """``coro``; but once it has run a second, one ping of each protocol to ``--node``
    (kad/crosscheck.py): an address that answers only the other protocol ends the command
    with the one to use (``… answers kademlia's protocol, not udpdht's: use --node kad://…``)
    rather than "did not answer" after all the tries. A command answered within the second
    sends nothing more. A silence that ends the command sooner (``--tries 1``) is checked
    then."""
    import asyncio

    from .errors import Refused, RpcTimeout
    from .kad.crosscheck import wrong_protocol

    loop = asyncio.get_running_loop()
    start = loop.time()
    task = asyncio.ensure_future(coro)
    checker = asyncio.ensure_future(wrong_protocol(args.node))
    try:
        await asyncio.wait((task, checker), return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            wrong = checker.result()
            if wrong is not None:
                raise wrong
        try:
            return await task
        except RpcTimeout as exc:
            if isinstance(exc, Refused) or checker.done() or exc.addr[1] != args.node[1]:
                raise
            checker.cancel()
            wrong = await wrong_protocol(args.node, after=0)
            if wrong is not None:
                raise wrong from None
            # The time the user waited, the check included (not the tries' alone: "1 try,
            # 0.3 s" after 1.3 s).
            exc.elapsed = max(exc.elapsed, loop.time() - start)
            raise
    finally:
        task.cancel()
        checker.cancel()


WAIT_SHOWN_AFTER = 1.0  # seconds of silence before a command on a terminal says it waits


class _Waiting:
    """``waiting for 127.0.0.1:7109… 3 s (Ctrl-C to stop)`` on stderr, rewritten in place
    every second once a command has waited WAIT_SHOWN_AFTER; ``127.0.0.1:7109 is still
    working on it…`` while the node says so (busy, not gone). :meth:`stop` wipes it: the
    command's client calls it when it closes, before the answer is printed (_client)."""

    def __init__(self, node: str, args: argparse.Namespace) -> None:
        import asyncio

        self.node = node
        self.args = args
        self.shown = False
        self.task: asyncio.Task[None] | None = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(WAIT_SHOWN_AFTER)
        while True:
            waited = loop.time() - start
            client = getattr(self.args, "client", None)
            busy = client is not None and client.busy()
            what = f"{self.node} is still working on it" if busy else f"waiting for {self.node}"
            sys.stderr.write(f"\r{what}… {waited:.0f} s (Ctrl-C to stop)\033[K")
            sys.stderr.flush()
            self.shown = True
            await asyncio.sleep(1.0 - (loop.time() - start) % 1.0)  # once a second, on time

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.shown = False


async def show_answer(
    args: argparse.Namespace,
    ask: Callable[[Client], Awaitable[Any]],
    text: Callable[[Any], str],
) -> int:
    """Ask the node one thing; print the answer as JSON (``--json``) or as ``text`` renders it."""
    import json

    async with _client(args) as client:
        answer = await ask(client)
    print(json.dumps(answer) if args.json else text(answer))
    return 0


async def _status(args: argparse.Namespace) -> int:
    return await show_answer(args, lambda client: client.status(), render_status)


def cmd_status(args: argparse.Namespace) -> int:
    return _run(_within(args, _status(args)))


def _read_input(args: argparse.Namespace) -> bytes:
    """The bytes of stdin (VALUE '-') or of --file, refused early when over the value limit."""
    from .limits import MAX_VALUE

    if args.file is not None:
        where = args.file
        try:
            with open(args.file, "rb") as f:
                data = f.read(MAX_VALUE + 1)
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    else:
        where = "stdin"
        if sys.stdin.isatty():  # not a silent wait: say what it waits for
            print("reading the value from stdin; end it with Ctrl-D", file=sys.stderr)
        data = sys.stdin.buffer.read(MAX_VALUE + 1)
    if len(data) > MAX_VALUE:
        raise UsageError(
            f"{where} holds more than {MAX_VALUE:,} bytes; a value is at most {MAX_VALUE:,} "
            "bytes encoded"
        )
    return data


def _parse_value(args: argparse.Namespace) -> Any:
    """The value to store, from VALUE, stdin or --file, as --json / --text say."""
    from .values import ValueFormatError, from_json

    from_input = args.file is not None or args.value == "-"
    if args.file is not None and args.value is not None:
        raise UsageError("give VALUE or --file FILE, not both")
    if args.file is None and args.value is None:
        raise UsageError("VALUE is missing (or '-' to read stdin, or --file FILE)")
    if args.text and not from_input:
        raise UsageError("--text applies to stdin ('-') or --file; VALUE is text already")
    data: str | bytes = _read_input(args) if from_input else args.value
    where = args.file or ("stdin" if from_input else "VALUE")
    try:
        if args.json:
            return from_json(data)
    except ValueFormatError as exc:
        raise UsageError(f"{where}: {exc}") from None
    if isinstance(data, str) or not args.text:
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"--text: the input is not UTF-8 (at byte offset {exc.start:,})") from None


SHOWN_KEY = 60  # characters of a key echoed back at most (a key may have 1,024)


def _shown_key(key: str) -> str:
    """``key`` quoted as the command echoes it, shortened with "…" past SHOWN_KEY."""
    from .render import shortened  # (at print time: --help does not load it)

    return repr(shortened(key, SHOWN_KEY))


async def _put(args: argparse.Namespace) -> int:
    from .errors import ValueTooLarge

    value = _parse_value(args)
    async with _client(args) as client:
        try:
            short = await _slow_write(client, client.put(args.key, value, ttl=args.ttl), "write")
        except ValueTooLarge as exc:
            what = "key" if str(exc).startswith("a key") else "value"
            text = f"{exc} (the store's limit per {what})"
            if what == "value" and isinstance(value, (bytes, str)):
                # The limit counts the encoded value: a file of exactly 60,000 bytes is refused
                # as 60,003, which the user never wrote (a new user's trial).
                raw = len(value) if isinstance(value, bytes) else len(value.encode())
                text += (
                    f"; {raw:,} bytes of {'data' if isinstance(value, bytes) else 'text'} "
                    "and the header that says what they are"
                )
            raise UsageError(text) from None
    print(f"stored {_shown_key(args.key)}" + (f" for {duration(args.ttl)}" if args.ttl else ""))
    if short is not None:  # stored and readable, but with fewer copies than it should have
        print(f"udpdht: warning: {_shown_key(args.key)} is stored {short}", file=sys.stderr)
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    return _run(_within(args, _put(args)))


async def _get(args: argparse.Namespace) -> int:
    import json

    from .values import raw, show, show_meta, to_json, to_plain

    async with _client(args) as client:
        stored = await client.get_record(args.key)
    if args.raw:
        data = raw(stored.value)  # before any output: an error leaves stdout empty
        if args.meta:
            print(show_meta(stored), file=sys.stderr)
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    elif args.json and args.meta:
        print(json.dumps({"value": to_plain(stored.value), **stored.meta()}, ensure_ascii=False))
    elif args.json:
        print(to_json(stored.value))
    else:
        text = show(stored.value)
        # (A text read from a file or a pipe ends in its newline: not a blank line after it.)
        print(text, end="" if text.endswith("\n") else "\n")
        if args.meta:
            print(show_meta(stored))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    return _run(_within(args, _get(args)))


async def _slow_write(client: Client, write: Awaitable[T], what: str) -> T:
    """``write``; when the node did not answer it, a ping tells a dead node from one still
    busy with the write (it waits for peers that stopped answering, and stays silent to the
    client's retries meanwhile): the latter is not "did not answer; is a node running there?".
    """
    from .errors import RpcTimeout
    from .net import format_addr

    try:
        return await write
    except RpcTimeout as exc:
        try:
            await client.endpoint.call(client.addr, "ping", tries=1)
        except DhtError:
            raise exc from None  # it is down, or unreachable: the usual words
        raise DhtError(
            f"{format_addr(client.addr)} answers, but did not finish the {what} within "
            f"{exc.elapsed:.1f} s (it waits for nodes that stopped answering); the {what} may "
            "have landed or not: read the key to see, or try again in a few seconds"
        ) from None


async def _delete(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        existed, short = await _slow_write(client, client.delete_checked(args.key), "delete")
    if not existed:  # as get: exit 1, and the same words as the shell
        print(f"udpdht: {_shown_key(args.key)}: not found (nothing to delete)", file=sys.stderr)
        return 1
    print(f"deleted {_shown_key(args.key)}")
    if short is not None:  # gone for readers, but fewer replicas than wanted hold the deletion
        print(
            f"udpdht: warning: {_shown_key(args.key)} is deleted {short.describe(deleted=True)}",
            file=sys.stderr,
        )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    return _run(_within(args, _delete(args)))


def render_lookup(key: str, found: Lookup) -> str:
    from . import render  # as the shell words it: a lookup reads the same in both

    return "\n".join(render.lookup_lines(key, found, asker="the asked node"))


async def _lookup(args: argparse.Namespace) -> int:
    import json

    from . import ids

    async with _client(args) as client:
        found = await client.lookup(args.key)
    if args.json:
        print(
            json.dumps(
                {
                    "key": args.key,
                    "key_id": ids.to_hex(ids.hash_key(args.key)),
                    "owner": found.owner.info(),
                    "hops": [{**h.peer.info(), "rtt_s": h.rtt_s} for h in found.hops],
                    # (as the text's `next` line: the nodes after the owner, its copies' first)
                    "next": [p.info() for p in found.successors],
                }
            )
        )
    else:
        print(render_lookup(args.key, found))
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    return _run(_within(args, _lookup(args)))


def _width(text: str) -> int:
    if not text.isdigit() or not 40 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"width must be a number 40..1000, got {text}")
    return int(text)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)


async def show_ring_picture(
    args: argparse.Namespace,
    attached: dict[str, Any],
    others: list[dict[str, Any]],
    *,
    limit: int | None = None,
) -> None:
    """``ring --draw`` / ``--svg FILE``: the ring (the attached node's status, the others')
    as a picture on the terminal or in an SVG file; ``limit``: the walk's (--limit)."""
    import asyncio
    import shutil
    import textwrap

    from . import render, ringdraw

    nodes, fingers = ringdraw.from_statuses(attached, others, limit=limit)
    # Under the picture, what the walk's list says is under way: that the node is isolated,
    # or that keys without a primary yet are counted from their copies (the picture counts
    # keys held as primary only: a second after a kill -9 it showed 4 where the list, 18).
    notes = render.ring_lines([attached, *others], attached["addr"], limit=limit, notes_only=True)
    if args.svg:
        try:
            svg = ringdraw.draw_svg(nodes, fingers, who=ringdraw.ASKED_NODE)
            await asyncio.to_thread(_write_text, args.svg, svg)
        except OSError as exc:
            raise UsageError(f"cannot write {args.svg}: {exc.strerror}") from None
        print("\n".join([f"wrote a picture of {plural(len(nodes), 'node')} to {args.svg}", *notes]))
        return
    width = args.width or max(40, min(80, shutil.get_terminal_size().columns))
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    lines = ringdraw.draw_text(nodes, fingers, width=width, color=color, who=ringdraw.ASKED_NODE)
    # The notes too are wrapped to the picture's width (one of 160 characters ran past it
    # while the second node of a ring joined).
    wrapped = [part for note in notes for part in textwrap.wrap(note, width)]
    print("\n".join([*lines, *wrapped]))


def _cluster_size(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 500:
        raise argparse.ArgumentTypeError(f"N must be 1..500, got {text}")
    return int(text)


def cmd_cluster(args: argparse.Namespace) -> int:
    from .cli_node import cmd_cluster as run

    return run(args)


def cmd_shell(args: argparse.Namespace) -> int:
    from shell.app import run as run_shell  # prompt_toolkit loads only for the shell

    from .kad.target import NO_ADMIN, KadAddr

    attach = args.attach
    if attach is None and os.environ.get(NODE_ENV, "").strip():
        attach = _node_from_env()  # (as the client commands take it)
    if args.cookie is not None and isinstance(attach, KadAddr):
        raise UsageError(NO_ADMIN)
    return int(run_shell(attach, args.cookie))


# --- plumbing ----------------------------------------------------------------------------------


def _run(coro: Coroutine[Any, Any, int]) -> int:
    from .net import run as run_loop

    return run_loop(coro)


def main(argv: Sequence[str] | None = None) -> int:
    from .cli_errors import quiet_on_broken_pipe

    # Started with a standard stream closed (`2>&-`), Python sets it to None: a node refused
    # to start ("'NoneType' object has no attribute 'isatty'", a helper's trial). What would
    # be written there is dropped, as a shell's commands do.
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115  (for the process's life)
    return quiet_on_broken_pipe(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `udpdht` alone: a mistake on the command line, as any other
        parser.print_help(sys.stderr)  # (the help itself, asked for with --help: stdout)
        return 2
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        layers: Layers | None = getattr(args, "layers", None)
        if layers is not None:  # flags > UDPDHT_* > config file > defaults
            args.warnings = layers.resolve(args, os.environ)
        if "node" in vars(args) and args.node is None:  # a client command
            args.node = _node_from_env()
        from .kad.target import KadAddr

        if isinstance(getattr(args, "node", None), KadAddr):  # kad://: a kademlia network
            from .cli_kad import command

            func = command(args)
        return func(args)
    except (UsageError, ConfigError) as exc:
        _fatal(args, str(exc))
        return 2
    except HostRefused as exc:
        _fatal(args, str(exc))
        return 1
    except KeyNotFound:
        print(f"udpdht: {_shown_key(getattr(args, 'key', 'key'))}: not found", file=sys.stderr)
        return 1
    except DhtError as exc:
        from .cli_errors import in_words

        _fatal(args, in_words(exc))
        return 1
    except ValueError as exc:  # e.g. a host name that does not resolve
        _fatal(args, str(exc))
        return 2
    except UNREADABLE as exc:  # (a broken or hostile node's answer: not a traceback)
        from .net import format_addr

        node = getattr(args, "node", None)
        where = f" of {format_addr(node)}" if isinstance(node, tuple) else ""
        print(
            printable(
                f"udpdht: error: cannot read the answer{where} ({type(exc).__name__}: {exc})"
            ),
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130


def _json_log(args: argparse.Namespace | None) -> bool:
    """Whether ``udpdht node``'s line that says why it stopped is a JSON log object: its
    --log-format as resolved, else (a bad flag, a config file that cannot be read: nothing was
    resolved) as the command line says, else as UDPDHT_LOG_FORMAT does. A log shipper reading
    a node's stderr as JSON took that one line for garbage (a new user's trial)."""
    if args is not None and getattr(args, "log_format", None) == "json":
        return True
    given = None
    for i, word in enumerate(_parsing):
        if word == "--":
            break
        if word == "--log-format" and i + 1 < len(_parsing):
            given = _parsing[i + 1]
        elif word.startswith("--log-format="):
            given = word.partition("=")[2]
    if given is not None:
        return given == "json"
    return os.environ.get("UDPDHT_LOG_FORMAT", "").strip().lower() == "json"


def _fatal(args: argparse.Namespace, text: str) -> None:
    """The line that says why the command stopped, on stderr: "udpdht: error: ...", or for a
    node under --log-format json one log object of level ERROR, as every other line there."""
    if getattr(args, "command", None) == "node" and _json_log(args):
        import logging

        from .cli_node import json_line

        print(json_line(text, logging.ERROR), file=sys.stderr)
    else:
        print(f"udpdht: error: {text}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
