"""The backend websocket route: a Channels consumer relaying Codex turns to one upstream websocket."""

import asyncio
import json
import time
import uuid

import pytest
import websockets
from channels.testing import WebsocketCommunicator
from websockets.sync.client import connect

from accounts.models import RequestLog
from pooler.asgi import application
from tests.codex_turns import turn_body
from tests.factories import make_account, make_key, make_pool

pytestmark = pytest.mark.django_db(transaction=True)


def ws_url(pooler) -> str:
    return pooler.codex_base_url.replace("http://", "ws://") + "/responses"


def ws_headers(key: str, session: str | None = None) -> dict:
    session = session or str(uuid.uuid4())
    return {
        "Authorization": f"Bearer {key}",
        "session-id": session,
        "originator": "codex_exec",
        "openai-beta": "responses_websockets=2026-02-06",
    }


def create_frame(text="hello", **extra) -> str:
    return json.dumps({"type": "response.create", **turn_body(text, **extra)})


def read_turn(ws) -> list[dict]:
    events = []
    while True:
        event = json.loads(ws.recv(timeout=20))
        events.append(event)
        if event["type"] in ("response.completed", "response.failed", "error"):
            return events


def reply(events) -> str:
    return "".join(e.get("delta", "") for e in events if e.get("type") == "response.output_text.delta")


def logs(count: int, timeout: float = 5, **filters) -> list[RequestLog]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = list(RequestLog.objects.filter(**filters).order_by("created_at"))
        if len(rows) >= count:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"expected {count} RequestLog rows for {filters}")


def test_prewarm_then_turns_on_one_connection(pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator)
    key_row, key = make_key(pool)
    simulator.clear_requests()
    with connect(ws_url(pooler), additional_headers=ws_headers(key)) as ws:
        ws.send(create_frame("warm", generate=False))
        prewarm = read_turn(ws)
        assert prewarm[-1]["type"] == "response.completed"
        ws.send(create_frame("first turn"))
        first = read_turn(ws)
        assert reply(first) == "echo: first turn"
        ws.send(
            json.dumps(
                {
                    "type": "response.create",
                    **turn_body("second turn"),
                    "previous_response_id": first[-1]["response"]["id"],
                    "input": [
                        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second turn"}]}
                    ],
                }
            )
        )
        assert reply(read_turn(ws)) == "echo: second turn"
    rows = logs(3, api_key=key_row)
    assert [r.is_prewarm for r in rows] == [True, False, False]
    assert all(r.transport == "websocket" and r.account == account and r.outcome == "ok" for r in rows)
    assert rows[1].total_tokens > 0
    seen = simulator.requests()
    assert all(r["transport"] == "websocket" for r in seen if r.get("kind") in ("turn", "prewarm"))


def test_handshake_quota_counts_for_the_first_turn_only(pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator, sim_fields={"primary_used_percent": 20.0})
    key_row, key = make_key(pool)
    with connect(ws_url(pooler), additional_headers=ws_headers(key)) as ws:
        ws.send(create_frame("first"))
        read_turn(ws)
        logs(1, api_key=key_row)
        account.refresh_from_db()
        assert 20.0 <= account.primary_used_percent < 30.0
        # A newer snapshot seen elsewhere (say an HTTP turn of another agent), then a turn whose events say
        # nothing of quota: the headers of this old handshake must not undo it.
        type(account).objects.filter(pk=account.pk).update(primary_used_percent=55.0)
        simulator.patch_account(account.chatgpt_account_id, faults=[{"kind": "no_rate_limits"}])
        ws.send(create_frame("second"))
        assert reply(read_turn(ws)) == "echo: second"
    logs(2, api_key=key_row)
    account.refresh_from_db()
    assert account.primary_used_percent == 55.0


