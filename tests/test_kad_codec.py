"""Tests of udpdht.kad.codec, the `kademlia` package's datagram format (rpcudp 5.x).

Round trips, byte-for-byte agreement with what rpcudp itself sends (``umsgpack``), and the
decoder's one promise: any bytes give a message or ``DecodeError``, nothing else.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest
import umsgpack  # type: ignore[import-untyped]  # rpcudp's codec, installed with kademlia
from hypothesis import given, settings
from hypothesis import strategies as st

from udpdht.errors import DecodeError, EncodeError, MessageTooLarge
from udpdht.kad import codec
from udpdht.kad.codec import KadReply, KadRequest

ids = st.binary(min_size=20, max_size=20)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.binary(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    msg_id=ids,
    method=st.text(min_size=1, max_size=codec.MAX_METHOD),
    args=st.lists(values, max_size=codec.MAX_ARGS),
)
def test_request_round_trip_and_matches_rpcudp(msg_id: bytes, method: str, args: list[Any]) -> None:
    data = codec.encode_request(msg_id, method, args)
    # rpcudp builds b"\x00" + id + umsgpack.packb([name, args]); the bytes must be the same
    assert data == b"\x00" + msg_id + umsgpack.packb([method, args])
    assert codec.decode(data) == KadRequest(msg_id, method, args)


@given(msg_id=ids, result=values)
def test_reply_round_trip(msg_id: bytes, result: Any) -> None:
    data = codec.encode_reply(msg_id, result)
    assert data == b"\x01" + msg_id + umsgpack.packb(result)
    assert codec.decode(data) == KadReply(msg_id, result)


@settings(max_examples=300)
@given(data=st.binary(max_size=200))
def test_any_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        codec.decode(data)


@given(body=values, first=st.sampled_from([0, 1]))
def test_any_msgpack_body_decodes_or_raises_decode_error(body: Any, first: int) -> None:
    try:
        msg = codec.decode(bytes((first,)) + os.urandom(20) + umsgpack.packb(body))
    except DecodeError:
        return
    if first == 0:
        assert isinstance(msg, KadRequest) and isinstance(msg.args, list)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 21,  # header only
        b"\x02" + bytes(20) + umsgpack.packb(["ping", []]),  # unknown kind
        b"\x00" + bytes(20) + umsgpack.packb(["ping"]),  # not [method, args]
        b"\x00" + bytes(20) + umsgpack.packb([1, []]),  # method not a str
        b"\x00" + bytes(20) + umsgpack.packb(["x" * 33, []]),  # method too long
        b"\x00" + bytes(20) + umsgpack.packb(["ping", {}]),  # args not an array
        b"\x00" + bytes(20) + umsgpack.packb(["ping", list(range(9))]),  # too many args
        b"\x00" + bytes(20) + umsgpack.packb(["store", [b"x" * 9000]]),  # over rpcudp's 8 KiB
        b"\x01" + bytes(20) + b"\xc1",  # never-used msgpack byte
        b"\x01" + bytes(20) + b"\xd4\x01\x00",  # an extension type
        b"\x01" + bytes(20) + b"\xdd\xff\xff\xff\xff",  # an array claiming 4 G items
        b"\x01" + bytes(20) + b"\x91" * 5000 + b"\xc0",  # deep nesting
    ],
)
def test_hostile_datagrams_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(data)


def test_is_kad_tells_the_protocols_apart() -> None:
    from udpdht import wire

    assert codec.is_kad(codec.encode_request(bytes(20), "ping", [bytes(20)]))
    assert codec.is_kad(codec.encode_reply(bytes(20), True))
    assert not codec.is_kad(wire.encode_request(1, "ping", {}))
    assert not codec.is_kad(wire.encode_reply(1, None))
    assert not codec.is_kad(b"")


def test_encoder_refuses_what_rpcudp_refuses() -> None:
    with pytest.raises(MessageTooLarge, match="at most 8192"):
        codec.encode_request(bytes(20), "store", [bytes(20), bytes(20), b"x" * 8200])
    with pytest.raises(EncodeError):
        codec.encode_request(b"short", "ping", [])
    with pytest.raises(EncodeError):
        codec.encode_reply(bytes(20), object())


def test_contacts_keep_well_formed_ones_only() -> None:
    good = [bytes(20), "127.0.0.1", 7000]
    raw = [
        good,
        [b"short", "127.0.0.1", 1],
        [bytes(20), "127.0.0.1", 70000],
        "junk",
        [bytes(20), 5, 1],
    ]
    assert codec.contacts(raw) == [(bytes(20), "127.0.0.1", 7000)]
    many = [[bytes([i]) * 20, "127.0.0.1", 7000 + i] for i in range(100)]
    assert len(codec.contacts(many)) == codec.K
    # One address under many ids (or one id at many addresses) counts once: a lookup must not
    # be steered into sending one victim a question per claimed id.
    same_addr = [[bytes([i]) * 20, "127.0.0.1", 7000] for i in range(20)]
    assert codec.contacts(same_addr) == [(bytes(20), "127.0.0.1", 7000)]
    same_id = [[bytes(20), "127.0.0.1", 7000 + i] for i in range(20)]
    assert codec.contacts(same_id) == [(bytes(20), "127.0.0.1", 7000)]
    with pytest.raises(DecodeError):
        codec.contacts({"value": 1})


def test_check_value_names_the_refused_type() -> None:
    for ok in (1, 1.5, True, "s", b"b"):
        codec.check_value(ok)
    with pytest.raises(TypeError, match="not list"):
        codec.check_value([1, 2])
    with pytest.raises(TypeError, match="not NoneType"):
        codec.check_value(None)
