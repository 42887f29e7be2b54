"""Relaying an upstream body: what arrived while the last piece was being sent goes on as one piece.

The backend sends each SSE event as an HTTP chunk of its own, and the upstream client hands them on one by
one. Sent on one by one, every event would cost a pass through Django's streaming response, Daphne and
Twisted; when the events come faster than that (the burst that ends a turn, a fast model, a busy process)
they queue up in the upstream client's buffer anyway. Here a task of its own reads the upstream, and the
relay takes everything read since it last sent, so the cost goes with the client's writes, not the events.
Nothing is held back: a piece goes on as soon as the relay is free, however small it is.
"""

import asyncio
from collections.abc import AsyncIterator

# How much may wait for the relay before the reader stops reading (the client's connection sets the pace).
_MAX_WAITING = 256 * 1024


class _Backlog:
    """The chunks read and not yet sent. Each side waits on a future of its own only while it has to: an open
    stream holds no more than these slots (it waits for the model for most of its life)."""

    __slots__ = ("chunks", "size", "relay_waits", "reader_waits")

    def __init__(self):
        self.chunks: list[bytes] = []
        self.size = 0
        self.relay_waits: asyncio.Future | None = None
        self.reader_waits: asyncio.Future | None = None

    async def fill(self, source: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in source:
                self.chunks.append(chunk)
                self.size += len(chunk)
                _wake(self.relay_waits)
                if self.size >= _MAX_WAITING:
                    self.reader_waits = asyncio.get_running_loop().create_future()
                    await self.reader_waits
        finally:
            _wake(self.relay_waits)  # the end, or an error, wakes the relay too

    async def arrival(self) -> None:
        self.relay_waits = asyncio.get_running_loop().create_future()
        try:
            await self.relay_waits
        finally:
            self.relay_waits = None

    def take(self) -> bytes:
        piece = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.size = 0
        _wake(self.reader_waits)
        return piece


def _wake(waiter: asyncio.Future | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def coalesced(source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The bytes of `source`, joined where they arrived while the consumer was busy. An error of the reader
    (an upstream cut) is raised after the bytes read before it; closing this closes the reader."""
    backlog = _Backlog()
    reader = asyncio.ensure_future(backlog.fill(source))
    try:
        while True:
            if backlog.chunks:
                yield backlog.take()
            elif reader.done():
                reader.result()  # raises what ended the reading, if anything did
                return
            else:
                await backlog.arrival()
    finally:
        if not reader.done():
            reader.cancel()
            await asyncio.wait([reader])
        if not reader.cancelled():
            reader.exception()  # seen: a relay closed early has no use for the reader's error
