"""Fair share: when the accounts' concurrent-turn caps are the bottleneck, a flooding key does not starve a
steady one; turns wait for a slot, bounded, before a 429 (two gateway processes on one database)."""

import asyncio
import threading
import time

import httpx
import pytest
from websockets.sync.client import connect

from accounts.models import RequestLog, SlotWaiter
from tests.codex_turns import post_turns, session_headers, turn_body
from tests.factories import make_account, make_key, make_pool
from tests.support.pooler import PoolerServer
from tests.test_websocket_route import create_frame, read_turn, ws_headers

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 3  # POOLER_FAIR_SHARE_WAIT of both processes: seconds a turn may wait for a slot


@pytest.fixture(scope="module")
def gateways(django_db_setup, django_db_blocker, simulator):
    env = {"POOLER_AUTH_BASE_URL": simulator.url, "POOLER_FAIR_SHARE_WAIT": str(WAIT)}
    servers = [PoolerServer(extra_env=env), PoolerServer(extra_env=env)]
    yield servers
    for server in servers:
        server.close()


def slow_pool(simulator):
    """Two accounts of two concurrent turns each (four at once in all), every turn about a second long."""
    pool = make_pool()
    for _ in range(2):
        account = make_account(pool, simulator, max_concurrent=2, sim_fields={"percent_per_turn": 0.0})
        simulator.patch_account(
            account.chatgpt_account_id, faults=[{"kind": "slow", "event_delay": 0.1, "count": 1000}]
        )
    return pool


def rows_of(key, count: int):
    deadline = time.monotonic() + 10
    while RequestLog.objects.filter(api_key=key).count() < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return list(RequestLog.objects.filter(api_key=key))


def test_a_steady_key_is_served_while_another_floods(gateways, simulator):
    pool = slow_pool(simulator)
    flood_row, flood = make_key(pool)
    steady_row, steady = make_key(pool)
    simulator.reset_stats()

    async def post(client, server, key):
        response = await client.post(
            f"{server.codex_base_url}/responses", json=turn_body(), headers=session_headers(key)
        )
        await response.aread()
        return response

    async def steady_turns(client):
        await asyncio.sleep(0.5)  # the flood holds every slot by now
        timings = []
        for i in range(3):
            started = time.monotonic()
            response = await post(client, gateways[i % 2], steady)
            timings.append((response.status_code, time.monotonic() - started))
        return timings

    async def run():
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100)) as client:
            floods = [post(client, gateways[i % 2], flood) for i in range(24)]
            return await asyncio.gather(steady_turns(client), asyncio.gather(*floods))

    timings, flooded = asyncio.run(run())

    # Each steady turn waited at most the documented wait for its slot, then ran (about a second).
    assert [status for status, _ in timings] == [200, 200, 200]
    assert all(seconds < WAIT + 2 for _, seconds in timings), timings
    assert all(row.status_code == 200 and (row.queued_ms or 0) <= WAIT * 1000 for row in rows_of(steady_row, 3))

    # The flood was served as slots came free, and refused only after waiting its bound.
    statuses = [r.status_code for r in flooded]
    assert 200 in statuses and 429 in statuses, statuses
    refused = [r for r in flooded if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "pool_at_capacity" and int(r.headers["Retry-After"]) >= 1 for r in refused)
    rows = [r for r in rows_of(flood_row, 24) if r.status_code == 429]
    assert len(rows) == len(refused) and all(r.queued_ms >= WAIT * 1000 * 0.9 for r in rows)
    assert all(r.error_code == "pool_at_capacity" and r.outcome == "rejected" for r in rows)

    assert simulator.stats()["max_open_streams"] <= 4
    assert not SlotWaiter.objects.exists()


def test_a_client_gone_while_waiting_leaves_nothing_behind(gateways, simulator):
    pool = slow_pool(simulator)
    busy_row, busy = make_key(pool)
    leaver_row, leaver = make_key(pool)
    server = gateways[0]

    async def run():
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=20)) as client:
            holders = [
                asyncio.ensure_future(
                    client.post(f"{server.codex_base_url}/responses", json=turn_body(), headers=session_headers(busy))
                )
                for _ in range(4)
            ]
            await asyncio.sleep(0.5)
            with pytest.raises(httpx.ReadTimeout):
                await client.post(
                    f"{server.codex_base_url}/responses",
                    json=turn_body(),
                    headers=session_headers(leaver),
                    timeout=1.0,  # gives up while waiting for a slot
                )
            return await asyncio.gather(*holders)

    served = asyncio.run(run())
    assert [r.status_code for r in served] == [200] * 4
    [row] = rows_of(leaver_row, 1)
    assert row.status_code == 499 and row.outcome == "client_closed" and 0 < row.queued_ms < WAIT * 1000
    assert not SlotWaiter.objects.exists()


def test_a_websocket_turn_waits_for_a_slot_too(gateways, simulator):
    pool = slow_pool(simulator)
    _, busy = make_key(pool)
    steady_row, steady = make_key(pool)
    server = gateways[1]
    flood = threading.Thread(target=lambda: asyncio.run(post_turns([(server.codex_base_url, busy, None)] * 4)))
    flood.start()
    time.sleep(0.5)  # every slot taken
    url = server.codex_base_url.replace("http://", "ws://") + "/responses"
    with connect(url, additional_headers=ws_headers(steady)) as ws:
        ws.send(create_frame())
        events = read_turn(ws)
    flood.join()
    assert events[-1]["type"] == "response.completed"
    [row] = rows_of(steady_row, 1)
    assert row.transport == "websocket" and row.status_code == 200 and 0 < row.queued_ms <= WAIT * 1000
    assert not SlotWaiter.objects.exists()
