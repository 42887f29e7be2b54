"""/metrics: Prometheus text that its own parser reads, counters that move with traffic, access protected."""

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.codex_turns import post_turns, session_headers, turn_body
from tests.factories import make_account, make_key, make_pool
from tests.support.pooler import PoolerServer

pytestmark = pytest.mark.django_db(transaction=True)


def samples(text: str) -> dict:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def total(found: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


def test_metrics_parse_and_move_with_traffic(pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator, primary_used_percent=12.0)
    _, key = make_key(pool)
    before = samples(httpx.get(f"{pooler.url}/metrics").text)
    for _ in range(3):
        assert (
            httpx.post(
                f"{pooler.codex_base_url}/responses", json=turn_body(), headers=session_headers(key), timeout=30
            ).status_code
            == 200
        )
    httpx.post(f"{pooler.codex_base_url}/responses", json=turn_body(), headers=session_headers("cpk_bad_bad"))
    after = samples(httpx.get(f"{pooler.url}/metrics").text)
    assert (
        total(after, "pooler_requests_total", route="codex.responses", status="200", pool=pool.name)
        - total(before, "pooler_requests_total", route="codex.responses", status="200", pool=pool.name)
        == 3
    )
    assert total(after, "pooler_ttft_seconds_count") - total(before, "pooler_ttft_seconds_count") == 3
    assert total(after, "pooler_upstream_attempts_total", outcome="ok") >= 3
    assert total(after, "pooler_account_eligible", pool=pool.name, account=account.label) == 1.0
    assert total(after, "pooler_account_quota_used_percent", account=account.label, window="primary") > 0
    assert total(after, "pooler_db_queries_total") > total(before, "pooler_db_queries_total")
    assert ("pooler_open_streams", ()) in after


def test_metrics_need_the_token_outside_allowed_networks(django_db_setup, django_db_blocker):
    server = PoolerServer(
        extra_env={"POOLER_METRICS_TOKEN": "metrics-secret", "POOLER_METRICS_ALLOWED_NETWORKS": "10.0.0.0/8"}
    )
    try:
        assert httpx.get(f"{server.url}/metrics").status_code == 401
        for guess in [b"Bearer wrong", b"Bearer metrics-secreT", "Bearer métrics-secret".encode("latin-1")]:
            denied = httpx.get(f"{server.url}/metrics", headers={"Authorization": guess})
            assert denied.status_code == 401 and denied.json()["error"]["code"] == "metrics_forbidden"
        ok = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer metrics-secret"})
        assert ok.status_code == 200 and "pooler_requests_total" in ok.text
    finally:
        server.close()


def test_failovers_refusals_and_model_lists_are_counted(pooler, simulator):
    pool = make_pool(strategy="fill_first")
    first = make_account(pool, simulator, membership={"priority": 0})
    make_account(pool, simulator, membership={"priority": 1})
    _, key = make_key(pool)
    simulator.patch_account(first.chatgpt_account_id, faults=[{"kind": "status", "status": 503}])
    before = samples(httpx.get(f"{pooler.url}/metrics").text)
    url = f"{pooler.codex_base_url}/responses"
    assert httpx.post(url, json=turn_body(), headers=session_headers(key), timeout=30).status_code == 200
    assert httpx.post(url, json=turn_body(), headers=session_headers("cpk_bad_bad")).status_code == 401
    assert httpx.get(f"{pooler.codex_base_url}/models", headers=session_headers(key), timeout=30).status_code == 200
    after = samples(httpx.get(f"{pooler.url}/metrics").text)

    def moved(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("pooler_failovers_total") == 1
    assert moved("pooler_upstream_attempts_total", outcome="status") == 1
    assert moved("pooler_turn_duration_seconds_count") == 1
    assert moved("pooler_requests_total", route="codex.responses", status="401") == 1
    assert moved("pooler_requests_total", route="codex.models", status="200", pool=pool.name) == 1
    assert ("pooler_open_websockets", ()) in after


def test_upstream_connections_are_reused_by_many_concurrent_sessions(pooler, simulator):
    """More concurrent streams than one pool keeps alive: a session's next turn still reuses a connection."""
    pool = make_pool()
    account = make_account(pool, simulator)
    _, key = make_key(pool)
    sessions = [f"reuse-{i}" for i in range(40)]  # above POOLER_UPSTREAM_KEEPALIVE_CONNECTIONS (32)
    opened = []
    for _ in range(2):
        # Every stream stays open a while, so all of a wave's turns are in flight together.
        simulator.patch_account(
            account.chatgpt_account_id, faults=[{"kind": "slow", "event_delay": 0.05, "count": len(sessions)}]
        )
        before = samples(httpx.get(f"{pooler.url}/metrics").text)
        assert asyncio.run(post_turns([(pooler.codex_base_url, key, s) for s in sessions])) == [200] * len(sessions)
        after = samples(httpx.get(f"{pooler.url}/metrics").text)
        opened.append(
            total(after, "pooler_upstream_connections_opened_total")
            - total(before, "pooler_upstream_connections_opened_total")
        )
    assert 0 < opened[0] <= len(sessions)
    assert opened[1] == 0
