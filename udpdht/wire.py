"""The wire format: one msgpack array per datagram. Pure: no sockets, no clock.

PROTOCOL.md is the specification; this module is its reference implementation::

    request  [1, 0, rid, method, args]          rid: uint64, method: str, args: map str -> any
             [1, 0, rid, method, args, token]   token: bin, proves the sender receives (below)
    reply    [1, 1, rid, result]                result: any msgpack value
    error    [1, 2, rid, code, message]         code: int (errors.ErrorCode), message: str
             [1, 2, rid, code, message, data]   data: map, details for the caller (e.g. where
                                                 to go instead)
    retry    [1, 3, rid, token]                 "answer too large for an unproven address:
                                                 send the request again with this token"
    working  [1, 4, rid, elapsed_ms]            "still running your request (for this long)":
                                                 the answer to a resend of a slow call

The decoder is strict: anything else, including bytes msgpack accepts but that do not have this
shape, raises :class:`~udpdht.errors.DecodeError` and nothing else, so the receive path needs
exactly one ``except``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, NamedTuple

import msgpack

from .errors import DecodeError, DhtError, EncodeError, MessageTooLarge, ValueTooLarge

# (Final: compiled code, README "A compiled build", reads them as constants.)
VERSION: Final = 1

REQUEST: Final = 0
REPLY: Final = 1
ERROR: Final = 2
RETRY: Final = 3
WORKING: Final = 4  # (the answers are the kinds REPLY to WORKING)

#: The largest UDP payload over IPv4; nothing larger can be one datagram.
MAX_MESSAGE = 65507
MAX_METHOD = 64
MAX_ERROR_MESSAGE = 1000
MAX_RID = (1 << 64) - 1
MAX_TOKEN = 32


class Request(NamedTuple):
    rid: int
    method: str
    args: dict[str, Any]
    token: bytes | None = None  # the address token the responder handed out (rpc.py)


class Reply(NamedTuple):
    rid: int
    result: Any


class ErrorReply(NamedTuple):
    rid: int
    code: int
    message: str
    data: dict[str, Any] | None = None  # details a method adds (PROTOCOL.md §7)


class Retry(NamedTuple):
    """The responder's answer would be too large for an address that has not shown it
    receives: the caller sends the request again with ``token`` (QUIC's Retry, in spirit)."""

    rid: int
    token: bytes


class Working(NamedTuple):
    """The responder is still running this request (a resend of it arrived): the caller
    knows it is alive and busy, not gone, and keeps waiting (rpc.py, PROTOCOL.md §6)."""

    rid: int
    elapsed_ms: int


Message = Request | Reply | ErrorReply | Retry | Working


_STR_ONLY = {str}


def _reject_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"extension type {code} is not allowed")


# One packer, reused: building one per message costs more than the packing itself.
# Packer.pack resets its buffer when it raises, so a failed encode leaves no residue.
_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def _encode(obj: Any, limit: int, too_large: type[DhtError], what: str) -> bytes:
    try:
        data: bytes = _packer.pack(obj)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"{what} cannot be encoded: {exc}") from None
    if len(data) > limit:
        raise too_large(f"{what} of {len(data):,} bytes exceeds {limit:,}")
    return data


def _pack(obj: list[Any]) -> bytes:
    return _encode(obj, MAX_MESSAGE, MessageTooLarge, "message")


def encode_request(
    rid: int, method: str, args: dict[str, Any], token: bytes | None = None
) -> bytes:
    # Refuse here what the peer's decoder would drop: the caller gets an error, not a timeout.
    if not 0 < len(method) <= MAX_METHOD:
        raise EncodeError(f"method name must be 1..{MAX_METHOD} characters")
    if not 0 <= rid <= MAX_RID:
        raise EncodeError("request id must be a 64-bit unsigned integer")
    names: Iterable[object] = args  # (objects: compiled, a str loop variable raised TypeError)
    for k in names:
        if type(k) is not str:
            raise EncodeError("request argument names must be str")
    if token is None:
        return _pack([VERSION, REQUEST, rid, method, args])
    if not 0 < len(token) <= MAX_TOKEN:
        raise EncodeError(f"a token is 1..{MAX_TOKEN} bytes")
    return _pack([VERSION, REQUEST, rid, method, args, token])


#: A harmless request for ``net.unless_refused`` to send, from a socket of its own, to an
#: address that may have nothing listening: a ping.
PING_PROBE = encode_request(0, "ping", {})


def encode_reply(rid: int, result: Any) -> bytes:
    return _pack([VERSION, REPLY, rid, result])


def encode_error(rid: int, code: int, message: str, data: dict[str, Any] | None = None) -> bytes:
    body = [VERSION, ERROR, rid, int(code), message[:MAX_ERROR_MESSAGE]]
    return _pack(body if data is None else [*body, data])


def encode_retry(rid: int, token: bytes) -> bytes:
    return _pack([VERSION, RETRY, rid, token])


def encode_working(rid: int, elapsed_ms: int) -> bytes:
    return _pack([VERSION, WORKING, rid, max(0, min(int(elapsed_ms), MAX_RID))])


