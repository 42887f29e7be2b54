"""Two pooler processes on one database behave as one: limits, concurrency, stickiness and refresh."""

import asyncio
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from accounts.models import ConcurrencySlot, RequestLog
from tests.codex_turns import post_turns, session_headers, turn_body
from tests.factories import make_account, make_key, make_pool

pytestmark = pytest.mark.django_db(transaction=True)


def turns_seen(simulator, account_ids: set[str]) -> int:
    return sum(1 for r in simulator.requests() if r["account_id"] in account_ids and r.get("kind") == "turn")


def test_rpm_limit_holds_across_two_processes(pooler, second_pooler, simulator):
    pool = make_pool()
    accounts = {
        make_account(pool, simulator, sim_fields={"percent_per_turn": 0.0}).chatgpt_account_id for _ in range(3)
    }
    key_row, key = make_key(pool, rpm=30)
    targets = [(p.codex_base_url, key, None) for p in (pooler, second_pooler) for _ in range(30)]
    statuses = asyncio.run(post_turns(targets))
    assert statuses.count(200) == 30 and statuses.count(429) == 30
    assert turns_seen(simulator, accounts) == 30
    refused = RequestLog.objects.filter(api_key=key_row, status_code=429)
    assert refused.count() == 30 and all(r.attempts == [] and r.error_code == "key_rpm_limit" for r in refused)


def test_concurrent_stream_limit_holds_and_slots_are_released(pooler, second_pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator)
    simulator.patch_account(account.chatgpt_account_id, faults=[{"kind": "slow", "event_delay": 0.2, "count": 7}])
    key_row, key = make_key(pool, max_concurrent=2)
    simulator.reset_stats()

    async def run(coroutines):
        return await asyncio.gather(*coroutines)

    async def full(client, server):
        response = await client.post(
            f"{server.codex_base_url}/responses", json=turn_body(), headers=session_headers(key)
        )
        return response.status_code

    async def abandoned(client, server):
        async with client.stream(
            "POST", f"{server.codex_base_url}/responses", json=turn_body(), headers=session_headers(key)
        ) as response:
            await anext(response.aiter_raw())  # then walk away mid-stream
            return response.status_code

    async def five_at_once():
        async with httpx.AsyncClient(timeout=60) as client:
            return await run([full(client, server) for server in (pooler, second_pooler) * 2 + (pooler,)])

    statuses = asyncio.run(five_at_once())
    assert sorted(statuses) == [200, 200, 429, 429, 429]
    assert simulator.stats()["max_open_streams"] <= 2

    async def two_abandoned():
        async with httpx.AsyncClient(timeout=60) as client:
            return await run([abandoned(client, pooler), abandoned(client, second_pooler)])

    assert asyncio.run(two_abandoned()) == [200, 200]
    deadline = time.monotonic() + 10
    while ConcurrencySlot.objects.filter(api_key=key_row).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ConcurrencySlot.objects.filter(api_key=key_row).exists()
    outcomes = [r["outcome"] for r in simulator.requests(account_id=account.chatgpt_account_id, kind="turn")]
    assert outcomes.count("client_closed") == 2 and simulator.stats()["open_streams"] == 0


def test_a_session_lands_on_one_account_via_either_process(pooler, second_pooler, simulator):
    pool = make_pool(strategy="round_robin")
    for _ in range(3):
        make_account(pool, simulator)
    key_row, key = make_key(pool)
    session = str(uuid.uuid4())
    for server in [pooler, second_pooler, pooler, second_pooler]:
        response = httpx.post(
            f"{server.codex_base_url}/responses",
            json=turn_body(session=session),
            headers=session_headers(key, session),
            timeout=30,
        )
        assert response.status_code == 200
    deadline = time.monotonic() + 5
    while RequestLog.objects.filter(api_key=key_row).count() < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert RequestLog.objects.filter(api_key=key_row).values("account").distinct().count() == 1


def test_an_expiring_token_is_refreshed_once_by_two_processes(pooler, second_pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator, token_expires_at=timezone.now() + timedelta(seconds=30))
    _, key = make_key(pool)
    targets = [(p.codex_base_url, key, None) for p in (pooler, second_pooler) for _ in range(8)]
    statuses = asyncio.run(post_turns(targets))
    assert statuses == [200] * 16
    assert simulator.get_account(account.chatgpt_account_id)["refresh_count"] == 1
    account.refresh_from_db()
    assert account.token_expires_at > timezone.now() + timedelta(minutes=10)


def test_tokens_per_day_counts_real_usage(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    _, key = make_key(pool, tokens_per_day=100)  # one 40-token-ish turn is fine; a body of ~2 KB is not
    url = f"{pooler.codex_base_url}/responses"
    first = httpx.post(url, json=turn_body("x" * 2000), headers=session_headers(key), timeout=30)
    assert first.status_code == 200
    time.sleep(0.3)
    refused = httpx.post(url, json=turn_body(), headers=session_headers(key), timeout=30)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "key_tokens_per_day_limit"
    assert int(refused.headers["Retry-After"]) > 0
