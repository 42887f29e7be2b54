"""Playing a turn's events out over time, with the scripted `slow` and `cut` faults; shared by both transports."""

import asyncio
import time

from .state import Stats


async def paced(events: list[dict], fault: dict | None, entry: dict, stats: Stats):
    """Yield the events (delayed as scripted) and record in `entry` how the stream ended.

    The outcome stays `client_closed` unless the loop finishes (`completed`) or a cut stops it (`cut`):
    a consumer that stops iterating because its client left closes this generator early.
    """
    first_delay = float((fault or {}).get("first_byte_delay", 0))
    event_delay = float((fault or {}).get("event_delay", 0))
    cut_after = int(fault.get("after_events", 3)) if fault and fault["kind"] == "cut" else None
    stats.stream_opened()
    entry["outcome"] = "client_closed"
    try:
        if first_delay:
            await asyncio.sleep(first_delay)
        for number, event in enumerate(events):
            if cut_after is not None and number >= cut_after:
                entry["outcome"] = "cut"
                return
            if number and event_delay:
                await asyncio.sleep(event_delay)
            elif number % 8 == 7:
                await asyncio.sleep(0)  # let concurrent streams interleave, as a real backend's would
            yield event
        entry["outcome"] = "completed"
    finally:
        stats.stream_closed()
        entry["ended"] = time.time()
