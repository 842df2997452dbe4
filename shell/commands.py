"""The shell's command language: pure parsing, no I/O.

``parse(line)`` turns one typed line into a :class:`Command`, or raises :class:`CommandError`
whose message is one sentence a person can act on. Words are split the way a POSIX shell
splits them, so ``put "my key" "a value with spaces"`` works.
"""

from __future__ import annotations

import difflib
import math
import shlex
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from udpdht import render, values
from udpdht.admin import read_cookie
from udpdht.kad.target import cannot, parse_target
from udpdht.limits import parse_ttl
from udpdht.net import Address, parse_addr


class CommandError(Exception):
    """A line that cannot be run as typed; the message is one sentence."""


class _NotJson(CommandError):
    """``put --json`` with a VALUE that is not JSON (parse adds why, when the line tells)."""


@dataclass(frozen=True)
class Command:
    """One parsed command: its (canonical) name and the arguments it takes."""

    name: str
    key: str | None = None  # get, put, delete, lookup
    value: Any = None  # put
    ttl: float | None = None  # put --ttl
    meta: bool = False  # get --meta
    addr: Address | None = None  # attach, join, ping
    action: str | None = None  # nodes: list, add, kill
    number: int | None = None  # nodes add N, nodes kill I, keys --limit N
    after: str | bytes | None = None  # keys --after KEY, or --after-hex HEX (bytes)
    topic: str | None = None  # help CMD
    style: str | None = None  # format: table, json, plain (None: show the current one)
    interval: float | None = None  # watch N CMD
    inner: Command | None = None  # watch N CMD: the command repeated
    target: bytes | None = None  # findnode ID: 20 bytes
    cookie: bytes | None = None  # attach --cookie FILE: the node's cookie, read from FILE


@dataclass(frozen=True)
class Spec:
    """A command as ``help`` shows it."""

    name: str
    usage: str
    summary: str  # one line
    details: str = ""  # more, for ``help CMD``


KEYS_PAGE = 100  # keys one 'keys' lists unless --limit says otherwise
MAX_KEYS_PAGE = 100_000
RING_WALK = 64  # nodes 'ring' walks unless --limit says otherwise
MAX_RING_WALK = 10_000
MAX_ADD = 32  # nodes one 'nodes add' may start