#: Lists and maps a user's value may nest at most: a value nested 500 deep, which msgpack
#: takes, made every reader that showed it fail (a helper's audit).
MAX_NESTING = 100


def too_deep(value: Any, most: int = MAX_NESTING) -> bool:
    """Whether ``value`` nests lists and maps more than ``most`` levels deep (no recursion)."""
    level: list[Any] = [value] if isinstance(value, (list, tuple, dict)) else []
    for _ in range(most):  # (``level``: the lists and maps one level deeper each time)
        below = [
            v
            for item in level
            if isinstance(item, (list, tuple, dict))
            for v in (item if not isinstance(item, dict) else (*item.keys(), *item.values()))
            if isinstance(v, (list, tuple, dict))
        ]
        if not below:
            return False
        level = below
    return True


def pack_value(value: Any, limit: int) -> bytes:
    """A user's value as stored: its msgpack encoding, at most ``limit`` bytes, and nested at
    most MAX_NESTING levels (ValueTooLarge otherwise)."""
    if too_deep(value):
        raise ValueTooLarge(f"a value nests lists and maps {MAX_NESTING} levels deep at most")
    return _encode(value, limit, ValueTooLarge, "value")


def unpack_value(data: bytes) -> Any:
    """The inverse of pack_value (DecodeError for bytes that are not one msgpack value)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_reject_ext)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"stored value is not msgpack: {type(exc).__name__}") from None


def decode(data: bytes) -> Message:
    """Parse one datagram, or raise DecodeError."""
    if len(data) > MAX_MESSAGE:
        raise DecodeError(f"datagram of {len(data)} bytes exceeds {MAX_MESSAGE}")
    try:
        msg = msgpack.unpackb(
            data,
            raw=False,
            # Values may be any msgpack map, int keys included, as Python users expect. The
            # hash-flooding worry behind msgpack's strict default does not apply: at most a
            # dozen 64-bit ints share a hash. Request arguments are still checked for str keys.
            strict_map_key=False,
            ext_hook=_reject_ext,
        )  # unpackb caps every container and string at len(data): no huge allocations
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises a dozen types for bad input; all mean the same
        raise DecodeError(f"not msgpack: {type(exc).__name__}") from None
    if type(msg) is not list or not 4 <= len(msg) <= 6:
        raise DecodeError("not a udpdht message (expected an array of 4 to 6)")
    version, kind, rid = msg[0], msg[1], msg[2]
    # Never repr() an untrusted field: ~1000 nested arrays would overflow the stack.
    if type(version) is not int or version != VERSION:
        raise DecodeError(f"unsupported protocol version ({type(version).__name__})")
    if type(kind) is not int:
        raise DecodeError(f"message kind is a {type(kind).__name__}, not an int")
    if type(rid) is not int or not 0 <= rid <= MAX_RID:
        raise DecodeError("request id is not a 64-bit unsigned integer")
    if kind == REQUEST and len(msg) >= 5:
        method, args = msg[3], msg[4]
        if type(method) is not str or not 0 < len(method) <= MAX_METHOD:
            raise DecodeError("method is not a short string")
        # Every key's type exactly str (set(map(...)) is the fast way to ask on each datagram).
        if type(args) is not dict or (args and set(map(type, args)) != _STR_ONLY):
            raise DecodeError("request arguments are not a map with string keys")
        if len(msg) == 5:
            return Request(rid, method, args)
        return Request(rid, method, args, _token(msg[5]))
    if kind == REPLY and len(msg) == 4:
        return Reply(rid, msg[3])
    if kind == RETRY and len(msg) == 4:
        return Retry(rid, _token(msg[3]))
    if kind == WORKING and len(msg) == 4:
        elapsed = msg[3]
        if type(elapsed) is not int or not 0 <= elapsed <= MAX_RID:
            raise DecodeError("a working message's elapsed time is an unsigned integer")
        return Working(rid, elapsed)
    if kind == ERROR and len(msg) in (5, 6):
        code, message = msg[3], msg[4]
        if type(code) is not int or type(message) is not str:
            raise DecodeError("error reply needs an integer code and a string message")
        if len(msg) == 5:
            return ErrorReply(rid, code, message)
        if type(msg[5]) is not dict:
            raise DecodeError("an error reply's details are a map")
        return ErrorReply(rid, code, message, msg[5])
    raise DecodeError(f"unknown message kind {kind} or wrong length {len(msg)}")


def holds_more_than(value: Any, limit: int) -> bool:
    """Whether decoded ``value`` is more than ``limit`` values, counting itself and everything
    in it (a map's keys and values). Containers are counted by their length before anything
    in them is looked at: 64,000 empty maps cost one look."""
    count = 1
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            count += 2 * len(item)
            if count > limit:
                return True
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            count += len(item)
            if count > limit:
                return True
            stack.extend(item)
    return False


def _token(raw: Any) -> bytes:
    if type(raw) is not bytes or not 0 < len(raw) <= MAX_TOKEN:
        raise DecodeError(f"a token is 1..{MAX_TOKEN} bytes of bin")
    return raw
