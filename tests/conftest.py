import pytest

from tests.support.pooler import PoolerServer

try:  # the simulator's fixtures: `simulator` (per module) and `codex_bin` (per run)
    from tests.support.sim_fixtures import *  # noqa: F403
except ImportError:  # pragma: no cover - while the simulator is being written
    pass


@pytest.fixture(scope="module")
def pooler(django_db_setup, django_db_blocker):
    """One real Daphne serving the pooler per test module, on the test database."""
    server = PoolerServer()
    yield server
    server.close()
