"""A session whose account runs out moves to another account without breaking (HTTP and websocket)."""

import json
import time
import uuid

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from websockets.sync.client import connect

from accounts.models import RequestLog, SessionAffinity
from tests.codex_turns import reply_text, session_headers, sse_events, turn_body
from tests.factories import make_account, make_key, make_pool

pytestmark = pytest.mark.django_db(transaction=True)


def completed_output(events: list[dict]) -> list[dict]:
    return next(e["response"]["output"] for e in events if e["type"] == "response.completed")


def history_after(body: dict, events: list[dict], next_text: str) -> dict:
    """The next turn's body as the CLI builds it: everything so far plus the new user message."""
    items = (
        body["input"]
        + completed_output(events)
        + [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": next_text}]}]
    )
    return {**body, "input": items}


def owner_and_spare(simulator):
    """A fill_first pool: sessions start on the first account and can move to the second; and a key."""
    pool = make_pool(strategy="fill_first")
    first = make_account(pool, simulator, membership={"priority": 0})
    second = make_account(pool, simulator, membership={"priority": 1})
    key_row, key = make_key(pool)
    return first, second, key_row, key


def user_message(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def ws_turn(ws, frame: dict) -> list[dict]:
    """Send one `response.create` and read its events up to the terminal one (or an error frame)."""
    ws.send(json.dumps({"type": "response.create", **frame}))
    events = []
    while True:
        events.append(json.loads(ws.recv(timeout=20)))
        if events[-1]["type"] in ("response.completed", "response.failed", "error"):
            return events


def nth_log(key_row, n: int, timeout=5) -> RequestLog:
    """The n-th RequestLog row of a key (1-based), waiting for it to be written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = list(RequestLog.objects.filter(api_key=key_row).order_by("created_at"))
        if len(rows) >= n:
            return rows[n - 1]
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} RequestLog rows")


def test_the_simulator_rejects_another_accounts_encrypted_history(simulator):
    first = simulator.add_account()
    second = simulator.add_account()
    body = turn_body("remember me")

    def post(account, payload):
        return httpx.post(
            f"{simulator.codex_base_url}/responses",
            json=payload,
            timeout=30,
            headers={"Authorization": f"Bearer {account['access_token']}", "chatgpt-account-id": account["account_id"]},
        )

    events = sse_events(post(first, body).text)
    assert any(item.get("encrypted_content") for item in completed_output(events) if item["type"] == "reasoning")
    follow_up = history_after(body, events, "again")
    assert post(first, follow_up).status_code == 200
    refused = post(second, follow_up)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_encrypted_content"


def test_http_session_migrates_with_its_history_rewritten(pooler, simulator):
    first, second, key_row, key = owner_and_spare(simulator)
    session = str(uuid.uuid4())
    body = turn_body("one", session=session)
    url = f"{pooler.codex_base_url}/responses"
    events = sse_events(httpx.post(url, json=body, headers=session_headers(key, session), timeout=30).text)
    assert nth_log(key_row, 1).account == first
    simulator.patch_account(first.chatgpt_account_id, primary_used_percent=100.0)
    response = httpx.post(
        url, json=history_after(body, events, "two"), headers=session_headers(key, session), timeout=30
    )
    assert response.status_code == 200 and reply_text(sse_events(response.text)) == "echo: two"
    row = nth_log(key_row, 2)
    assert (row.account, row.migrated_from) == (second, first) and row.migration_reason
    affinity = SessionAffinity.objects.get(pool=key_row.pool)
    assert (affinity.account, affinity.previous_account, affinity.moves) == (second, first, 1)
    # The operator sees the move in the admin: from, to and why.
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw"))
    page = admin.get(f"/admin/accounts/requestlog/?api_key__id__exact={key_row.pk}").content.decode()
    assert first.label in page and second.label in page and row.migration_reason in page


def test_hold_answers_the_usage_limit_with_the_owner_reset(pooler, simulator):
    pool = make_pool(strategy="fill_first", session_migration="hold")
    first = make_account(pool, simulator, membership={"priority": 0})
    make_account(pool, simulator, membership={"priority": 1})
    _, key = make_key(pool)
    session = str(uuid.uuid4())
    url = f"{pooler.codex_base_url}/responses"
    assert (
        httpx.post(url, json=turn_body(session=session), headers=session_headers(key, session), timeout=30).status_code
        == 200
    )
    simulator.patch_account(first.chatgpt_account_id, primary_used_percent=100.0)
    resets_in = simulator.get_account(first.chatgpt_account_id).get("primary_reset_after_seconds")
    response = httpx.post(url, json=turn_body(session=session), headers=session_headers(key, session), timeout=30)
    assert response.status_code == 429
    retry_after = int(response.headers["Retry-After"])
    if resets_in:
        assert abs(retry_after - resets_in) <= 5
    again = httpx.post(url, json=turn_body(session=session), headers=session_headers(key, session), timeout=30)
    assert again.status_code == 429 and abs(int(again.headers["Retry-After"]) - retry_after) <= 5


def test_websocket_session_moves_and_resends_the_whole_history(pooler, simulator):
    first, second, key_row, key = owner_and_spare(simulator)
    url = pooler.codex_base_url.replace("http://", "ws://") + "/responses"
    headers = {"Authorization": f"Bearer {key}", "session-id": str(uuid.uuid4())}
    with connect(url, additional_headers=headers) as ws:
        body = turn_body("one")
        first_events = ws_turn(ws, body)
        assert reply_text(first_events) == "echo: one"
        simulator.patch_account(first.chatgpt_account_id, primary_used_percent=100.0)
        # Like the CLI: only the new input, chained to the previous response on this connection.
        second_events = ws_turn(
            ws, {**body, "previous_response_id": first_events[-1]["response"]["id"], "input": [user_message("two")]}
        )
    assert reply_text(second_events) == "echo: two", second_events
    row = nth_log(key_row, 2)
    assert (row.account, row.migrated_from) == (second, first)


def test_websocket_move_with_an_unknown_chain_asks_for_the_full_request(pooler, simulator):
    first, second, key_row, key = owner_and_spare(simulator)
    url = pooler.codex_base_url.replace("http://", "ws://") + "/responses"
    with connect(url, additional_headers={"Authorization": f"Bearer {key}", "session-id": str(uuid.uuid4())}) as ws:
        body = turn_body("one")
        assert reply_text(ws_turn(ws, body)) == "echo: one"
        simulator.patch_account(first.chatgpt_account_id, primary_used_percent=100.0)
        simulator.clear_requests()
        # Chained to a response the pooler never saw complete: it cannot rebuild what came before it.
        refused = ws_turn(ws, {**body, "previous_response_id": "resp_elsewhere", "input": [user_message("two")]})
        # The backend's own answer, on which the Codex CLI retries with the full request, which then moves.
        assert refused == [
            {
                "type": "error",
                "status": 400,
                "error": {
                    "type": "invalid_request_error",
                    "code": "previous_response_not_found",
                    "message": "Previous response with id 'resp_elsewhere' not found.",
                    "param": "previous_response_id",
                },
            }
        ]
        assert simulator.requests(kind="turn", account_id=second.chatgpt_account_id) == []
        full = {**body, "input": body["input"] + [user_message("two")]}
        assert reply_text(ws_turn(ws, full)) == "echo: two"
    row = nth_log(key_row, 2)
    assert (row.status_code, row.outcome, row.error_code) == (400, "client_error", "previous_response_not_found")
    row = nth_log(key_row, 3)
    assert (row.account, row.migrated_from, row.outcome) == (second, first, "ok")
