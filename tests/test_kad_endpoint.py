"""KadEndpoint (udpdht/kad/endpoint.py) alone, fed datagrams by hand: what a stranger can make
it keep or send."""

from __future__ import annotations

import asyncio
import os

from udpdht.kad import codec
from udpdht.kad.endpoint import KadConfig, KadEndpoint

Address = tuple[str, int]


def _endpoint(config: KadConfig) -> tuple[KadEndpoint, list[tuple[bytes, Address]]]:
    sent: list[tuple[bytes, Address]] = []

    def send(data: bytes, addr: Address) -> str | None:
        sent.append((data, addr))
        return None

    ep = KadEndpoint(config=config)
    ep.host(send, ("127.0.0.1", 7000))
    return ep, sent


async def test_the_reply_cache_is_bounded_in_bytes() -> None:
    # A stranger asking for a large value under ever new message ids must not make the node
    # keep every answer (a review measured 123 MB held with only an entry-count bound).
    config = KadConfig(reply_cache_bytes=1 << 20)
    ep, sent = _endpoint(config)
    big = b"x" * 60_000
    ep.serve("find_value", lambda addr, nid, key: {"value": big})
    for i in range(200):
        request = codec.encode_request(os.urandom(20), "find_value", [bytes(20), bytes(20)])
        ep.feed(request, ("127.0.0.9", 9000 + i))
    assert len(sent) == 200  # every request answered
    assert ep._recent_bytes <= config.reply_cache_bytes
    assert sum(len(d or b"") for d, _, _ in ep._recent.values()) == ep._recent_bytes


async def test_a_resent_request_is_answered_from_the_cache_and_a_reply_only_from_its_peer() -> None:
    ep, sent = _endpoint(KadConfig())
    runs = 0

    def ping(addr: Address, nid: bytes) -> bytes:
        nonlocal runs
        runs += 1
        return bytes(20)

    ep.serve("ping", ping)
    request = codec.encode_request(os.urandom(20), "ping", [bytes(20)])
    ep.feed(request, ("127.0.0.9", 9000))
    ep.feed(request, ("127.0.0.9", 9000))
    assert runs == 1 and len(sent) == 2 and sent[0][0] == sent[1][0]

    call = asyncio.ensure_future(ep.call(("127.0.0.5", 5000), "ping", bytes(20), deadline=1.0))
    await asyncio.sleep(0)  # the request goes out
    msg_id = codec.decode(sent[-1][0]).msg_id
    ep.feed(codec.encode_reply(msg_id, b"forged"), ("127.0.0.6", 5000))  # another address
    assert not call.done() and ep.stats.unexpected_replies == 1
    ep.feed(codec.encode_reply(msg_id, b"right"), ("127.0.0.5", 5000))
    assert await call == b"right"


async def test_replies_to_no_call_are_dropped_before_they_are_decoded() -> None:
    # The shell's kademlia client serves pings and stores (kademlia nodes call a client back),
    # so it cannot drop every request; but a reply is told by its message id first: 64 KB
    # of empty maps for no call of ours (or from another address) is not decoded.
    ep, sent = _endpoint(KadConfig())
    junk = codec.encode_reply(os.urandom(20), [{}] * 60_000)
    for _ in range(20):
        ep.feed(junk, ("127.0.0.9", 9000))
    call = asyncio.ensure_future(ep.call(("127.0.0.5", 5000), "ping", bytes(20), deadline=1.0))
    await asyncio.sleep(0)  # the request goes out
    msg_id = codec.decode(sent[-1][0]).msg_id
    ep.feed(codec.encode_reply(msg_id, [{}] * 60_000), ("127.0.0.6", 5000))  # another address
    assert ep.stats.unexpected_replies == 21
    assert ep.stats.received == 0 and ep.stats.dropped_malformed == 0  # none decoded
    ep.feed(codec.encode_reply(msg_id, b"right"), ("127.0.0.5", 5000))
    assert await call == b"right" and ep.stats.received == 1
