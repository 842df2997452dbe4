"""What each subcommand's ``--help`` says besides its options: a description and examples.

:func:`document` gives every subcommand of the ``udpdht`` parser its text from :data:`HELP`
(one place to read them all) and a formatter that keeps the examples' lines as written.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

# command -> (description, examples); a command's one-line summary is its help in the list.
HELP: dict[str, tuple[str, list[str]]] = {
    "node": (
        "Run a node in the foreground until Ctrl-C (SIGINT) or SIGTERM, which make it hand its "
        "keys to its successors and leave. Without --bootstrap it starts a new ring, or rejoins "
        "the ring its data dir remembers.",
        [
            "udpdht node --port 7000",
            "udpdht node --port 7001 --bootstrap 127.0.0.1:7000",
        ],
    ),
    "status": (
        "Show what a node knows: its id and address, its neighbours, fingers, store and RPC "
        "counters.",
        ["udpdht status --node 127.0.0.1:7000", "udpdht status --node 127.0.0.1:7000 --json"],
    ),
    "put": (
        "Store a value under a key, on every replica before returning; a replica that did not "
        "take it (no answer, or its store is full) is named in a warning. Any node of the ring "
        "can take the request. VALUE is a string; with --json it is JSON and may be any "
        'type (bytes as {"$bytes": "<base64>"}). From stdin (-) or --file FILE the value is '
        "the input's bytes, unless --text (a UTF-8 string) or --json says otherwise.",
        [
            "udpdht put --node 127.0.0.1:7000 greeting hello",
            "udpdht put --node 127.0.0.1:7000 config '{\"n\": 3}' --json --ttl 3600",
            "udpdht put --node kad://127.0.0.1:8468 greeting hello   # a kademlia network",
        ],
    ),
    "get": (
        "Print the value stored under a key; exit status 1 when the key has no value. A "
        'string prints as it is, any other type as (TYPE) JSON, so "42" and 42 differ; '
        "--json prints JSON only, --raw the bytes of a bytes value, --meta its version, "
        "writer and time to live.",
        [
            "udpdht get --node 127.0.0.1:7000 greeting",
            "udpdht get --node kad://127.0.0.1:8468 greeting   # a kademlia network",
        ],
    ),
    "delete": (
        "Delete a key (on every replica).",
        ["udpdht delete --node 127.0.0.1:7000 greeting"],
    ),
    "lookup": (
        "Find the node that owns a key, and show the hops the asked node took to find it.",
        [
            "udpdht lookup --node 127.0.0.1:7000 greeting",
            "udpdht lookup --node kad://127.0.0.1:8468 greeting   # kademlia's lookup, traced",
        ],
    ),
    "ring": (
        "Walk the ring from a node along its successors and list each node in ring order: its "
        "id, address and the keys it holds as primary and as replica. The asked node is "
        "marked with *; a node that does not answer is listed as such and the walk goes on.",
        [
            "udpdht ring --node 127.0.0.1:7000",
            "udpdht ring --node 127.0.0.1:7000 --draw        # the circle, in the terminal",
            "udpdht ring --node 127.0.0.1:7000 --svg ring.svg  # the same picture as an SVG",
            "udpdht ring --node 127.0.0.1:7000 --json",
        ],
    ),
    "ping": (
        "Ping a node: the round-trip time, its id, and whether it is isolated (it lost "
        "contact with its ring and is rejoining).",
        ["udpdht ping --node 127.0.0.1:7000", "udpdht ping --node kad://127.0.0.1:8468"],
    ),
    "keys": (
        "List the keys a node holds, as primary (it owns them) or replica, in ring order of "
        "their ids, a page at a time. Deleted keys are not listed. Another node's replica may "
        "hold a newer version than this one for a moment after a write.",
        [
            "udpdht keys --node 127.0.0.1:7000 --limit 20",
            "udpdht keys --node 127.0.0.1:7000 --limit 20 --after greeting",
        ],
    ),
    "leave": (
        "Make a node hand its keys to its successors, leave the ring and exit, then wait "
        "until it has (up to 10 s). An admin command: it needs the node's cookie.",
        [
            "udpdht leave --node 127.0.0.1:7000",
            "udpdht leave --node 10.0.0.5:7000 --cookie ./cookie-of-10.0.0.5",
        ],
    ),
    "shutdown": (
        "Stop a node at once, without handing its keys over (its replicas keep them while the "
        "ring repairs), as a crash would. An admin command: it needs the node's cookie.",
        ["udpdht shutdown --node 127.0.0.1:7000"],
    ),
    "cluster": (
        "Run N nodes in this one process, forming one ring, until Ctrl-C: a ring to try on "
        "one machine.",
        ["udpdht cluster 5", "udpdht cluster 5 --base-port 7000"],
    ),
    "shell": (
        "An interactive shell. Without --attach it starts an embedded ring of 5 nodes in "
        "this process to play with; with --attach it talks to a running node, or with "
        "--attach kad://H:P to a network of the kademlia package.",
        [
            "udpdht shell",
            "udpdht shell --attach 127.0.0.1:7000",
            "udpdht shell --attach kad://127.0.0.1:8468",
        ],
    ),
}

WIDTH = 78

CLIENT_NOTE = (
    "--node may be left out when $UDPDHT_NODE names the node. Exit status: 0 done, 1 the node "
    "said no or did not answer, 2 a mistake on the command line."
)


def document(sub: Any) -> None:
    """Give each subcommand of ``sub`` (the subparsers action) its description and examples."""
    choices: dict[str, argparse.ArgumentParser] = sub.choices
    for name, parser in choices.items():
        if name not in HELP:
            continue
        description, examples = HELP[name]
        # RawDescriptionHelpFormatter keeps lines as they are: wrap the prose here.
        parser.description = textwrap.fill(description, WIDTH)
        lines = ["examples:", *(f"  {e}" for e in examples)]
        if any(a.dest == "node" for a in parser._actions):
            lines += ["", textwrap.fill(CLIENT_NOTE, WIDTH)]
        parser.epilog = "\n".join(lines)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
