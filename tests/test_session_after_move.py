"""After a session moved, its later turns keep the new account's own history and cost one request each."""

import uuid

import httpx
import pytest

from accounts.models import RequestLog
from tests.codex_turns import reply_text, session_headers, sse_events, turn_body
from tests.factories import make_account, make_key, make_pool
from tests.test_session_migration import history_after, nth_log

pytestmark = pytest.mark.django_db(transaction=True)


def test_turns_after_a_move_drop_only_the_old_accounts_history(pooler, simulator):
    pool = make_pool(strategy="fill_first")
    first = make_account(pool, simulator, membership={"priority": 0})
    second = make_account(pool, simulator, membership={"priority": 1})
    key_row, key = make_key(pool)
    session = str(uuid.uuid4())
    url = f"{pooler.codex_base_url}/responses"

    def turn(body):
        response = httpx.post(url, json=body, headers=session_headers(key, session), timeout=30)
        assert response.status_code == 200, response.text
        return sse_events(response.text)

    body = turn_body("one", session=session)
    events = turn(body)
    simulator.patch_account(first.chatgpt_account_id, primary_used_percent=100.0)
    body = history_after(body, events, "two")
    events = turn(body)  # moves to the second account, without the first one's reasoning
    assert nth_log(key_row, 2).account == second
    simulator.clear_requests()
    body = history_after(body, events, "three")
    events = turn(body)
    assert reply_text(events) == "echo: three"
    # One upstream request: the first account's reasoning was dropped up front, the second's kept.
    seen = [r for r in simulator.requests() if r["kind"] == "turn"]
    assert [(r["account_id"], r["status"], r["encrypted_items"]) for r in seen] == [(second.chatgpt_account_id, 200, 1)]
    third = nth_log(key_row, 3)
    assert (third.account, third.outcome, len(third.attempts)) == (second, "ok", 1)
    assert RequestLog.objects.filter(api_key=key_row).count() == 3
