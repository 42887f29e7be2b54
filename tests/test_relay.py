"""proxy/relay.py: the relay joins what arrived while it was busy, and holds nothing back."""

import asyncio

import pytest

from proxy import relay


class Source:
    """An upstream body whose chunks the test hands over one at a time."""

    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.closed = False

    def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.queue.put_nowait(chunk)

    async def chunks(self):
        try:
            while (chunk := await self.queue.get()) is not None:
                if isinstance(chunk, Exception):
                    raise chunk
                yield chunk
        finally:
            self.closed = True


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def test_what_arrives_while_the_relay_is_busy_goes_on_as_one_piece():
    source = Source()
    pieces = relay.coalesced(source.chunks())
    source.send(b"a")
    assert await anext(pieces) == b"a"
    source.send(b"b", b"c", b"d")  # three events while the relay was sending the first
    await settle()
    assert await anext(pieces) == b"bcd"
    source.send(None)
    assert [piece async for piece in pieces] == []


async def test_nothing_is_held_back_for_more():
    source = Source()
    pieces = relay.coalesced(source.chunks())
    waiting = asyncio.ensure_future(anext(pieces))
    source.send(b"one event")
    # The piece comes while the upstream is still open and sends nothing more.
    assert await asyncio.wait_for(waiting, 1) == b"one event"
    await pieces.aclose()
    await settle()
    assert source.closed


async def test_an_upstream_cut_comes_after_the_bytes_read_before_it():
    source = Source()
    pieces = relay.coalesced(source.chunks())
    source.send(b"x", b"y", OSError("cut"))
    await settle()
    assert await anext(pieces) == b"xy"
    with pytest.raises(OSError, match="cut"):
        await anext(pieces)


async def test_closing_the_relay_stops_the_reading():
    source = Source()
    pieces = relay.coalesced(source.chunks())
    source.send(b"x")
    assert await anext(pieces) == b"x"
    await pieces.aclose()  # the client went away
    assert source.closed


async def test_the_reader_stops_while_too_much_waits(monkeypatch):
    monkeypatch.setattr(relay, "_MAX_WAITING", 10)
    source = Source()
    pieces = relay.coalesced(source.chunks())
    source.send(b"12345", b"67890", b"abc")
    assert await anext(pieces) == b"1234567890"
    assert source.queue.qsize() == 1  # 10 bytes waited: the reader waited for the relay before reading on
    assert await anext(pieces) == b"abc"
    await pieces.aclose()