SPECS: tuple[Spec, ...] = (
    Spec(
        "get",
        "get KEY [--meta]",
        "print the value stored under KEY",
        "--meta: also its type, version, writer and expiry (as 'udpdht get --meta').",
    ),
    Spec(
        "put",
        "put KEY VALUE [--json] [--ttl SECONDS]",
        "store VALUE under KEY",
        "VALUE is stored as the string typed; with --json it is parsed as JSON first "
        '(put cfg --json \'{"a": 1}\'; bytes as {"$bytes": "<base64>"}). A string '
        "shows as it is, other types as (TYPE) JSON: (int) 42. --ttl makes the value "
        "expire after SECONDS (at most 366 days). Quote words with spaces; '--' ends the "
        "options.",
    ),
    Spec("delete", "delete KEY", "delete KEY and its value"),
    Spec(
        "lookup",
        "lookup KEY",
        "show which node owns KEY and the hops taken to find it",
        "The attached node routes towards the key; each hop is shown with its round-trip time.",
    ),
    Spec("status", "status", "summary of the attached node"),
    Spec(
        "ring",
        "ring [--list] [--limit N]",
        "draw the ring and list its nodes, walking successors from the attached node",
        "Draws the id circle (id 0 at the top, ids increasing clockwise) with each node, the "
        "keys it holds as primary and the attached node's fingers as lines, then lists each "
        "node with the keys it holds as primary and as replica. --list: the list alone. "
        f"--limit N: walk N nodes at most (default {RING_WALK}).",
    ),
    Spec("leafset", "leafset", "the attached node's successors and predecessors"),
    Spec("fingers", "fingers", "the attached node's distinct fingers"),
    Spec("stats", "stats", "the attached node's RPC counters and store counts"),
    Spec(
        "keys",
        "keys [--limit N] [--after KEY | --after-hex HEX]",
        "list the keys the attached node holds, a page at a time",
        "As 'udpdht keys': each key with its id, size, role (primary: the node owns it; "
        f"replica) and time left to live, in ring order of their ids, N at a time (default "
        f"{KEYS_PAGE}); the last line says the 'keys --after KEY' that goes on ('--after-hex "
        "HEX' when that key is not UTF-8 text, as kademlia's hashed keys are). Deleted keys "
        "are not listed.",
    ),
    Spec("ping", "ping [HOST:PORT]", "round-trip time to a node (default: the attached one)"),
    Spec(
        "attach",
        "attach HOST:PORT [--cookie FILE] | kad://HOST:PORT",
        "talk to another node from now on (kad://: a kademlia network)",
        "The node must answer a ping; otherwise the shell stays attached where it was. "
        "--cookie FILE: the node's admin cookie (the file 'cookie' in its data dir), for "
        "leave, shutdown and join; a node on this host with its default data dir needs none. "
        "kad://HOST:PORT attaches to a network of the `kademlia` package through that node: "
        "then get, put, ping, lookup, findnode, routing and whoami speak kademlia's protocol, "
        "and the commands it has no request for say so. 'attach HOST:PORT' goes back to a "
        "udpdht node.",
    ),
    Spec(
        "findnode",
        "findnode ID",
        "the k kademlia nodes nearest ID (40 hex digits), with the lookup's trace",
        "Kademlia's find_node lookup (α = 3, k = 20, XOR distance). Only on a kademlia "
        "network (attach kad://HOST:PORT).",
    ),
    Spec(
        "routing",
        "routing [HOST:PORT]",
        "the kademlia contacts learned, by bucket; or probe a node's table",
        "Without an address: the contacts this shell has heard from, by bucket (the leading "
        "bits their ids share with ours). With HOST:PORT: asks that node find_node for ids "
        "spread across the id space and lists what it returned, by bucket of its id. Only "
        "on a kademlia network (attach kad://HOST:PORT).",
    ),
    Spec(
        "whoami",
        "whoami",
        "this shell's own id and address, and what it is attached to",
    ),
    Spec(
        "join",
        "join HOST:PORT",
        "make the attached node join the ring of HOST:PORT (admin)",
        "Admin commands need the node's cookie: the embedded ring's nodes have theirs, and a "
        "local node's is found in its default data dir; otherwise start the shell with "
        "--cookie FILE.",
    ),
    Spec(
        "leave",
        "leave",
        "make the attached node leave the ring gracefully (admin)",
        "The node hands its keys to its successors and stops; the shell then attaches to "
        "its successor. Admin: it needs the node's cookie (see help attach).",
    ),
    Spec(
        "shutdown",
        "shutdown",
        "stop the attached node at once, without handing its keys over (admin)",
        "As 'udpdht shutdown', or a crash: its replicas keep its keys while the ring repairs. "
        "The shell then attaches to its successor. Admin: it needs the node's cookie (see "
        "help attach).",
    ),
    Spec(
        "nodes",
        "nodes [list | add [N] | kill I | join I]",
        "manage the embedded ring's nodes",
        "nodes list: the embedded nodes and their state. nodes add N: start N more nodes "
        f"(1 to {MAX_ADD} at a time; default 1) that join the ring. nodes kill I: stop node I "
        "(its number in 'nodes list') at once, as a crash would. "
        "nodes join I: bring node I back (after 'leave' or 'kill') at its old address, so with "
        "its old id, joining through the attached node. "
        "Only in the embedded ring (started when the shell has no --attach).",
    ),
    Spec(
        "watch",
        "watch SECONDS COMMAND",
        "run COMMAND every SECONDS until Ctrl-C",
        "For example 'watch 2 status' or 'watch 1 lookup k'. Each round is headed by the time; "
        "a failure is shown and the watch goes on. On a terminal only.",
    ),
    Spec(
        "format",
        "format [table | json | plain]",
        "how status, lookup and stats print (default: table)",
        "table: aligned for reading; json: one JSON object (as 'udpdht status --json' prints); "
        "plain: one 'name<TAB>value' line per field, for cut and awk. Without an argument, "
        "shows the current format.",
    ),
    Spec("help", "help [COMMAND]", "list the commands, or explain one"),
    Spec("quit", "quit", "leave the shell (also: exit, Ctrl-D)"),
)

COMMANDS: dict[str, Spec] = {spec.name: spec for spec in SPECS}

