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
    if is_kad(stripped):
        rest = stripped[len(SCHEME) :]
        try:
            host, port = parse_addr(rest)
        except ValueError as exc:
            raise ValueError(f"{exc} (after {SCHEME})") from None
        return KadAddr(host, port)
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
