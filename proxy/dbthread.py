"""Running ORM work from async code, through database outages.

Every database step runs on the event loop's shared worker threads (not on a new thread per request; a plain
turn's own few statements run on the loop itself, loop_db.py),
and each of those threads keeps its own connection: no connection setup on the hot path, and a process
holds only a few connections however many streams it relays. channels' database_sync_to_async drops a
connection that went bad or too old around every call.

A kept connection can die with the server (a restart, a failover): its next statement fails. That step is
run once more on a new connection at once, instead of checking every connection with a `SELECT 1` before
every step. When the database cannot be reached at all, the step raises `DATABASE_DOWN` errors, which
callers answer with 503 (logged once per outage, never a traceback per request).
"""

import asyncio
import functools
import logging

from channels.db import database_sync_to_async
from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger("pooler.database")

# What an unreachable database or a connection that died raises (a query's own mistakes raise other errors).
DATABASE_DOWN = (OperationalError, InterfaceError)
_outage = {"now": False}  # whether this process has said the database is unreachable


def reconnecting(step):
    """`step`, run once more on a new connection when its kept connection died with the server."""

    @functools.wraps(step)
    def run(*args, **kwargs):
        try:
            result = step(*args, **kwargs)
        except DATABASE_DOWN:
            connection.close_if_unusable_or_obsolete()
            if connection.in_atomic_block or connection.connection is not None:
                raise  # the connection is alive: the error belongs to the statement
            try:
                result = step(*args, **kwargs)
            except DATABASE_DOWN as error:
                note_outage(error)
                raise
        note_reachable()
        return result

    return run


def note_reachable() -> None:
    """Say that the database answers again, once, after an outage was said."""
    if _outage["now"]:
        _outage["now"] = False
        log.warning("database reachable again")


def note_outage(error: Exception) -> None:
    """Say once per outage that the database is unreachable (each request answers 503 without a traceback)."""
    if not _outage["now"]:
        _outage["now"] = True
        log.error("database unreachable, answering 503 until it is back: %s", str(error).strip()[:300])


def on_db_thread(step):
    return database_sync_to_async(reconnecting(step), thread_sensitive=False)


async def run_to_end(step, *args):
    """A database step that runs to its end even when the client leaves meanwhile: a slot it takes must reach
    finish() to be freed, a wait it records must be ended."""
    task = asyncio.ensure_future(on_db_thread(step)(*args))
    try:
        return await asyncio.shield(task)
    finally:
        if not task.done():
            await asyncio.wait([task])
