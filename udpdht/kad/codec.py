"""The `kademlia` package's wire format (rpcudp 5.x). Pure: no sockets, no clock.

One datagram is one message::

    request   b"\\x00" + msg_id (20 bytes) + msgpack([method, [args...]])
    reply     b"\\x01" + msg_id (20 bytes) + msgpack(result)

Replies are matched to requests by ``msg_id`` only; rpcudp never resends and its sender
refuses request bodies over 8,192 bytes. udpdht's own datagrams are one msgpack array, so
their first byte is 0x9_ (``wire.py``): the first byte tells the two protocols apart on one
socket (:func:`is_kad`).

The RPCs of `kademlia` 2.2 (``kademlia/protocol.py``), the caller's 20-byte node id first:

    ping(id)                 -> the callee's id
    store(id, key, value)    -> True
    find_node(id, key)       -> [[id, ip, port], ...] (at most k = 20)
    find_value(id, key)      -> {"value": v}, or what find_node returns
    stun()                   -> the caller's [ip, port]

Ids and keys are 20-byte SHA-1 digests, distance is XOR. Values are int, float, bool, str or
bytes only (:func:`check_value`).

As in ``wire.py`` the decoder is strict: anything but these shapes raises
:class:`~udpdht.errors.DecodeError` and nothing else.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from ..errors import DecodeError, EncodeError, MessageTooLarge

REQUEST = 0x00
REPLY = 0x01
ID_BYTES = 20
HEADER = 1 + ID_BYTES
#: rpcudp's sender refuses a request body (method and arguments) larger than this.
MAX_REQUEST_BODY = 8192
#: The largest UDP payload over IPv4.
MAX_MESSAGE = 65507
MAX_METHOD = 32
MAX_ARGS = 8
#: k in `kademlia`: how many contacts a find_node returns and how many nodes keep a value.
K = 20
#: What `kademlia` can store and read back (a list breaks its own get).
VALUE_TYPES = (int, float, bool, str, bytes)

NodeId = bytes
Contact = tuple[bytes, str, int]  # (node id, ip, port)


class KadRequest(NamedTuple):
    msg_id: bytes
    method: str
    args: list[Any]


class KadReply(NamedTuple):
    msg_id: bytes
    result: Any


KadMessage = KadRequest | KadReply


def is_kad(data: bytes) -> bool:
    """Whether a datagram is rpcudp's (its first byte is 0x00 or 0x01), not udpdht's."""
    return len(data) > 0 and data[0] <= REPLY


def _reject_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"extension type {code} is not allowed")


_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def _pack(obj: Any) -> bytes:
    try:
        data: bytes = _packer.pack(obj)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(f"message cannot be encoded: {exc}") from None
    return data


def _check_id(msg_id: bytes) -> None:
    if type(msg_id) is not bytes or len(msg_id) != ID_BYTES:
        raise EncodeError(f"a message id is {ID_BYTES} bytes")


def encode_request(msg_id: bytes, method: str, args: list[Any] | tuple[Any, ...]) -> bytes:
    """A request datagram; refuses what rpcudp's own sender would (bodies over 8,192 bytes)."""
    _check_id(msg_id)
    if not 0 < len(method) <= MAX_METHOD:
        raise EncodeError(f"method name must be 1..{MAX_METHOD} characters")
    body = _pack([method, list(args)])
    if len(body) > MAX_REQUEST_BODY:
        raise MessageTooLarge(
            f"a kademlia request is at most {MAX_REQUEST_BODY} bytes; this one is {len(body)}"
        )
    return bytes((REQUEST,)) + msg_id + body


def encode_reply(msg_id: bytes, result: Any) -> bytes:
    _check_id(msg_id)
    data = bytes((REPLY,)) + msg_id + _pack(result)
    if len(data) > MAX_MESSAGE:
        raise MessageTooLarge(f"reply of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return data


def decode(data: bytes) -> KadMessage:
    """Parse one rpcudp datagram, or raise DecodeError."""
    if len(data) <= HEADER:
        raise DecodeError("too short for a kademlia message")
    if len(data) > MAX_MESSAGE:
        raise DecodeError(f"datagram of {len(data)} bytes exceeds {MAX_MESSAGE}")
    kind = data[0]
    if kind > REPLY:
        raise DecodeError("not a kademlia message (first byte is not 0 or 1)")
    if kind == REQUEST and len(data) - HEADER > MAX_REQUEST_BODY:  # before decoding it
        raise DecodeError(f"a kademlia request body is at most {MAX_REQUEST_BODY} bytes")
    msg_id = data[1:HEADER]
    try:
        body = msgpack.unpackb(
            data[HEADER:], raw=False, strict_map_key=False, ext_hook=_reject_ext
        )  # containers and strings are capped at len(data): no huge allocations
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises a dozen types for bad input; all mean the same
        raise DecodeError(f"not msgpack: {type(exc).__name__}") from None
    if kind == REPLY:
        return KadReply(msg_id, body)
    if type(body) is not list or len(body) != 2:
        raise DecodeError("a kademlia request is an array [method, args]")
    method, args = body
    if type(method) is not str or not 0 < len(method) <= MAX_METHOD:
        raise DecodeError("method is not a short string")
    if type(args) is not list or len(args) > MAX_ARGS:
        raise DecodeError(f"arguments are not an array of at most {MAX_ARGS}")
    return KadRequest(msg_id, method, args)


# --- the shapes inside requests and replies ---------------------------------------------------


def node_id(raw: Any) -> NodeId:
    """A 20-byte id or key from a message, or DecodeError."""
    if type(raw) is not bytes or len(raw) != ID_BYTES:
        raise DecodeError(f"an id or key is {ID_BYTES} bytes of bin")
    return raw


def contact(raw: Any) -> Contact:
    """One ``[id, ip, port]`` of a find_node answer, checked (host syntax, port range)."""
    from ..net import check_peer_addr

    if type(raw) is not list or len(raw) != 3:
        raise DecodeError("a contact is [id, ip, port]")
    nid, ip, port = raw
    try:
        host, port = check_peer_addr(ip, port)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"a contact's address is not usable: {exc}") from None
    return node_id(nid), host, port


def contacts(raw: Any) -> list[Contact]:
    """A find_node answer: at most K well-formed contacts, each id and each address once (bad
    ones and repeats are skipped: an answer naming one address under 20 ids must not make a
    lookup send it 20 questions)."""
    if type(raw) is not list:
        raise DecodeError("a find_node answer is an array of contacts")
    found: list[Contact] = []
    seen: set[object] = set()
    for item in raw[: 4 * K]:
        try:
            one = contact(item)
        except DecodeError:
            continue
        addr = one[1:]
        if one[0] in seen or addr in seen:
            continue
        seen.update((one[0], addr))
        found.append(one)
        if len(found) == K:
            break
    return found


def check_value(value: Any) -> None:
    """Refuse, with the reason, a value `kademlia` cannot keep (TypeError)."""
    if type(value) not in VALUE_TYPES:
        raise TypeError(
            f"kademlia stores only int, float, bool, str or bytes, not {type(value).__name__}"
        )


def distance(a: bytes, b: bytes) -> int:
    """Kademlia's XOR distance between two 20-byte ids."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
