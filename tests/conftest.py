import pytest
from django.db import connection

from tests.support.pooler import PoolerServer
from tests.support.sim_fixtures import *  # noqa: F403  (`simulator` per module, `codex_bin` per run)


@pytest.fixture(scope="module")
def pooler(django_db_setup, django_db_blocker, simulator):
    """One real Daphne serving the pooler per test module, on the test database, with the simulator's auth."""
    server = PoolerServer(extra_env={"POOLER_AUTH_BASE_URL": simulator.url})
    yield server
    server.close()


@pytest.fixture(scope="module")
def second_pooler(django_db_setup, django_db_blocker, simulator):
    """Another gateway process on the same database, for what must hold across processes."""
    server = PoolerServer(extra_env={"POOLER_AUTH_BASE_URL": simulator.url})
    yield server
    server.close()


@pytest.fixture(scope="session", autouse=True)
def _drop_stray_connections_at_the_end(django_db_setup, django_db_blocker):
    """Worker threads of in-process consumers keep their connections; the test database drops only without them."""
    yield
    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
