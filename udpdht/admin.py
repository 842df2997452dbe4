"""Admin authentication: a per-node secret cookie and an HMAC over each admin request.

Admin methods (join, leave, shutdown) change what a node does, so only someone who can read the
node's cookie file may call them; get, put and status stay public. A request carries

    auth = [ts, nonce, mac]
    mac  = HMAC-SHA256(cookie, msgpack([method, ts, nonce, target, args]))

where ``target`` is the 20-byte id of the node the request is for and ``args`` are the other
arguments as sent. The node accepts a request only if the MAC matches with its own id as the
target, ``ts`` is within WINDOW seconds of its own wall clock, and it has not seen ``nonce`` in
that window, so a captured request can be replayed neither to the same node nor to another one
that shares the cookie. The cookie itself never travels.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import secrets
import socket
from collections import OrderedDict
from pathlib import Path
from typing import Any

import msgpack

from .errors import Unauthorized
from .limits import DEFAULT_PORT

COOKIE_FILE = "cookie"
COOKIE_BYTES = 32
WINDOW = 60.0  # seconds a signed request stays valid (and its nonce is remembered)
MAX_NONCES = 10_000


def default_data_dir(port: int) -> Path:
    """Where a node on ``port`` keeps its files unless told otherwise (README.md: `--data-dir`)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "udpdht" / str(port)


def on_this_host(host: str) -> bool:
    """Whether ``host`` (an IP literal, or "localhost") is an address of this machine: a
    loopback one, or one a socket here can bind (where that tells: _binds_any)."""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    if ip.is_unspecified or ip.is_multicast or _binds_any(ip.version):
        return False
    try:
        with socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


def _binds_any(version: int) -> bool:
    """Whether this host lets a socket bind addresses it does not own (Linux's
    ip_nonlocal_bind, on hosts with floating addresses): a bind then tells nothing (a
    reviewer's finding: another host's node was taken for ours, and its cookie tried)."""
    name = "ipv6/ip_nonlocal_bind" if version == 6 else "ipv4/ip_nonlocal_bind"
    try:
        return Path("/proc/sys/net", name).read_text().strip() != "0"
    except OSError:
        return False


def local_cookie_path(host: str, port: int) -> Path | None:
    """Where a node at ``host:port`` keeps its cookie when it runs on this machine (an address
    of it: on_this_host): the data dir this environment gives the node on that port
    (UDPDHT_DATA_DIR and UDPDHT_PORT, as in the Docker image), else the default one; None for
    another host's. (In a container, `udpdht leave` looked in the default place, not in the
    image's /data: an operator's trial. A node bound to this host's own address, not the
    loopback, was taken for another host's: a second one.)"""
    if not on_this_host(host):
        return None
    given = os.environ.get("UDPDHT_DATA_DIR")
    if given and (os.environ.get("UDPDHT_PORT", "").strip() or str(DEFAULT_PORT)) == str(port):
        return Path(given) / COOKIE_FILE
    return default_data_dir(port) / COOKIE_FILE


def find_cookie(host: str, port: int) -> bytes | None:
    """The cookie of a node at ``host:port`` on this machine, where local_cookie_path says it
    is, if we may read it."""
    path = local_cookie_path(host, port)
    try:
        return None if path is None else read_cookie(path)
    except ValueError:
        return None


def load_or_create_cookie(directory: Path) -> bytes:
    """The cookie in ``directory/cookie``, created (random, mode 0600) when missing."""
    path = directory / COOKIE_FILE
    if path.exists():
        return read_cookie(path)
    directory.mkdir(parents=True, exist_ok=True)
    cookie = secrets.token_bytes(COOKIE_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cookie.hex().encode() + b"\n")
    return cookie


def write_cookie(path: Path, cookie: bytes) -> None:
    """Write a cookie for local tools to find (mode 0600, replacing any older one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cookie.hex().encode() + b"\n")
    tmp.replace(path)


def read_cookie(path: str | os.PathLike[str]) -> bytes:
    """Read a cookie file (64 hex digits), or the one in a node's data dir when ``path`` is a
    directory; ValueError with a clear message otherwise."""
    path = Path(path)
    if path.is_dir():  # (a node started with --data-dir DIR keeps it in DIR/cookie)
        path = path / COOKIE_FILE
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read cookie file {path}: {exc.strerror or exc}") from None
    cookie = parse_cookie(raw)
    if cookie is None:
        raise ValueError(f"{path} is not a udpdht cookie file (expected {2 * COOKIE_BYTES} hex)")
    return cookie


def parse_cookie(text: bytes) -> bytes | None:
    """The cookie a cookie file's contents hold (64 hex digits, spaces around them allowed),
    or None when they are not one (a binary file neither: not a decode error)."""
    try:
        cookie = bytes.fromhex(text.decode("ascii").strip())
    except ValueError:  # UnicodeDecodeError included
        return None
    return cookie if len(cookie) == COOKIE_BYTES else None


def _mac(
    cookie: bytes, method: str, ts: float, nonce: bytes, target: bytes, args: dict[str, Any]
) -> bytes:
    body = msgpack.packb([method, ts, nonce, target, args], use_bin_type=True)
    return hmac.new(cookie, body, hashlib.sha256).digest()


def sign(
    cookie: bytes, method: str, args: dict[str, Any], now: float, target: bytes
) -> dict[str, Any]:
    """``args`` plus the ``auth`` field for an admin request to the node whose id is ``target``
    (20 bytes)."""
    nonce = secrets.token_bytes(16)
    return {**args, "auth": [now, nonce, _mac(cookie, method, now, nonce, target, args)]}


class Verifier:
    """Checks admin requests for one node (``target``: its 20-byte id), remembering recent
    nonces."""

    def __init__(self, cookie: bytes, target: bytes) -> None:
        self.cookie = cookie
        self.target = target
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def verify(self, method: str, args: dict[str, Any], now: float) -> dict[str, Any]:
        """The request's arguments without ``auth``; Unauthorized if it is not genuine."""
        auth = args.get("auth")
        if not (isinstance(auth, list) and len(auth) == 3):
            raise Unauthorized(
                "unauthorized: admin request without credentials (it needs the cookie)"
            )
        ts, nonce, mac = auth
        if type(ts) not in (int, float) or not math.isfinite(ts) or not isinstance(nonce, bytes):
            raise Unauthorized("unauthorized: malformed credentials")
        rest = {k: v for k, v in args.items() if k != "auth"}
        if not isinstance(mac, bytes) or not hmac.compare_digest(
            mac, _mac(self.cookie, method, ts, nonce, self.target, rest)
        ):
            raise Unauthorized(
                "unauthorized: the signature does not match "
                "(a wrong cookie, or a request signed for another node)"
            )
        if abs(now - ts) > WINDOW:
            raise Unauthorized(f"unauthorized: signed {now - ts:+.0f} s away from the node's clock")
        while self._seen and (
            next(iter(self._seen.values())) < now - WINDOW or len(self._seen) >= MAX_NONCES
        ):
            self._seen.popitem(last=False)
        if nonce in self._seen:
            raise Unauthorized("unauthorized: replayed request (this signature was used before)")
        self._seen[nonce] = float(ts)
        return rest
