"""``udpdht get/put/lookup/ping --node kad://H:P``: the client commands on a kademlia network.

The same renderings as the native commands (a value by :mod:`udpdht.values`, a lookup by
udpdht/render_kad.py, which the shell's kademlia mode uses too), ``--json`` where the native
command has it. The other client commands, and options kademlia has no field for (``put
--ttl``, ``get --meta``), stop at once with one line saying why (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from .cli import UsageError, _parse_value, _within
from .kad.client import KadClient
from .kad.target import KAD_CLIENT_COMMANDS, cannot


def _run(coro: Coroutine[Any, Any, int]) -> int:
    from .net import run

    # The standard loop: uvloop's clock has millisecond resolution, too coarse for the trace.
    return run(coro, use_uvloop=False)


def command(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """What runs ``args.command`` against a kademlia network; UsageError if it cannot."""
    name = args.command
    if name not in KAD_CLIENT_COMMANDS:
        raise UsageError(cannot(name))
    if name == "put" and args.ttl is not None:
        raise UsageError(cannot("ttl"))
    if name == "get" and args.meta:
        raise UsageError(cannot("meta"))
    return {"get": cmd_get, "put": cmd_put, "lookup": cmd_lookup, "ping": cmd_ping}[name]


def _kad(args: argparse.Namespace) -> KadClient:
    """The client, with the user's kademlia id and port (kad/identity.py): each command is the
    same contact to the network, not a new one left behind."""
    from .kad.identity import claim

    host, port = args.node
    identity = claim()
    if args.tries:
        return KadClient((host, port), ping_tries=args.tries, identity=identity)
    return KadClient((host, port), identity=identity)


async def _get(args: argparse.Namespace) -> int:
    from .values import raw, show, to_json

    async with _kad(args) as kad:
        value, _ = await kad.get(args.key)
    if args.raw:
        data = raw(value)
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    elif args.json:
        print(to_json(value))
    else:
        print(show(value))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    return _run(_within(args, _get(args)))


async def _put(args: argparse.Namespace) -> int:
    from . import render_kad
    from .kad.client import NotSent, check_store

    value = _parse_value(args)
    try:
        check_store(args.key, value)
    except NotSent as exc:  # before anything is sent: a refusal, as a usage mistake (exit 2)
        raise UsageError(f"not sent: {exc}") from None
    async with _kad(args) as kad:
        result = await kad.put(args.key, value)
    print(render_kad.put_text(args.key, result))
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    return _run(_within(args, _put(args)))


async def _lookup(args: argparse.Namespace) -> int:
    from . import render_kad
    from .ids import digest

    async with _kad(args) as kad:
        trace = await kad.lookup(digest(args.key), method="find_value", stop_at_value=False)
    if args.json:
        print(json.dumps(render_kad.lookup_object(args.key, trace)))
    else:
        print("\n".join(render_kad.lookup_lines(args.key, trace)))
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    return _run(_within(args, _lookup(args)))


async def _ping(args: argparse.Namespace) -> int:
    from . import render_kad
    from .net import format_addr

    kad = _kad(args)
    try:
        node, rtt = await kad.open()
    finally:
        await kad.close()
    if args.json:
        info = {"addr": format_addr(node.addr), "id": node.hex, "rtt_s": rtt, "kademlia": True}
        print(json.dumps(info))
    else:
        print(render_kad.ping_text(node, rtt))
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    return _run(_within(args, _ping(args)))
