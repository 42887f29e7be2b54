"""What a key may ask for, as the upstream receives it (read in the simulator's request log): forced model,
effort cap, service tier and per-request caps, on the HTTP route, the websocket and /v1."""

import json

import httpx
import pytest
from websockets.sync.client import connect

from accounts.models import RequestLog
from tests.codex_turns import session_headers, turn_body
from tests.factories import make_account, make_key, make_pool
from tests.test_websocket_route import logs, read_turn, ws_headers, ws_url

pytestmark = pytest.mark.django_db(transaction=True)


def http_turn(pooler, key: str, **extra) -> httpx.Response:
    return httpx.post(
        f"{pooler.codex_base_url}/responses", json=turn_body(**extra), headers=session_headers(key), timeout=30
    )


def ws_turn(pooler, key: str, **extra) -> list[dict]:
    with connect(ws_url(pooler), additional_headers=ws_headers(key)) as ws:
        ws.send(json.dumps({"type": "response.create", **turn_body(**extra)}))
        return read_turn(ws)


def v1_turn(pooler, key: str, **body) -> httpx.Response:
    body = {"model": "gpt-5.2", "input": "hi", **body}
    return httpx.post(f"{pooler.url}/v1/responses", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def upstream_turns(simulator, account) -> list[dict]:
    return simulator.requests(account_id=account.chatgpt_account_id, kind="turn")


@pytest.fixture
def served(simulator):
    pool = make_pool()
    return pool, make_account(pool, simulator)


def test_a_forced_model_replaces_the_turns_model_and_the_log_shows_both(pooler, simulator, served):
    pool, account = served
    key, raw = make_key(pool, forced_model="gpt-5.5")
    assert http_turn(pooler, raw, model="gpt-5.2").status_code == 200
    assert ws_turn(pooler, raw, model="gpt-5.2")[-1]["type"] == "response.completed"
    assert v1_turn(pooler, raw, model="gpt-5.2").json()["model"] == "gpt-5.5"
    assert [r["model"] for r in upstream_turns(simulator, account)] == ["gpt-5.5"] * 3
    rows = logs(3, api_key=key)
    assert {(r.model, r.requested_model, r.transport) for r in rows} == {
        ("gpt-5.5", "gpt-5.2", "http"),
        ("gpt-5.5", "gpt-5.2", "websocket"),
    }


def test_an_effort_above_the_cap_is_lowered_or_refused(pooler, simulator, served):
    pool, account = served
    _, lowering = make_key(pool, max_reasoning_effort="low")
    assert http_turn(pooler, lowering, reasoning={"effort": "xhigh"}).status_code == 200
    assert ws_turn(pooler, lowering, reasoning={"effort": "high"})[-1]["type"] == "response.completed"
    assert v1_turn(pooler, lowering, reasoning={"effort": "high"}).status_code == 200
    assert http_turn(pooler, lowering, reasoning={"effort": "minimal"}).status_code == 200  # under the cap: kept
    assert [r["reasoning_effort"] for r in upstream_turns(simulator, account)] == ["low", "low", "low", "minimal"]

    refusing, refusing_raw = make_key(pool, max_reasoning_effort="medium", reasoning_effort_over_cap="refuse")
    refused = http_turn(pooler, refusing_raw, reasoning={"effort": "high"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "reasoning_effort_not_allowed"
    events = ws_turn(pooler, refusing_raw, reasoning={"effort": "xhigh"})
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "reasoning_effort_not_allowed"
    assert v1_turn(pooler, refusing_raw, reasoning={"effort": "high"}).status_code == 400
    assert len(upstream_turns(simulator, account)) == 4  # nothing refused went upstream
    assert logs(2, api_key=refusing)[0].status_code == 400


def test_a_service_tier_is_forced_or_refused(pooler, simulator, served):
    pool, account = served
    _, forced = make_key(pool, forced_service_tier="flex")
    assert http_turn(pooler, forced, service_tier="priority").status_code == 200
    assert ws_turn(pooler, forced)[-1]["type"] == "response.completed"
    assert v1_turn(pooler, forced).status_code == 200
    assert [r["service_tier"] for r in upstream_turns(simulator, account)] == ["flex"] * 3

    _, limited = make_key(pool, allowed_service_tiers=["default", "flex"])
    refused = http_turn(pooler, limited, service_tier="priority")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "service_tier_not_allowed"
    assert ws_turn(pooler, limited, service_tier="priority")[-1]["error"]["code"] == "service_tier_not_allowed"
    assert http_turn(pooler, limited, service_tier="flex").status_code == 200
    assert [r["service_tier"] for r in upstream_turns(simulator, account)][3:] == ["flex"]


def test_max_output_tokens_is_capped(pooler, simulator, served):
    pool, account = served
    _, raw = make_key(pool, max_output_tokens=300)
    assert http_turn(pooler, raw, max_output_tokens=5000).status_code == 200
    assert ws_turn(pooler, raw, max_output_tokens=1000)[-1]["type"] == "response.completed"
    assert v1_turn(pooler, raw, max_output_tokens=4000).status_code == 200
    assert v1_turn(pooler, raw, max_output_tokens=100).status_code == 200
    assert [r["max_output_tokens"] for r in upstream_turns(simulator, account)] == [300, 300, 300, 100]


def test_an_input_over_the_cap_is_refused_before_any_upstream_call(pooler, simulator, served):
    pool, account = served
    key, raw = make_key(pool, max_input_tokens=1000)
    assert http_turn(pooler, raw, text="short").status_code == 200
    refused = http_turn(pooler, raw, text="x" * 8000)  # about 2,000 tokens at 4 bytes each
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "input_too_large"
    assert "at most 1000" in refused.json()["error"]["message"]
    assert ws_turn(pooler, raw, text="y" * 8000)[-1]["error"]["code"] == "input_too_large"
    assert v1_turn(pooler, raw, input="z" * 8000).status_code == 400
    assert len(upstream_turns(simulator, account)) == 1
    assert RequestLog.objects.filter(api_key=key, error_code="input_too_large", attempts=[]).count() >= 2
