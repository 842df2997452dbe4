"""``kad://HOST:PORT``: an address that names a `kademlia` network instead of a udpdht node.

The CLI's ``--node`` (and ``$UDPDHT_NODE``), ``udpdht shell --attach`` and the shell's
``attach`` take it. :class:`KadAddr` is a ``(host, port)`` tuple, so everything that formats or
passes an address keeps working; ``isinstance(addr, KadAddr)`` tells the two apart.

Light on purpose (no asyncio, no msgpack): ``udpdht --help`` parses no address, but the parser
module imports this one.
"""

from __future__ import annotations

from typing import NamedTuple

SCHEME = "kad://"

#: Why a udpdht node cannot join through a kademlia node (``udpdht node --bootstrap``).
NOT_A_RING = (
    "a udpdht node joins a ring of udpdht nodes; kademlia's nodes can bootstrap from a udpdht "
    "node instead (docs/kademlia-interop.md)"
)
#: Why an admin cookie means nothing on a kademlia network (the shell's ``--cookie``).
NO_ADMIN = "a kademlia network has no admin commands: no --cookie for it"

#: What the kademlia protocol can do from the shell and the CLI (the rest say they cannot).
KAD_CLIENT_COMMANDS = ("get", "put", "lookup", "ping")


class KadAddr(NamedTuple):
    """A kademlia node to bootstrap from: ``kad://HOST:PORT``."""

    host: str
    port: int

    def __str__(self) -> str:
        return SCHEME + _shown(self.host, self.port)


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_kad(text: str) -> bool:
    return text.strip().lower().startswith(SCHEME)


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> ``(host, port)``; ``kad://HOST:PORT`` -> :class:`KadAddr`. ValueError
    with a clear message (the scheme named) for anything else."""
    from ..net import parse_addr  # asyncio: only once an address is parsed

    stripped = text.strip()
    mistyped = ValueError(
        f"bad address {text!r}: write {SCHEME}HOST:PORT, with two slashes, for a kademlia "
        "network (HOST:PORT alone is a udpdht node)"
    )
    if is_kad(stripped):
        rest = stripped[len(SCHEME) :]
        if rest.startswith("/"):  # kad:///H:P
            raise mistyped
        try:
            host, port = parse_addr(rest)
        except ValueError as exc:
            raise ValueError(f"{exc} (after {SCHEME})") from None
        return KadAddr(host, port)
    scheme, colon, rest = stripped.partition(":")
    if (
        "://" not in stripped
        and colon
        and ((scheme.lower() == "kad" and not rest.isdigit()) or rest.startswith("/"))
    ):
        raise mistyped  # kad:/H:P, kad:H:P (not an IPv6 address)
    if "://" in stripped:
        scheme = stripped.partition("://")[0]
        raise ValueError(
            f"bad address {text!r}: unknown scheme {scheme + '://'!r} (HOST:PORT is a udpdht "
            f"node, {SCHEME}HOST:PORT a kademlia network)"
        )
    return parse_addr(stripped)


def kad_text(addr: tuple[str, int]) -> str:
    """``kad://127.0.0.1:8468``."""
    return SCHEME + _shown(addr[0], addr[1])


#: Why the kademlia protocol cannot do a command, and what to use instead (one line each).
#: The shell and the CLI say these words; "ttl" is ``put --ttl``, "meta" ``get --meta``.
CANNOT: dict[str, str] = {
    "delete": "it has no delete request; its nodes keep a value until they drop it (a week, "
    "in the kademlia package), so 'put' the key again to replace the value",
    "ttl": "its store takes no TTL (its nodes keep a value a week and republish it hourly); "
    "put without --ttl",
    "meta": "it keeps no version, writer or expiry with a value; get without --meta",
    "status": "a kademlia node has no status request; 'ping' shows that it answers, and the "
    "shell's 'routing HOST:PORT' what its table holds",
    "stats": "a kademlia node has no counters to ask for; 'ping' shows that it answers",
    "ring": "a kademlia network is no ring to walk; the shell's 'routing' lists the contacts "
    "learned, by bucket, and 'routing HOST:PORT' probes a node's table",
    "leafset": "kademlia nodes have no leafset; 'routing HOST:PORT' probes a node's table",
    "fingers": "kademlia nodes have no fingers; 'routing HOST:PORT' probes a node's table",
    "keys": "it has no request that lists a node's keys; 'get KEY' reads one",
    "join": "it has no admin requests (a kademlia node joins by bootstrapping itself)",
    "leave": "it has no admin requests (a kademlia node cannot be told to leave)",
    "shutdown": "it has no admin requests (a kademlia node cannot be stopped from outside)",
    "nodes": "'nodes' manages the embedded udpdht ring; 'attach HOST:PORT' to one of its "
    "nodes first",
}


def cannot(command: str) -> str:
    """One line: the kademlia protocol cannot do ``command``, why, and what to use."""
    why = CANNOT.get(command, "it has no request for that")
    what = {"ttl": "put --ttl", "meta": "get --meta"}.get(command, command)
    return f"the kademlia protocol cannot do '{what}': {why}"
