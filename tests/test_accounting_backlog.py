"""Turns that end while the database is unreachable wait in memory for their rows, POOLER_ACCOUNTING_BUFFER of
them at most: past the bound a turn's row is dropped, counted in /metrics and said once per outage; the rest are
written, in order, once the database is back.

The database is really unreachable: this process's ORM is pointed at a private PostgreSQL that is stopped."""

import asyncio
import logging
import time
import uuid
from contextlib import contextmanager

import pytest
from django.db import connection
from prometheus_client import REGISTRY

from accounts.models import Pool
from proxy.accounting import Turn, finish
from tests.factories import make_key, make_pool
from tests.support.pgcluster import PrivateCluster, unavailable_reason

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))

FULL = "accounting backlog full"


@pytest.fixture(scope="module")
def cluster():
    server = PrivateCluster()
    server.create_pooler_database("pooler")
    yield server
    server.close()


@pytest.fixture
def on_cluster(cluster, django_db_blocker):
    """This process's ORM, every thread of it, on the private cluster's database (new connections only)."""
    settings_dict, saved = connection.settings_dict, dict(connection.settings_dict)
    connection.close()
    # One dict shared by the connections of every thread: the database threads connect there too.
    settings_dict.update(NAME="pooler", HOST="127.0.0.1", PORT=str(cluster.port), USER="postgres", PASSWORD="")
    with django_db_blocker.unblock():
        yield cluster
    connection.close()
    settings_dict.clear()
    settings_dict.update(saved)


@pytest.fixture
def key(on_cluster):
    return make_key(make_pool())[0]


@contextmanager
def said(logger: str):
    """The lines `logger` says meanwhile (the pooler's loggers do not propagate to pytest's)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger(logger).addHandler(handler)
    try:
        yield lines
    finally:
        logging.getLogger(logger).removeHandler(handler)


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def served(key, label: str) -> Turn:
    turn = Turn(request_id=f"{label}-{uuid.uuid4().hex[:8]}", route="codex.responses", key=key, model="gpt-5.2")
    turn.status_code, turn.outcome = 200, "ok"
    return turn


async def written_backlog(timeout: float = 30) -> None:
    """Until no turn waits (the drainer tries at 0.5 s, then backs off, at least every 10 s)."""
    deadline = time.monotonic() + timeout
    while sample("pooler_accounting_pending") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def written_in_order(cluster, label: str) -> list[tuple]:
    """The rows of the turns labelled `label`, in the order they were written: request id, time."""
    sql = f"SELECT request_id, created_at FROM accounts_requestlog WHERE request_id LIKE '{label}-%' ORDER BY id"
    return cluster.query("pooler", sql)


async def test_a_full_backlog_drops_counts_says_once_and_writes_the_rest_in_order(on_cluster, key, settings):
    cluster = on_cluster
    settings.POOLER_ACCOUNTING_BUFFER = 3
    dropped = sample("pooler_accounting_dropped_total")
    await finish(served(key, "before"))  # written at once; the database threads keep their connections
    assert len(written_in_order(cluster, "before")) == 1

    await asyncio.to_thread(cluster.stop)
    with said("pooler.requests") as lines:
        turns = [served(key, "outage") for _ in range(5)]
        for turn in turns:
            await finish(turn)
        assert sample("pooler_accounting_pending") == 3
        assert sample("pooler_accounting_dropped_total") == dropped + 2
        await asyncio.sleep(2)  # the backlog tries meanwhile and fails: it keeps its turns and says nothing more
        await finish(served(key, "outage"))
        assert sample("pooler_accounting_pending") == 3
        assert sample("pooler_accounting_dropped_total") == dropped + 3
        assert sum(FULL in line for line in lines) == 1

        await asyncio.to_thread(cluster.start)
        await written_backlog()
        assert sample("pooler_accounting_pending") == 0
        assert "accounting backlog written" in lines
    # The first three turns, in the order they ended, each at the time it ended; the dropped ones have no row.
    assert written_in_order(cluster, "outage") == [(turn.request_id, turn.ended_at) for turn in turns[:3]]

    # The next outage is said again.
    await asyncio.to_thread(cluster.stop)
    with said("pooler.requests") as lines:
        for _ in range(4):
            await finish(served(key, "again"))
        assert sum(FULL in line for line in lines) == 1
        await asyncio.to_thread(cluster.start)
        await written_backlog()
    assert len(written_in_order(cluster, "again")) == 3
    assert sample("pooler_accounting_dropped_total") == dropped + 4


@pytest.fixture
def deleted_key(on_cluster):
    """A key whose pool an operator deletes while its turn waits for its row."""
    key = make_key(make_pool())[0]
    Pool.objects.filter(pk=key.pool_id).delete()
    return key


async def test_a_row_that_cannot_be_written_leaves_the_backlog(on_cluster, key, deleted_key):
    cluster = on_cluster
    await asyncio.to_thread(cluster.stop)
    with said("pooler.requests") as lines:
        turns = [served(key, "kept"), served(deleted_key, "kept"), served(key, "kept"), served(deleted_key, "kept")]
        for turn in turns:
            await finish(turn)
        assert sample("pooler_accounting_pending") == 4
        await asyncio.to_thread(cluster.start)
        await written_backlog(timeout=15)
        assert sample("pooler_accounting_pending") == 0  # nothing waits, though the last one could not be written
        assert [line for line in lines if line.startswith("could not record turn")] == [
            f"could not record turn {turns[1].request_id}",
            f"could not record turn {turns[3].request_id}",
        ]
    assert [row[0] for row in written_in_order(cluster, "kept")] == [turns[0].request_id, turns[2].request_id]