#: What works on a kademlia network; every other command says why it cannot (kad.target).
KAD_COMMANDS: tuple[str, ...] = (
    "get",
    "put",
    "lookup",
    "ping",
    "findnode",
    "routing",
    "whoami",
    "attach",
    "watch",
    "format",
    "help",
    "quit",
)
#: What works only there.
KAD_ONLY: tuple[str, ...] = ("findnode", "routing")
#: The usage lines on a kademlia network, where they differ: only the options that work there.
KAD_USAGE: dict[str, str] = {"get": "get KEY", "put": "put KEY VALUE [--json]"}
#: ``help CMD`` on a kademlia network, where it differs.
KAD_DETAILS: dict[str, str] = {
    "get": "No --meta here: kademlia keeps no version, writer or expiry with a value.",
    "put": "VALUE is stored as the string typed; with --json it is parsed as JSON first. "
    "Kademlia keeps an int, float, bool, str or bytes (not a list, a map or null) of about "
    "8 KB at most: its requests are at most 8,192 bytes. No --ttl here: its store takes none.",
}
#: What the commands do on a kademlia network, where it differs.
KAD_SUMMARY: dict[str, str] = {
    "get": "print the value of KEY (kademlia's find_value lookup)",
    "put": "store VALUE under KEY on the k nodes nearest it",
    "lookup": "kademlia's lookup of KEY: who was asked in each round, what each returned",
    "ping": "round-trip time to a kademlia node (default: the one attached through)",
    "format": "how lookup and findnode print (default: table)",
}
UDPDHT_ONLY_WHY = (
    "it is kademlia's: 'attach kad://HOST:PORT' first (on a udpdht ring, 'lookup KEY' finds a "
    "key's owner, and 'fingers' and 'leafset' show a node's table)"
)


def available(name: str, mode: str) -> bool:
    """Whether command ``name`` works in ``mode`` (udpdht or kad)."""
    if mode == "kad":
        return name in KAD_COMMANDS
    return name not in KAD_ONLY


def unavailable(name: str, mode: str) -> str:
    """Why ``name`` does not work in ``mode``, in one line."""
    if mode == "kad":
        return cannot(name)
    return f"'{name}' works only on a kademlia network: {UDPDHT_ONLY_WHY}"


def usage(name: str, mode: str = "udpdht") -> str:
    """The usage line of ``name`` in ``mode``: on a kademlia network, without the options it
    cannot do (``put --ttl``, ``get --meta``)."""
    spec = COMMANDS[name]
    return KAD_USAGE.get(name, spec.usage) if mode == "kad" else spec.usage


def summary(name: str, mode: str = "udpdht") -> str:
    spec = COMMANDS[name]
    return KAD_SUMMARY.get(name, spec.summary) if mode == "kad" else spec.summary


ALIASES: dict[str, str] = {"exit": "quit", "?": "help", "del": "delete"}
NODES_ACTIONS: tuple[str, ...] = ("list", "add", "kill", "join")
FORMATS: tuple[str, ...] = ("table", "json", "plain")
WATCHABLE: tuple[str, ...] = (
    "get",
    "lookup",
    "keys",
    "status",
    "ring",
    "leafset",
    "fingers",
    "stats",
    "ping",
    "routing",
    "whoami",
    "findnode",
)
MIN_WATCH = 0.1  # seconds: the shortest 'watch' period
MAX_WATCH = 86_400.0


def command_names() -> list[str]:
    """Every name the shell accepts, canonical names first."""
    return [*COMMANDS, *ALIASES]


# Commands that change the ring are suggested only for a near miss: 'clear' must not offer
# 'leave', which takes the attached node out of the ring.
_CAREFUL = {"leave": 0.8, "join": 0.8}


def _suggest(word: str, choices: Sequence[str]) -> str | None:
    for found in difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6):
        ratio = difflib.SequenceMatcher(None, word, found).ratio()
        if ratio >= _CAREFUL.get(found, 0.6):
            return found
    return None


