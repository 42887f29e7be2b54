"""The probes answer on a real Daphne server."""

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_healthz_and_readyz(pooler):
    assert httpx.get(f"{pooler.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{pooler.url}/readyz").status_code == 200


def test_unknown_route_is_json_404(pooler):
    response = httpx.get(f"{pooler.url}/backend-api/codex/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
