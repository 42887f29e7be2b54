"""A plain turn's statements on the event loop, over psycopg's async connections (PostgreSQL only).

A plain turn reads its key, then the accounts it may go to with its session's pin, and writes its row: three
statements (a later turn on a websocket: its key and its connection's account). On the database threads
(dbthread.py) each step is a hop to a worker thread and back, and while a worker runs Python, every system call
of the loop's thread hands the GIL over and waits to get it back: about ten context switches and a fifth of the
pooler's CPU a turn (docs/operations.md, "Capacity"). Here they run on the loop. Only these statements, written
once as SQL (turn_reads.py, request_log.py), run here; a turn that needs anything more (a key with limits or
budgets, accounts with caps, a stale routing snapshot or price table, a pin or an account row to write) takes
the database threads as before.

Connections are opened on demand with Django's own parameters and adapters and set to its time zone, so a row
read here is the row the ORM reads; a few are kept per event loop, and they prepare their statements (behind
PgBouncer older than 1.21 in transaction mode, turn this off with POOLER_LOOP_DATABASE=false). No pool library:
psycopg_pool reconnects in the background on a backoff schedule, where a turn must hear 503 at once while the
server is down and be served as soon as it is back. As on the threads, a statement whose kept connection died
with the server runs once more on a new one, and an unreachable server raises Django's OperationalError
(dbthread.DATABASE_DOWN).
"""

import asyncio
import weakref

import psycopg
from django.conf import settings
from django.db import DatabaseError, OperationalError, connection

from . import dbthread, metrics

# Connections kept, and at most open, per event loop: statements are short, and turns wait for one meanwhile.
_MAX_CONNECTIONS = 8


def available() -> bool:
    """Whether turns use it: PostgreSQL, unless POOLER_LOOP_DATABASE is off."""
    return connection.vendor == "postgresql" and settings.POOLER_LOOP_DATABASE


class _Connections:
    def __init__(self):
        self.idle: list[psycopg.AsyncConnection] = []
        self.slots = asyncio.Semaphore(_MAX_CONNECTIONS)


_per_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connections]" = weakref.WeakKeyDictionary()


def _connections() -> _Connections:
    loop = asyncio.get_running_loop()
    if loop not in _per_loop:
        _per_loop[loop] = _Connections()
    return _per_loop[loop]


async def _connect() -> psycopg.AsyncConnection:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)  # Django's own cursor classes are sync
    # The same few statements on every turn: prepared once per connection (psycopg's default, after five runs),
    # which Django turns off unless its OPTIONS set a threshold.
    if "prepare_threshold" not in connection.settings_dict["OPTIONS"]:
        params.pop("prepare_threshold", None)
    new = await psycopg.AsyncConnection.connect(**params, autocommit=True)
    if new.info.parameter_status("TimeZone") != connection.timezone_name:
        await new.execute(connection.ops.set_time_zone_sql(), [connection.timezone_name])
    return new


async def fetch(sql: str, params, *, rows: bool = True) -> list | None:
    """Run one statement; its rows when `rows`."""
    metrics.DB_QUERIES.inc()  # counted as the threads' statements are
    pool = _connections()
    async with pool.slots:
        kept = bool(pool.idle)
        while True:
            try:
                link = pool.idle.pop() if kept else await _connect()
            except _GONE as error:
                raise OperationalError(str(error)) from None
            try:
                cursor = await link.execute(sql, params)
                result = await cursor.fetchall() if rows else None
            except _GONE as error:
                _let_go(link)
                if kept:  # it died with the server, perhaps long ago: once more on a new connection
                    kept = False
                    continue
                raise OperationalError(str(error)) from None
            except psycopg.Error as error:
                _keep(pool, link)
                raise DatabaseError(str(error)) from None
            except BaseException:  # cancelled midway: the connection's state is unknown
                _let_go(link)
                raise
            _keep(pool, link)
            dbthread.note_reachable()
            return result


# What an unreachable server or a connection that died raises.
_GONE = (psycopg.OperationalError, psycopg.InterfaceError)


def _keep(pool: _Connections, link: psycopg.AsyncConnection) -> None:
    if link.closed or link.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        _let_go(link)
    else:
        pool.idle.append(link)


def _let_go(link: psycopg.AsyncConnection) -> None:
    if not link.closed:
        asyncio.ensure_future(link.close())
