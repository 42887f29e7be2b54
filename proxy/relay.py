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


async def coalesced(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The bytes of `chunks`, joined where they arrived while the consumer was busy. An error of the reader
    (an upstream cut) is raised after the bytes read before it; closing this closes the reader."""
    waiting: list[bytes] = []
    size = 0
    arrived, room = asyncio.Event(), asyncio.Event()
    room.set()

    async def read() -> None:
        nonlocal size
        try:
            async for chunk in chunks:
                waiting.append(chunk)
                size += len(chunk)
                arrived.set()
                if size >= _MAX_WAITING:
                    room.clear()
                    await room.wait()
        finally:
            arrived.set()  # the end, or an error, wakes the relay too

    reader = asyncio.ensure_future(read())
    try:
        while True:
            if not waiting:
                if reader.done():
                    reader.result()  # raises what ended the reading, if anything did
                    return
                arrived.clear()
                await arrived.wait()
                continue
            piece = waiting[0] if len(waiting) == 1 else b"".join(waiting)
            waiting.clear()
            size = 0
            room.set()
            yield piece
    finally:
        if not reader.done():
            reader.cancel()
            await asyncio.wait([reader])
        if not reader.cancelled():
            reader.exception()  # seen: a relay closed early has no use for the reader's error