def split(line: str) -> list[str]:
    """The words of ``line``, quoted as in a POSIX shell; CommandError on unbalanced quotes."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        detail = str(exc).lower().removesuffix(".")
        raise CommandError(f"cannot split the line into words: {detail}") from None


def _usage(name: str) -> str:
    return f"usage: {COMMANDS[name].usage}"


def _arity(name: str, args: Sequence[str], low: int, high: int, what: str) -> None:
    if len(args) < low:
        raise CommandError(f"'{name}' needs {what}; {_usage(name)}")
    if len(args) > high:
        extra = " (quote words that contain spaces)" if low else ""
        raise CommandError(f"too many arguments for '{name}'{extra}; {_usage(name)}")


def _key(name: str, text: str) -> str:
    if not text:
        raise CommandError(f"'{name}' needs a non-empty KEY; {_usage(name)}")
    return text


def _addr(text: str) -> Address:
    try:
        return parse_addr(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _target(text: str) -> Address:
    """``HOST:PORT`` or ``kad://HOST:PORT`` (a :class:`KadAddr`)."""
    try:
        return parse_target(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _count(name: str, text: str, what: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise CommandError(f"{what} must be a number {low}..{high}, got {text!r}; {_usage(name)}")
    return int(text)


# --- one parser per command --------------------------------------------------------------------


def _no_args(name: str, args: list[str]) -> Command:
    _arity(name, args, 0, 0, "no arguments")
    return Command(name)


def _get(name: str, args: list[str]) -> Command:
    meta = False
    positional: list[str] = []
    words = iter(args)
    for word in words:
        if word == "--":  # (as in put and the CLI: what follows is the KEY, as it is)
            positional.extend(words)
        elif word == "--meta":
            meta = True
        elif word.startswith("--") and len(word) > 2:
            raise CommandError(f"unknown option {word!r} for 'get'; {_usage(name)}")
        else:
            positional.append(word)
    _arity(name, positional, 1, 1, "a KEY")
    return Command(name, key=_key(name, positional[0]), meta=meta)


def _key_only(name: str, args: list[str]) -> Command:
    if args[:1] == ["--"]:  # (delete -- -x: as in put, get and the CLI)
        args = args[1:]
    _arity(name, args, 1, 1, "a KEY")
    return Command(name, key=_key(name, args[0]))


def _addr_only(name: str, args: list[str]) -> Command:
    _arity(name, args, 1, 1, "an address HOST:PORT")
    return Command(name, addr=_addr(args[0]))


def _ping(name: str, args: list[str]) -> Command:
    _arity(name, args, 0, 1, "at most one address")
    return Command(name, addr=_target(args[0]) if args else None)


def _attach(name: str, args: list[str]) -> Command:
    positional: list[str] = []
    cookie: bytes | None = None
    words = iter(args)
    for word in words:
        if word == "--cookie" or word.startswith("--cookie="):
            path = word.partition("=")[2] if "=" in word else next(words, "")
            if not path:
                raise CommandError("--cookie needs the node's cookie FILE")
            try:
                cookie = read_cookie(path)
            except ValueError as exc:
                raise CommandError(f"--cookie: {exc}") from None
        elif word.startswith("--") and len(word) > 2:
            raise CommandError(f"unknown option {word!r} for 'attach'; {_usage(name)}")
        else:
            positional.append(word)
    _arity(name, positional, 1, 1, "an address HOST:PORT or kad://HOST:PORT")
    return Command(name, addr=_target(positional[0]), cookie=cookie)


def _findnode(name: str, args: list[str]) -> Command:
    _arity(name, args, 1, 1, "a node ID")
    text = args[0].lower().removeprefix("0x")
    if len(text) != 40 or any(ch not in "0123456789abcdef" for ch in text):
        raise CommandError(
            f"ID is a node id of 40 hex digits, got {args[0]!r} (for a key, 'lookup KEY')"
        )
    return Command(name, target=bytes.fromhex(text))


def _routing(name: str, args: list[str]) -> Command:
    _arity(name, args, 0, 1, "at most one address")
    if not args:
        return Command(name)
    host, port = _target(args[0])  # kad:// or not: 'routing' speaks kademlia either way
    return Command(name, addr=(host, port))


def _put(name: str, args: list[str]) -> Command:
    positional: list[str] = []
    as_json = False
    ttl: float | None = None
    words = iter(args)
    for word in words:
        if word == "--":
            positional.extend(words)
        elif word == "--json":
            as_json = True
        elif word == "--ttl" or word.startswith("--ttl="):
            text = word.partition("=")[2] if "=" in word else next(words, "")
            if not text:
                raise CommandError("--ttl needs a number of seconds")
            ttl = _ttl(text)
        elif word.startswith("--") and len(word) > 2:
            raise CommandError(
                f"unknown option {word!r} for 'put'; to store it as it is, write: put KEY -- {word}"
            )
        else:
            positional.append(word)
    _arity(name, positional, 2, 2, "a KEY and a VALUE")
    key, text = positional
    value: Any = text
    if as_json:
        try:
            value = values.from_json(text)
        except values.ValueFormatError as exc:
            if str(exc).startswith("not valid JSON") and '"' not in text:
                raise _NotJson(f"VALUE: {exc}") from None
            raise CommandError(f"VALUE: {exc}") from None
    return Command(name, key=_key(name, key), value=value, ttl=ttl)


def _keys(name: str, args: list[str]) -> Command:
    limit: int = KEYS_PAGE
    after: str | bytes | None = None
    words = iter(args)
    for word in words:
        flag, eq, text = word.partition("=")
        if flag in ("--limit", "--after", "--after-hex"):
            value = text if eq else next(words, None)
            if value is None:
                raise CommandError(f"{flag} needs a value; {_usage(name)}")
            if flag == "--limit":
                limit = _count(name, value, "--limit", 1, MAX_KEYS_PAGE)
            elif after is not None:
                raise CommandError(f"give --after or --after-hex, once; {_usage(name)}")
            elif flag == "--after":
                after = _key(name, value)
            else:
                try:
                    after = render.hex_key(value)
                except ValueError as exc:
                    raise CommandError(f"--after-hex: {exc}") from None
        else:
            raise CommandError(f"unknown argument {word!r} for 'keys'; {_usage(name)}")
    return Command(name, number=limit, after=after)


def _ttl(text: str) -> float:
    try:
        return parse_ttl(text)
    except ValueError as exc:
        raise CommandError(f"--ttl: {exc}") from None


def _nodes(name: str, args: list[str]) -> Command:
    if not args:
        return Command(name, action="list")
    action, rest = args[0], args[1:]
    if action == "list":
        _arity(name, rest, 0, 0, "nothing after 'list'")
        return Command(name, action=action)
    if action == "add":
        _arity(name, rest, 0, 1, "at most one number")
        count = _count(name, rest[0], "N", 1, MAX_ADD) if rest else 1
        return Command(name, action=action, number=count)
    if action in ("kill", "join"):
        _arity(name, rest, 1, 1, f"the number I of the node to {action}")
        if not (rest[0].isdigit() and len(rest[0]) <= 6):
            raise CommandError(
                f"I must be a node's number, as 'nodes list' shows them, got {rest[0]!r}; "
                f"{_usage(name)}"
            )
        return Command(name, action=action, number=int(rest[0]))
    hint = _suggest(action, NODES_ACTIONS)
    also = f"; did you mean 'nodes {hint}'?" if hint else f"; {_usage(name)}"
    raise CommandError(f"unknown action {action!r} for 'nodes'{also}")


def _ring(name: str, args: list[str]) -> Command:
    action: str | None = None
    limit: int | None = None  # (the session's walk: RING_WALK)
    words = iter(args)
    for word in words:
        flag, eq, text = word.partition("=")
        if word == "--list":
            action = "list"
        elif flag == "--limit":
            value = text if eq else next(words, None)
            if value is None:
                raise CommandError(f"--limit needs a value; {_usage(name)}")
            limit = _count(name, value, "--limit", 1, MAX_RING_WALK)
        elif word.startswith("-"):
            raise CommandError(f"unknown option {word!r} for 'ring'; {_usage(name)}")
        else:
            raise CommandError(
                f"'ring' takes no arguments but --list and --limit N; {_usage(name)}"
            )
    return Command(name, action=action, number=limit)


def _help(name: str, args: list[str]) -> Command:
    _arity(name, args, 0, 1, "at most one command name")
    if not args:
        return Command(name)
    topic = ALIASES.get(args[0], args[0])
    if topic not in COMMANDS:
        raise CommandError(_unknown(args[0]))
    return Command(name, topic=topic)


def _format(name: str, args: list[str]) -> Command:
    _arity(name, args, 0, 1, "at most one format")
    if not args:
        return Command(name)
    if args[0] not in FORMATS:
        hint = _suggest(args[0], FORMATS)
        also = f"; did you mean 'format {hint}'?" if hint else f"; {_usage(name)}"
        raise CommandError(f"unknown format {args[0]!r}{also}")
    return Command(name, style=args[0])


def _watch(name: str, args: list[str]) -> Command:
    _arity(name, args, 2, len(args), "SECONDS and a COMMAND")
    try:
        interval = float(args[0])
    except ValueError:
        interval = math.nan
    if not MIN_WATCH <= interval <= MAX_WATCH:  # (false for nan)
        raise CommandError(
            f"SECONDS must be a number {MIN_WATCH:g}..{MAX_WATCH:g}, got {args[0]!r}; "
            f"{_usage(name)}"
        )
    inner = parse(shlex.join(args[1:]))
    if inner.name not in WATCHABLE and not (inner.name == "nodes" and inner.action == "list"):
        raise CommandError(
            f"'watch' repeats commands that only look ({', '.join(WATCHABLE)}, nodes list); "
            f"not {inner.name!r}"
        )
    return Command(name, interval=interval, inner=inner)


PARSERS: dict[str, Callable[[str, list[str]], Command]] = {
    "get": _get,
    "put": _put,
    "delete": _key_only,
    "lookup": _key_only,
    "status": _no_args,
    "ring": _ring,
    "leafset": _no_args,
    "fingers": _no_args,
    "stats": _no_args,
    "ping": _ping,
    "attach": _attach,
    "findnode": _findnode,
    "routing": _routing,
    "whoami": _no_args,
    "join": _addr_only,
    "leave": _no_args,
    "shutdown": _no_args,
    "keys": _keys,
    "nodes": _nodes,
    "watch": _watch,
    "format": _format,
    "help": _help,
    "quit": _no_args,
}
assert set(PARSERS) == set(COMMANDS)


def _unknown(word: str) -> str:
    hint = _suggest(word, command_names())
    if hint is not None:
        return f"unknown command {word!r}; did you mean {hint!r}?"
    return f"unknown command {word!r}; type 'help' for the list"


def parse(line: str, mode: str = "udpdht") -> Command:
    """The command on ``line``; CommandError (one sentence) if it cannot be run as typed.
    ``mode`` kad: the usage a mistake quotes is the kademlia network's (no --ttl, no --meta)."""
    words = split(line)
    if not words:
        raise CommandError("empty line: type a command, or 'help' for the list")
    word, args = words[0], words[1:]
    name = ALIASES.get(word, word)
    if name not in PARSERS:
        raise CommandError(_unknown(word))
    try:
        return PARSERS[name](name, args)
    except _NotJson as exc:
        if '"' not in line:  # (in single quotes already: the JSON itself is wrong)
            raise CommandError(str(exc)) from None
        # The line's words are split as a shell splits them: "..." lost its quotes.
        raise CommandError(
            f"{exc}; double quotes group words here, as in sh, so the JSON lost its own: put "
            "it in single quotes, as in put k '{\"a\": [1, 2]}' --json"
        ) from None
    except CommandError as exc:
        if mode != "kad":
            raise
        text = str(exc)
        for spec in SPECS:
            text = text.replace(f"usage: {spec.usage}", f"usage: {usage(spec.name, mode)}")
        raise CommandError(text) from None


def help_text(topic: str | None = None, mode: str = "udpdht") -> str:
    """``help``: the commands of the mode with their summaries (and which others exist);
    ``help CMD``: its usage and details, and why it does not work in this mode if it does not.
    """
    if topic is None:
        specs = [spec for spec in SPECS if available(spec.name, mode)]
        width = max(len(usage(spec.name, mode)) for spec in specs)
        lines = []
        if mode == "kad":
            lines.append("on a kademlia network (kad://), these commands work:")
        lines += [
            f"  {usage(spec.name, mode):<{width}}  {summary(spec.name, mode)}" for spec in specs
        ]
        others = [spec.name for spec in SPECS if not available(spec.name, mode)]
        if mode == "kad":
            lines.append(
                "not on a kademlia network: " + ", ".join(others) + " ('help CMD' says why); "
                "'attach HOST:PORT' goes back to a udpdht node"
            )
        else:
            lines.append(
                "on a kademlia network ('attach kad://HOST:PORT'): " + ", ".join(others) + " too"
            )
        lines.append("Tab completes commands, addresses and keys; Ctrl-D or 'quit' leaves.")
        return "\n".join(lines)
    spec = COMMANDS[ALIASES.get(topic, topic)]
    lines = [f"usage: {usage(spec.name, mode)}", f"  {summary(spec.name, mode)}"]
    if not available(spec.name, mode):
        lines.append("  " + unavailable(spec.name, mode))
    details = KAD_DETAILS.get(spec.name, spec.details) if mode == "kad" else spec.details
    if details:
        lines.append(textwrap.fill(details, 88, initial_indent="  ", subsequent_indent="  "))
    aliases = [alias for alias, target in ALIASES.items() if target == spec.name]
    if aliases:
        lines.append("  also: " + ", ".join(aliases))
    return "\n".join(lines)


# --- argument hints ----------------------------------------------------------------------------

# What follows an action of 'nodes', for the hint once the action is typed.
_ACTION_USAGE = {"add": ["[N]"], "kill": ["I"], "join": ["I"], "list": []}


def _usage_tokens(usage: str) -> list[str]:
    """The words of a usage line after the command name, a bracketed group as one word."""
    tokens: list[str] = []
    depth = 0
    current = ""
    for ch in usage.partition(" ")[2]:
        if ch == " " and depth == 0:
            if current:
                tokens.append(current)
            current = ""
            continue
        depth += (ch == "[") - (ch == "]")
        current += ch
    if current:
        tokens.append(current)
    return tokens


_VALUED = ("--ttl", "--limit", "--after", "--after-hex")  # options followed by a value


def _alternative(tokens: list[str], first: str) -> list[str]:
    """Of a usage's alternatives (``A [--opt X] | kad://A``), the one whose first word
    ``first`` is: the one whose literal prefix (``kad://``) it starts with, else the first
    one that has no such prefix."""
    alternatives: list[list[str]] = [[]]
    for token in tokens:
        if token == "|":
            alternatives.append([])
        else:
            alternatives[-1].append(token)
    for alt in alternatives:
        if alt and "://" in alt[0] and first.startswith(alt[0].partition("://")[0] + "://"):
            return alt
    return next((alt for alt in alternatives if alt and "://" not in alt[0]), alternatives[0])


def arg_hint(text: str, mode: str = "udpdht") -> str:
    """What is still to type after ``text``, as redis-cli hints it: ``put k`` -> `` VALUE
    [--json] [--ttl SECONDS]`` (on a kademlia network, ``mode`` kad: `` VALUE [--json]``).
    Empty when nothing is known to follow."""
    try:
        words = split(text)
    except CommandError:
        return ""
    if not words:
        return ""
    name = ALIASES.get(words[0], words[0])
    if name not in COMMANDS:
        return ""
    args = words[1:]
    typing = not text[-1:].isspace()  # the last word is still being typed
    if name == "watch" and len(args) >= 2:
        return arg_hint(" ".join(args[1:]) + ("" if typing else " "), mode)
    tokens = _usage_tokens(usage(name, mode))
    if "|" in tokens:  # (attach A [--cookie FILE] | kad://A): all, or the one being typed
        if not args:
            return (" " if typing else "") + " ".join(tokens)
        tokens = _alternative(tokens, args[0])
    if name == "nodes" and args and args[0] in _ACTION_USAGE:
        tokens, args = _ACTION_USAGE[args[0]], args[1:]
    positional = [t for t in tokens if not t.startswith("[--")]
    options = [t for t in tokens if t.startswith("[--")]
    count = 0
    used: set[str] = set()
    words_left = iter(args)
    for word in words_left:
        if word.startswith("--") and len(word) > 2:
            flag = word.partition("=")[0]
            used.add(flag)
            if flag in _VALUED and "=" not in word:
                next(words_left, None)
        else:
            count += 1
    if count > len(positional):
        return ""
    rest = positional[count:] + [t for t in options if t[1:-1].split()[0] not in used]
    if not rest:
        return ""
    return (" " if typing else "") + " ".join(rest)
