import pytest

from tests.support.pooler import PoolerServer
from tests.support.sim_fixtures import *  # noqa: F403  (`simulator` per module, `codex_bin` per run)


@pytest.fixture(scope="module")
def pooler(django_db_setup, django_db_blocker, simulator):
    """One real Daphne serving the pooler per test module, on the test database, with the simulator's auth."""
    server = PoolerServer(extra_env={"POOLER_AUTH_BASE_URL": simulator.url})
    yield server
    server.close()
