"""The client commands the shell also has: ``ring``, ``ping``, ``keys``, ``leave``, ``shutdown``.

Each command's parser is built by its own small function (``add_ring``, ``add_ping``, ...) that
:func:`udpdht.cli.build_parser` calls; building them loads only argparse (``--help`` stays
fast, tests/test_startup.py). What a command runs, the client and the event loop, is imported
when it runs. Text output reuses the shell's formatting (udpdht/render.py), so the CLI and the
shell show a ring or a ping the same way.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .cli import (
    UsageError,
    _client,
    _client_command,
    _run,
    _width,
    _within,
    show_answer,
    show_ring_picture,
)

if TYPE_CHECKING:
    from .client import Client
    from .net import Address

LEAVE_WAIT = 10.0  # seconds `leave` / `shutdown` wait for the node to stop answering
RING_LIMIT = 64  # nodes a ring walk lists by default


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError(f"expected a number 1..100000, got {text!r}")
    return int(text)


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")


# --- ring ----------------------------------------------------------------------------------------


def add_ring(sub: Any) -> argparse.ArgumentParser:
    p = _client_command(sub, "ring", "list the ring's nodes in ring order, with their keys")
    p.add_argument(
        "--limit",
        type=_count,
        default=RING_LIMIT,
        metavar="N",
        help=f"list at most N nodes (default {RING_LIMIT})",
    )
    _json_flag(p)
    p.add_argument(
        "--draw",
        action="store_true",
        help="draw the ring as a picture: the id circle, keys per node, the node's fingers",
    )
    p.add_argument("--svg", metavar="FILE", help="write that picture to FILE as SVG")
    p.add_argument(
        "--width",
        type=_width,
        metavar="N",
        help="columns of the picture (default 80, or the terminal's width if narrower)",
    )
    p.set_defaults(func=cmd_ring)
    return p


def ring_json(
    entries: list[dict[str, Any]], attached: str, limit: int | None = None
) -> dict[str, Any]:
    """``ring --json``: the nodes, and what the text says under them (a new user's trial: a
    script saw neither the key total nor whether repair was under way)."""
    from . import render

    nodes = []
    for st in entries:
        if "error" in st:
            nodes.append({"addr": st["addr"], "error": st["error"], "attached": False})
            continue
        nodes.append(
            {
                "id": st["id"],
                "addr": st["addr"],
                "attached": st["addr"] == attached,
                "isolated": bool(st.get("isolated", False)),
                "predecessor": st["predecessor"]["addr"] if st["predecessor"] else None,
                "primary": st["store"]["primary"],
                "replica": st["store"]["replica"],
                "full": bool(st["store"].get("full", False)),  # its quota refused records lately
                "settled": bool(st.get("settled", True)),
            }
        )
    return {
        "attached": attached,
        "nodes": nodes,
        "keys": render.key_total(entries, limit),
        "notes": render.ring_lines(entries, attached, limit=limit, notes_only=True),
    }


async def _ring(args: argparse.Namespace) -> int:
    import json

    from . import render

    if args.json and (args.draw or args.svg):
        # (It printed the picture and ignored --json: a new user's trial.)
        raise UsageError(f"give --json or {'--draw' if args.draw else '--svg'}, not both")
    async with _client(args) as client:
        entries = await client.ring(args.limit)
    attached = entries[0]["addr"]
    if args.draw or args.svg:
        await show_ring_picture(args, entries[0], entries[1:], limit=args.limit)
    elif args.json:
        print(json.dumps(ring_json(entries, attached, args.limit)))
    else:
        print(
            "\n".join(
                render.ring_lines(entries, attached, limit=args.limit, marked="the node asked")
            )
        )
    return 0


def cmd_ring(args: argparse.Namespace) -> int:
    return _run(_within(args, _ring(args)))


# --- ping ----------------------------------------------------------------------------------------


def add_ping(sub: Any) -> argparse.ArgumentParser:
    p = _client_command(sub, "ping", "a node's round-trip time and id, and whether it is isolated")
    _json_flag(p)
    p.set_defaults(func=cmd_ping)
    return p


async def _ping(args: argparse.Namespace) -> int:
    from . import render

    return await show_answer(args, lambda client: client.ping_info(), render.ping_text)


def cmd_ping(args: argparse.Namespace) -> int:
    return _run(_within(args, _ping(args)))


# --- keys ----------------------------------------------------------------------------------------


def add_keys(sub: Any) -> argparse.ArgumentParser:
    p = _client_command(sub, "keys", "list the keys a node holds, a page at a time")
    p.add_argument(
        "--limit",
        type=_count,
        default=100,
        metavar="N",
        help="list at most N keys (default 100); the last line says how to ask for the next page",
    )
    after = p.add_mutually_exclusive_group()
    after.add_argument(
        "--after",
        metavar="KEY",
        help="start after this key (the one the previous page ended with)",
    )
    after.add_argument(
        "--after-hex",
        metavar="HEX",
        type=_hex_key,
        help="the same for a key that is not UTF-8 text (kademlia's hashed keys), in hex",
    )
    _json_flag(p)
    p.set_defaults(func=cmd_keys)
    return p


async def _keys(args: argparse.Namespace) -> int:
    import json
    import time

    from . import render

    async with _client(args) as client:
        st = await client.status()
        after = args.after if args.after is not None else args.after_hex
        found, nxt = await client.keys(args.limit, after=after)
    rows = render.key_rows(found, st)
    next_text = None if nxt is None else render.key_text(nxt)
    if args.json:
        out = {
            "node": st["addr"],
            "keys": rows,
            "next": next_text,
            "next_hex": None if nxt is None else nxt.hex(),
        }
        print(json.dumps(out))
        return 0
    more = None if nxt is None else f"add {render.next_page(nxt, _shell_quote)}"
    lines = render.keys_lines(st["addr"], rows, time.time(), after=after, more=more)
    print("\n".join(lines))
    return 0


def _hex_key(text: str) -> bytes:
    from . import render

    try:
        return render.hex_key(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def cmd_keys(args: argparse.Namespace) -> int:
    return _run(_within(args, _keys(args)))


# --- leave, shutdown (admin: the node's cookie) --------------------------------------------------


def _admin_command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    p = _client_command(sub, name, help_text)
    p.add_argument(
        "--cookie",
        metavar="FILE",
        help="the node's cookie file, or its data dir (default, for a node on this host: "
        "'cookie' in its default data dir, $XDG_DATA_HOME/udpdht/PORT/cookie)",
    )
    _json_flag(p)
    return p


def add_leave(sub: Any) -> argparse.ArgumentParser:
    p = _admin_command(sub, "leave", "make a node hand its keys over, leave the ring and exit")
    p.set_defaults(func=cmd_leave)
    return p


def add_shutdown(sub: Any) -> argparse.ArgumentParser:
    p = _admin_command(sub, "shutdown", "stop a node at once, without handing its keys over")
    p.set_defaults(func=cmd_shutdown)
    return p


def _cookie(args: argparse.Namespace, node: Address) -> bytes:
    """The cookie from --cookie, or the one a node on this host keeps where its environment
    puts its data dir (admin.local_cookie_path)."""
    from .admin import local_cookie_path, read_cookie

    if args.cookie is not None:
        try:
            return read_cookie(args.cookie)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    path = local_cookie_path(*node)
    if path is not None:
        try:
            return read_cookie(path)
        except ValueError:
            pass
        where = f"none readable at {path}"
    else:
        where = "a node on another host keeps it in its data dir"
    raise UsageError(
        f"{args.command} needs the node's cookie ({where}): pass --cookie FILE, or the node's "
        "data dir (--cookie DIR)"
    )


async def _until_silent(client: Client, within: float) -> bool:
    """Whether the client's node stopped answering within ``within`` seconds."""
    import asyncio

    from .errors import DhtError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        try:
            await asyncio.wait_for(client.endpoint.call(client.addr, "ping", tries=1), 0.5)
        except (DhtError, TimeoutError):
            return True
        await asyncio.sleep(0.1)
    return False


