"""One exception hierarchy for the whole package.

Like h11, errors split into two families:

* *local* errors: this process cannot do what it was asked (a call timed out, an argument is
  out of range, a value is too large to send);
* *remote* errors: the peer answered with an error reply (``RemoteError`` and its subclasses),
  or sent bytes we could not decode (``DecodeError``).

Every remote error carries a numeric ``code`` that travels on the wire (see PROTOCOL.md); the
RPC layer turns an error reply back into the matching subclass with :func:`remote_error`.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    """Codes carried by error replies (PROTOCOL.md, "Error replies")."""

    BAD_REQUEST = 1  # the request was well formed msgpack but its arguments were wrong
    UNKNOWN_METHOD = 2  # no handler for that method name
    INTERNAL = 3  # the handler failed; the message says how
    UNAUTHORIZED = 4  # an admin request without a valid cookie HMAC
    NOT_FOUND = 5  # the key has no live value
    TOO_LARGE = 6  # the value or key exceeds the limits
    BUSY = 7  # not now: every handler is taken, or the node is still opening its store
    UNAVAILABLE = 8  # the nodes that hold the key could not be reached; try again later
    STORE_FULL = 9  # the node's store quota (--max-store-bytes), or its disk, has no room
    RATE_LIMITED = 10  # the sender's write budget is spent for now; slow down
    NOT_RESPONSIBLE = 11  # the key is not this node's by its own view; details say whose


class DhtError(Exception):
    """Base class of every error udpdht raises on purpose."""


class DecodeError(DhtError):
    """Bytes that are not a valid udpdht message (the only error the decoder raises)."""


class RpcTimeout(DhtError):
    """A request got no reply after all its tries."""

    def __init__(self, addr: tuple[str, int], method: str, tries: int, elapsed: float) -> None:
        self.addr = addr
        self.method = method
        self.tries = tries
        self.elapsed = elapsed
        host, port = addr
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(
            f"node {shown} did not answer {method!r} after {tries} "
            f"tr{'y' if tries == 1 else 'ies'} ({elapsed:.1f} s)"
        )


class SendFailed(RpcTimeout):
    """The request could not be sent at all: an address this socket cannot reach. To the
    caller that is a peer that never answers (hence the subclass), but it fails at once."""

    def __init__(self, addr: tuple[str, int], method: str, reason: str) -> None:
        DhtError.__init__(self, f"cannot send {method!r} to {addr[0]!r} port {addr[1]}: {reason}")
        self.addr = addr
        self.method = method
        self.reason = reason
        self.tries = 0
        self.elapsed = 0.0


class Refused(RpcTimeout):
    """Nothing listens at the address: its host answered a probe with ICMP "port unreachable"
    (a client learns this in a fraction of a second instead of waiting out every try)."""

    def __init__(self, addr: tuple[str, int], method: str, elapsed: float) -> None:
        host, port = addr
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        DhtError.__init__(self, f"nothing listens at {shown} (port unreachable): {method!r}")
        self.addr = addr
        self.method = method
        self.tries = 1
        self.elapsed = elapsed


#: What reading a node's answer of the wrong shape raises (a field missing, of another type,
#: nested too deep, a time out of range): the CLI and the shell say so in one line instead
#: of a traceback.
UNREADABLE = (KeyError, TypeError, AttributeError, IndexError, OverflowError, RecursionError)


class BadAnswer(DhtError):
    """A node's answer that makes no sense (a field missing, of the wrong type or out of
    range): the node is broken, or not what it claims to be."""


class TooManyPending(DhtError):
    """The endpoint already has its maximum of requests in flight."""


class MessageTooLarge(DhtError):
    """An outgoing message would not fit in one datagram."""


class EncodeError(DhtError, TypeError):
    """A value msgpack cannot represent (a set, an object, an int over 64 bits...)."""


class RemoteError(DhtError):
    """The peer answered with an error reply; ``data``: the details it added, if any (a map
    that travels with the error, e.g. where to go instead)."""

    default_code = ErrorCode.INTERNAL

    def __init__(
        self, message: str, code: int | None = None, data: dict[str, Any] | None = None
    ) -> None:
        self.code = int(code if code is not None else self.default_code)
        self.message = message
        self.data = data
        super().__init__(message)


class BadRequest(RemoteError):
    default_code = ErrorCode.BAD_REQUEST


class UnknownMethod(RemoteError):
    default_code = ErrorCode.UNKNOWN_METHOD


class Unauthorized(RemoteError):
    default_code = ErrorCode.UNAUTHORIZED


class KeyNotFound(RemoteError):
    default_code = ErrorCode.NOT_FOUND


class ValueTooLarge(RemoteError):
    """A key or value over the limits; raised locally before sending when we can tell."""

    default_code = ErrorCode.TOO_LARGE


class Busy(RemoteError):
    default_code = ErrorCode.BUSY


class Unavailable(RemoteError):
    """No live route to a key, or none of its replicas answered: the ring is repairing."""

    default_code = ErrorCode.UNAVAILABLE


class NotResponsible(Busy):
    """The node asked does not hold the key by its own view (the ring moved on): ``data`` may
    name the nodes it believes do (``{"nodes": [peer, ...]}``, owner first). A Busy, so that
    whoever retries a Busy retries this too."""

    default_code = ErrorCode.NOT_RESPONSIBLE


class StoreFull(RemoteError):
    """The node's store quota (or the disk under it) has no room for this write."""

    default_code = ErrorCode.STORE_FULL


class RateLimited(RemoteError):
    """The sender has used up its write budget at this node for now."""

    default_code = ErrorCode.RATE_LIMITED


_BY_CODE: dict[int, type[RemoteError]] = {
    cls.default_code: cls
    for cls in (
        BadRequest,
        UnknownMethod,
        Unauthorized,
        KeyNotFound,
        ValueTooLarge,
        Busy,
        Unavailable,
        StoreFull,
        RateLimited,
        NotResponsible,
    )
}


def remote_error(code: int, message: str, data: dict[str, Any] | None = None) -> RemoteError:
    """The exception a caller sees for an error reply with this code."""
    return _BY_CODE.get(code, RemoteError)(message, code, data)
