"""The compact routes after the backend retired `/responses/compact`: served by a `compaction_trigger` turn."""

import time

import httpx
import openai
import pytest

from accounts.models import RequestLog
from tests.codex_turns import session_headers, turn_body
from tests.factories import make_account, make_key, make_pool

pytestmark = pytest.mark.django_db(transaction=True)


def row_of(route: str, key_row, timeout: float = 5) -> RequestLog:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = RequestLog.objects.filter(api_key=key_row, route=route).first()
        if row is not None:
            return row
        time.sleep(0.05)
    raise AssertionError(f"no {route} row")


def test_the_codex_compact_route_answers_one_compaction_item_through_a_trigger_turn(pooler, simulator):
    assert simulator.config()["compact_endpoint"] is False  # as the backend since August 2026
    pool = make_pool()
    account = make_account(pool, simulator)
    key_row, key = make_key(pool)
    simulator.clear_requests()
    body = {k: v for k, v in turn_body("remember the plan").items() if k != "stream"}
    answer = httpx.post(
        f"{pooler.codex_base_url}/responses/compact", json=body, headers=session_headers(key), timeout=30
    )
    assert answer.status_code == 200, answer.text
    output = answer.json()["output"]
    assert [item["type"] for item in output] == ["message", "compaction"]
    assert output[0]["role"] == "user" and output[1]["encrypted_content"].startswith("gAAAA")
    seen = simulator.requests(account_id=account.chatgpt_account_id)
    assert [(r["kind"], r["compaction_trigger"]) for r in seen] == [("turn", True)]
    row = row_of("codex.compact", key_row)
    assert row.compaction and row.status_code == 200 and row.outcome == "ok" and row.total_tokens > 0


def test_the_v1_compact_route_works_with_the_openai_sdk(pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator)
    key_row, key = make_key(pool)
    simulator.clear_requests()
    client = openai.OpenAI(base_url=f"{pooler.url}/v1", api_key=key, max_retries=0, timeout=30)
    compacted = client.responses.compact(
        model="gpt-5.2",
        instructions="be brief",
        input=[{"role": "user", "content": "first"}, {"role": "user", "content": "second"}],
    )
    assert compacted.object == "response.compaction"
    assert [item.type for item in compacted.output][-1] == "compaction"
    assert len([item for item in compacted.output if item.type == "compaction"]) == 1
    assert compacted.usage.total_tokens > 0
    assert row_of("v1.responses.compact", key_row).compaction
    # Made by one trigger turn carrying both messages, not by the retired compact endpoint.
    (seen,) = simulator.requests(account_id=account.chatgpt_account_id)
    assert seen["kind"] == "turn" and seen["compaction_trigger"]
    assert seen["input_types"][-3:] == ["message:user", "message:user", "compaction_trigger"]


def test_a_compaction_that_does_not_come_back_is_a_clear_502(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator, sim_fields={"faults": [{"kind": "cut", "after_events": 2}]})
    _, key = make_key(pool)
    answer = httpx.post(
        f"{pooler.codex_base_url}/responses/compact", json=turn_body(), headers=session_headers(key), timeout=30
    )
    assert answer.status_code == 502 and answer.json()["error"]["type"] == "server_error"