async def _admin(args: argparse.Namespace) -> int:
    import json

    from .net import format_addr

    async with _client(args) as client:
        # Asked first: a port where nothing runs says so, not that its cookie is lacking (a
        # new user's trial, a typo in the port: "leave needs the node's cookie", exit 2).
        info = await client.ping_info()
        client.cookie = _cookie(args, args.node)
        st = await client.status()
        if args.command == "leave":
            await client.leave()
        else:
            await client.shutdown()
        stopped = await _until_silent(client, LEAVE_WAIT)
    addr = info["addr"] or format_addr(args.node)
    alone = not st["successors"] and not st["predecessors"] and not st.get("isolated")
    if args.json:
        print(
            json.dumps(
                {
                    "addr": addr,
                    "id": info["id"],
                    "command": args.command,
                    "stopped": stopped,
                    "alone": alone,
                }
            )
        )
        return 0 if stopped else 1
    who = f"{addr} (id {info['id'][:8]})"
    if not stopped:
        print(
            f"udpdht: error: {who} accepted '{args.command}' but still answers after "
            f"{LEAVE_WAIT:g} s",
            file=sys.stderr,
        )
        return 1
    from . import render

    print(render.admin_done(who, args.command, alone))
    return 0


def cmd_leave(args: argparse.Namespace) -> int:
    return _run(_within(args, _admin(args)))


cmd_shutdown = cmd_leave