def test_a_turn_the_pooler_cannot_record_still_gets_its_answer(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    key_row, key = make_key(pool)
    with connect(ws_url(pooler), additional_headers=ws_headers(key)) as ws:
        # PostgreSQL cannot store a NUL byte: this turn's row fails to be written.
        ws.send(create_frame("odd", model="gpt-5.2\x00"))
        refused = read_turn(ws)
        assert [e["type"] for e in refused] == ["error"] and refused[0]["status"] == 400
        assert "Traceback" not in json.dumps(refused)
        ws.send(create_frame("still here"))
        assert reply(read_turn(ws)) == "echo: still here"
    assert logs(1, api_key=key_row, outcome="ok")


@pytest.mark.parametrize("pause", [0, 0.3], ids=["at-once", "after-a-pause"])
def test_an_upstream_closed_between_turns_is_reopened_on_the_same_account(pooler, simulator, pause):
    pool = make_pool(strategy="fill_first")
    account = make_account(pool, simulator, membership={"priority": 0})
    make_account(pool, simulator, membership={"priority": 1})
    key_row, key = make_key(pool)
    simulator.patch_account(account.chatgpt_account_id, faults=[{"kind": "hang_up"}])
    simulator.clear_requests()
    with connect(ws_url(pooler), additional_headers=ws_headers(key)) as ws:
        ws.send(create_frame("one"))
        first = read_turn(ws)
        time.sleep(pause)  # the backend closes its idle connection
        ws.send(create_frame("two", previous_response_id=first[-1]["response"]["id"]))
        assert reply(read_turn(ws)) == "echo: two"
    rows = logs(2, api_key=key_row)
    assert [(r.account, r.migrated_from, r.outcome) for r in rows] == [(account, None, "ok")] * 2
    account.refresh_from_db()
    assert account.cooldown_until is None and not account.last_error
    assert len(simulator.requests(kind="connect", account_id=account.chatgpt_account_id)) == 2
    # On the new connection the turn went out whole: no chain to a response that connection never saw.
    assert simulator.requests(kind="turn", status=200)[-1]["previous_response_id"] is None


def test_a_bad_key_is_refused_before_accept(pooler, simulator):
    with pytest.raises(websockets.InvalidStatus) as refused:
        connect(ws_url(pooler), additional_headers=ws_headers("cpk_bad_key"))
    assert refused.value.response.status_code in (401, 403)


def test_usage_limit_on_the_first_turn_fails_over(pooler, simulator):
    pool = make_pool()
    limited = make_account(pool, simulator, sim_fields={"primary_used_percent": 100.0}, primary_used_percent=0.0)
    healthy = make_account(pool, simulator, primary_used_percent=30.0)
    key_row, key = make_key(pool)
    with connect(ws_url(pooler), additional_headers=ws_headers(key)) as ws:
        ws.send(create_frame("moved"))
        events = read_turn(ws)
    assert reply(events) == "echo: moved" and all(e["type"] != "error" for e in events)
    row = logs(1, api_key=key_row)[0]
    assert row.account == healthy and [a["account_id"] for a in row.attempts] == [limited.id, healthy.id]


def test_fifty_concurrent_websocket_sessions_complete(pooler, simulator):
    pool = make_pool()
    for _ in range(3):
        make_account(pool, simulator, sim_fields={"percent_per_turn": 0.01})
    key_row, key = make_key(pool)

    async def session(i: int) -> str:
        async with websockets.connect(ws_url(pooler), additional_headers=ws_headers(key)) as ws:
            await ws.send(create_frame(f"session {i}"))
            text = ""
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 30))
                text += event.get("delta", "") if event["type"] == "response.output_text.delta" else ""
                if event["type"] in ("response.completed", "response.failed", "error"):
                    return text

    async def all_sessions():
        return await asyncio.gather(*(session(i) for i in range(50)))

    replies = asyncio.run(all_sessions())
    assert replies == [f"echo: session {i}" for i in range(50)]
    assert len(logs(50, timeout=15, api_key=key_row)) == 50


async def test_consumer_refuses_without_a_key():
    communicator = WebsocketCommunicator(application, "/backend-api/codex/responses")
    connected, _ = await communicator.connect()
    assert not connected


async def test_consumer_relays_a_turn(simulator):
    from asgiref.sync import sync_to_async

    def seed():
        pool = make_pool()
        make_account(pool, simulator)
        return make_key(pool)[1]

    key = await sync_to_async(seed)()
    communicator = WebsocketCommunicator(
        application, "/backend-api/codex/responses", headers=[(b"authorization", f"Bearer {key}".encode())]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_to(text_data=create_frame("via communicator"))
    text = ""
    while True:
        event = json.loads(await communicator.receive_from(timeout=20))
        text += event.get("delta", "") if event["type"] == "response.output_text.delta" else ""
        if event["type"] == "response.completed":
            break
    assert text == "echo: via communicator"
    await communicator.disconnect()


def test_a_paused_account_stops_serving_an_open_connection(pooler, simulator):
    pool = make_pool(strategy="fill_first")
    first = make_account(pool, simulator, membership={"priority": 0})
    second = make_account(pool, simulator, membership={"priority": 1})
    key_row, key = make_key(pool)
    with connect(ws_url(pooler), additional_headers=ws_headers(key)) as ws:
        ws.send(create_frame("before"))
        assert reply(read_turn(ws)) == "echo: before"
        first.status = "paused"  # the operator pauses it while the agent keeps its connection open
        first.save(update_fields=["status"])
        ws.send(create_frame("after"))
        assert reply(read_turn(ws)) == "echo: after"
    rows = logs(2, api_key=key_row)
    assert [row.account for row in rows] == [first, second]
    assert rows[1].migrated_from == first and rows[1].migration_reason == "paused"
