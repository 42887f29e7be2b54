"""Running ORM work from async code.

Every database step runs on the event loop's shared worker threads (not on a new thread per request),
and each of those threads keeps its own connection: no connection setup on the hot path, and a process
holds only a few connections however many streams it relays. channels' database_sync_to_async drops a
connection that went bad or too old around every call.
"""

from functools import partial

from channels.db import database_sync_to_async

on_db_thread = partial(database_sync_to_async, thread_sensitive=False)
