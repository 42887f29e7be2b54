"""The simulator behaves like the Codex backend and auth server: quota, faults, tokens, websockets, binding."""

import base64
import hashlib
import json
import secrets
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import websockets
from websockets.sync.client import connect


def user_message(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def turn_body(text: str = "hello", **extra) -> dict:
    return {
        "model": "gpt-5.2",
        "stream": True,
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "brief"}]},
            user_message(text),
        ],
        "reasoning": {"effort": "low"},
        "prompt_cache_key": str(uuid.uuid4()),
        **extra,
    }


def events_of(text: str) -> list[dict]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


def reply(events: list[dict]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def post_turn(
    simulator, account: dict, body: dict | None = None, token: str | None = None, **headers
) -> httpx.Response:
    return httpx.post(
        f"{simulator.codex_base_url}/responses",
        json=body or turn_body(),
        timeout=30,
        headers={
            "Authorization": f"Bearer {token or account['access_token']}",
            "chatgpt-account-id": account["account_id"],
            **headers,
        },
    )


def ws_url(simulator) -> str:
    return simulator.codex_base_url.replace("http://", "ws://") + "/responses"


def ws_connect(simulator, account: dict, **headers):
    return connect(
        ws_url(simulator),
        additional_headers={
            "Authorization": f"Bearer {account['access_token']}",
            "openai-beta": "responses_websockets=2026-02-06",
            **headers,
        },
    )


def ws_turn(ws, body: dict) -> list[dict]:
    ws.send(json.dumps({"type": "response.create", **body}))
    events = []
    while True:
        events.append(json.loads(ws.recv(timeout=10)))
        if events[-1]["type"] in ("response.completed", "response.failed", "error"):
            return events


def refresh(simulator, refresh_token: str, as_json: bool = False) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "app_test"}
    url = f"{simulator.url}/oauth/token"
    return httpx.post(url, json=data) if as_json else httpx.post(url, data=data)


# --- turns over HTTP ------------------------------------------------------------------------------------------


def test_a_turn_streams_the_echo_in_protocol_order(simulator):
    account = simulator.add_account(deltas=20)
    response = post_turn(simulator, account, turn_body("stream me please, in many pieces"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert "event: response.created\ndata: {" in response.text
    events = events_of(response.text)
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == 20
    assert reply(events) == "echo: stream me please, in many pieces"
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "message"]
    assert output[0]["encrypted_content"].startswith("gAAAA")
    usage = events[-1]["response"]["usage"]
    assert usage["input_tokens"] > 50 and usage["input_tokens_details"]["cached_tokens"] > 0
    assert usage["output_tokens_details"]["reasoning_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_zstd_bodies_and_no_encrypted_reasoning_unless_included(simulator):
    import zstandard

    account = simulator.add_account()
    raw = json.dumps(turn_body("packed", include=[])).encode()
    response = httpx.post(
        f"{simulator.codex_base_url}/responses",
        content=zstandard.ZstdCompressor().compress(raw),
        headers={
            "Authorization": f"Bearer {account['access_token']}",
            "Content-Encoding": "zstd",
            "Content-Type": "application/json",
        },
    )
    events = events_of(response.text)
    assert reply(events) == "echo: packed"
    assert "encrypted_content" not in events[-1]["response"]["output"][0]


def test_every_response_carries_the_quota_headers(simulator):
    account = simulator.add_account(primary_used_percent=10, secondary_used_percent=20, percent_per_turn=2.5)
    headers = post_turn(simulator, account).headers
    assert headers["x-codex-primary-used-percent"] == "12.5"
    assert headers["x-codex-secondary-used-percent"] == "22.5"
    assert headers["x-codex-primary-window-minutes"] == "300"
    assert headers["x-codex-secondary-window-minutes"] == "10080"
    assert 0 < int(headers["x-codex-primary-reset-after-seconds"]) <= 300 * 60
    assert int(headers["x-codex-primary-reset-at"]) > time.time()
    assert headers["x-codex-credits-has-credits"] == "false"


# --- quota ------------------------------------------------------------------------------------------------------


def test_quota_runs_out_and_comes_back_when_the_window_resets(simulator):
    account = simulator.add_account(primary_used_percent=98, percent_per_turn=1)
    assert post_turn(simulator, account).status_code == 200
    assert post_turn(simulator, account).status_code == 200
    refused = post_turn(simulator, account)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "usage_limit_reached" and error["plan_type"] == "plus"
    assert error["resets_at"] > time.time() and 0 < error["resets_in_seconds"] <= 300 * 60
    assert refused.headers["x-codex-primary-used-percent"] == "100"
    simulator.patch_account(account["account_id"], primary_reset_after_seconds=1)
    time.sleep(1.2)
    assert post_turn(simulator, account).status_code == 200
    state = simulator.get_account(account["account_id"])
    assert state["primary_used_percent"] == 1 and state["primary_reset_after_seconds"] > 60


def test_wham_usage_reports_the_windows(simulator):
    account = simulator.add_account(primary_used_percent=100, secondary_used_percent=40, plan_type="pro")
    usage = httpx.get(
        f"{simulator.url}/backend-api/wham/usage", headers={"Authorization": f"Bearer {account['access_token']}"}
    ).json()
    assert usage["plan_type"] == "pro"
    assert usage["rate_limit"]["limit_reached"] is True and usage["rate_limit"]["allowed"] is False
    primary = usage["rate_limit"]["primary_window"]
    assert primary["used_percent"] == 100 and primary["limit_window_seconds"] == 18000
    assert primary["reset_at"] > time.time() and primary["reset_after_seconds"] > 0
    assert usage["rate_limit"]["secondary_window"]["used_percent"] == 40


# --- faults -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_status_faults_apply_to_the_next_requests_only(simulator, status):
    account = simulator.add_account()
    simulator.patch_account(account["account_id"], faults=[{"kind": "status", "status": status, "count": 2}])
    assert [post_turn(simulator, account).status_code for _ in range(3)] == [status, status, 200]


def test_rate_limit_fault_sends_retry_after(simulator):
    account = simulator.add_account()
    simulator.patch_account(account["account_id"], faults=[{"kind": "rate_limit", "retry_after": 7}])
    refused = post_turn(simulator, account)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "7"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


def test_slow_fault_delays_the_first_byte_and_each_event(simulator):
    account = simulator.add_account(deltas=4)
    simulator.patch_account(account["account_id"], faults=[{"kind": "slow", "delay": 0.5, "event_delay": 0.05}])
    start = time.monotonic()
    with httpx.stream(
        "POST",
        f"{simulator.codex_base_url}/responses",
        json=turn_body(),
        headers={"Authorization": f"Bearer {account['access_token']}"},
    ) as response:
        chunks = response.iter_raw()
        next(chunks)
        first = time.monotonic() - start
        for _ in chunks:
            pass
    total = time.monotonic() - start
    assert first >= 0.5 and total >= first + 0.4  # 12 events after the first, 50 ms apart


def test_cut_fault_ends_the_stream_without_completion(simulator):
    account = simulator.add_account()
    simulator.patch_account(account["account_id"], faults=[{"kind": "cut", "after_events": 4}])
    events = events_of(post_turn(simulator, account).text)
    assert len(events) == 4 and all(e["type"] != "response.completed" for e in events)
    assert simulator.requests(account_id=account["account_id"])[-1]["outcome"] == "cut"


def test_the_log_sees_a_client_close_and_stats_count_open_streams(simulator):
    account = simulator.add_account()
    simulator.patch_account(account["account_id"], faults=[{"kind": "slow", "event_delay": 0.3}])
    simulator.reset_stats()
    with httpx.stream(
        "POST",
        f"{simulator.codex_base_url}/responses",
        json=turn_body(),
        headers={"Authorization": f"Bearer {account['access_token']}"},
    ) as response:
        chunks = response.iter_raw()  # kept: a dropped iterator would close the stream at once
        next(chunks)
        assert simulator.stats()["open_streams"] == 1
    deadline = time.monotonic() + 5
    while simulator.requests(account_id=account["account_id"])[-1]["outcome"] != "client_closed":
        assert time.monotonic() < deadline, simulator.requests(account_id=account["account_id"])
        time.sleep(0.05)
    assert simulator.stats()["open_streams"] == 0 and simulator.stats()["max_open_streams"] == 1


# --- authentication and tokens ----------------------------------------------------------------------------------


def test_bearer_must_be_the_current_token_of_the_named_account(simulator):
    account, other = simulator.add_account(), simulator.add_account()
    assert post_turn(simulator, account, token="nope").status_code == 401
    mismatch = post_turn(simulator, account, token=other["access_token"])
    assert mismatch.status_code == 401 and mismatch.json()["error"]["code"] == "account_mismatch"
    missing = httpx.post(f"{simulator.codex_base_url}/responses", json=turn_body())
    assert missing.status_code == 401
    simulator.patch_account(account["account_id"], expire_access_token=True)
    expired = post_turn(simulator, account)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "token_expired"


def test_expire_token_fault_expires_it_on_the_next_request(simulator):
    account = simulator.add_account()
    simulator.patch_account(account["account_id"], faults=[{"kind": "expire_token"}])
    assert post_turn(simulator, account).status_code == 401
    assert post_turn(simulator, account).status_code == 401  # it stays expired until refreshed


def test_refresh_rotates_both_tokens_and_a_reused_one_is_invalid_grant(simulator):
    account = simulator.add_account()
    fresh = refresh(simulator, account["refresh_token"])
    assert fresh.status_code == 200
    tokens = fresh.json()
    assert set(tokens) >= {"access_token", "refresh_token", "id_token", "expires_in", "token_type"}
    assert tokens["access_token"] != account["access_token"] and tokens["refresh_token"] != account["refresh_token"]
    claims = json.loads(base64.urlsafe_b64decode(tokens["id_token"].split(".")[1] + "=="))
    assert claims["https://api.openai.com/auth"]["chatgpt_account_id"] == account["account_id"]
    assert claims["email"] == account["email"]
    access_claims = json.loads(base64.urlsafe_b64decode(tokens["access_token"].split(".")[1] + "=="))
    assert access_claims["exp"] > time.time()
    old = post_turn(simulator, account)
    assert old.status_code == 401 and old.json()["error"]["code"] == "token_invalidated"
    assert post_turn(simulator, account, token=tokens["access_token"]).status_code == 200
    reused = refresh(simulator, account["refresh_token"])
    assert reused.status_code == 401
    assert reused.json()["error"] == "invalid_grant" and reused.json()["code"] == "refresh_token_reused"
    again = refresh(simulator, tokens["refresh_token"], as_json=True)
    assert again.status_code == 200
    assert simulator.get_account(account["account_id"])["refresh_count"] == 2


def test_refresh_fault_answers_invalid_grant(simulator):
    account = simulator.add_account()
    simulator.patch_account(account["account_id"], faults=[{"kind": "refresh_invalid_grant"}])
    refused = refresh(simulator, account["refresh_token"])
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_grant"


def test_token_faults_delay_or_garble_the_next_token_answer(simulator):
    account = simulator.add_account()
    simulator.patch_account(
        account["account_id"],
        faults=[
            {"kind": "token_slow", "delay": 0.4},
            {"kind": "token_malformed"},
            {"kind": "token_malformed", "status": 502, "json": ["oops"]},
        ],
    )
    started = time.monotonic()
    slow = refresh(simulator, account["refresh_token"])
    assert slow.status_code == 200 and time.monotonic() - started >= 0.4
    garbled = refresh(simulator, slow.json()["refresh_token"])
    assert garbled.status_code == 200 and garbled.headers["content-type"].startswith("text/html")
    error_page = refresh(simulator, slow.json()["refresh_token"])
    assert error_page.status_code == 502 and error_page.json() == ["oops"]
    # Neither garbled answer spent the refresh token.
    assert refresh(simulator, slow.json()["refresh_token"]).status_code == 200


def test_usage_malformed_fault_answers_a_json_array(simulator):
    account = simulator.add_account(faults=[{"kind": "usage_malformed"}])
    url, headers = f"{simulator.url}/backend-api/wham/usage", {"Authorization": f"Bearer {account['access_token']}"}
    assert httpx.get(url, headers=headers).json() == ["not", "a", "usage", "object"]
    assert httpx.get(url, headers=headers).json()["account_id"] == account["account_id"]


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _authorize(simulator, challenge: str, **params) -> dict:
    response = httpx.get(
        f"{simulator.url}/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": "app_test",
            "redirect_uri": "http://localhost:1455/auth/callback",
            "scope": "openid profile email offline_access",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "st-1",
            **params,
        },
    )
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "http://localhost:1455/auth/callback"
    return {k: v[0] for k, v in parse_qs(location.query).items()}


def test_authorization_code_with_pkce(simulator):
    account = simulator.add_account()
    verifier, challenge = _pkce()
    callback = _authorize(simulator, challenge, login_hint=account["account_id"])
    assert callback["state"] == "st-1"
    token_url = f"{simulator.url}/oauth/token"
    exchange = {
        "grant_type": "authorization_code",
        "code": callback["code"],
        "client_id": "app_test",
        "redirect_uri": "http://localhost:1455/auth/callback",
    }
    assert httpx.post(token_url, data={**exchange, "code_verifier": "wrong"}).status_code == 400
    callback = _authorize(simulator, challenge, login_hint=account["email"])  # a failed exchange spends the code
    tokens = httpx.post(token_url, data={**exchange, "code": callback["code"], "code_verifier": verifier})
    assert tokens.status_code == 200
    assert post_turn(simulator, account, token=tokens.json()["access_token"]).status_code == 200
    assert (
        httpx.post(token_url, data={**exchange, "code": callback["code"], "code_verifier": verifier}).status_code == 400
    )  # single use


def test_next_login_picks_the_account_or_denies(simulator):
    account = simulator.add_account()
    _, challenge = _pkce()
    simulator.next_login(account["account_id"])
    assert "code" in _authorize(simulator, challenge)
    simulator.next_login(deny=True)
    denied = _authorize(simulator, challenge)
    assert denied["error"] == "access_denied" and denied["state"] == "st-1"


# --- websockets -------------------------------------------------------------------------------------------------


def test_websocket_prewarm_then_turns_chained_by_previous_response_id(simulator):
    account = simulator.add_account(percent_per_turn=5)
    session = str(uuid.uuid4())
    with ws_connect(simulator, account, **{"session-id": session}) as ws:
        assert ws.response.headers["x-codex-primary-used-percent"] == "0"
        prewarm = ws_turn(ws, turn_body("warm", generate=False))
        assert [e["type"] for e in prewarm] == [
            "codex.rate_limits",
            "response.created",
            "response.in_progress",
            "response.completed",
        ]
        assert prewarm[-1]["response"]["output"] == []
        first = ws_turn(ws, turn_body("first", previous_response_id=prewarm[-1]["response"]["id"]))
        assert first[0]["rate_limits"]["primary"]["window_minutes"] == 300 and reply(first) == "echo: first"
        second = ws_turn(
            ws, {**turn_body(), "previous_response_id": first[-1]["response"]["id"], "input": [user_message("second")]}
        )
        assert reply(second) == "echo: second"
        assert second[0]["rate_limits"]["primary"]["used_percent"] == 10
        unknown = ws_turn(ws, turn_body("third", previous_response_id="resp_unknown"))
        assert unknown[-1]["status"] == 400 and unknown[-1]["error"]["code"] == "previous_response_not_found"
        assert reply(ws_turn(ws, turn_body("still open"))) == "echo: still open"
    seen = simulator.requests(account_id=account["account_id"], transport="websocket")
    assert [r["kind"] for r in seen] == ["connect", "prewarm", "turn", "turn", "turn", "turn"]
    assert all(r["session_id"] == session for r in seen)
    assert simulator.get_account(account["account_id"])["primary_used_percent"] == 15  # prewarm and refusal free


def test_websocket_refusals_are_error_frames_and_the_handshake_checks_the_token(simulator):
    account = simulator.add_account(primary_used_percent=100)
    with ws_connect(simulator, account) as ws:
        limited = ws_turn(ws, turn_body())[-1]
        assert limited["type"] == "error" and limited["status"] == 429
        assert limited["error"]["type"] == "usage_limit_reached" and limited["error"]["resets_in_seconds"] > 0
        assert limited["headers"]["x-codex-primary-used-percent"] == "100"
        simulator.patch_account(
            account["account_id"], primary_used_percent=0, faults=[{"kind": "status", "status": 503}]
        )
        failed = ws_turn(ws, turn_body())[-1]
        assert failed["type"] == "error" and failed["status"] == 503
        assert reply(ws_turn(ws, turn_body("recovered"))) == "echo: recovered"
    with pytest.raises(websockets.InvalidStatus) as refused:
        connect(ws_url(simulator), additional_headers={"Authorization": "Bearer wrong"})
    assert refused.value.response.status_code == 401


def test_websocket_cut_closes_the_socket_mid_turn(simulator):
    account = simulator.add_account()
    simulator.patch_account(account["account_id"], faults=[{"kind": "cut", "after_events": 3}])
    with ws_connect(simulator, account) as ws:
        ws.send(json.dumps({"type": "response.create", **turn_body()}))
        received = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                received.append(json.loads(ws.recv(timeout=10)))
    assert len(received) == 3 and all(e["type"] != "response.completed" for e in received)
    assert simulator.requests(account_id=account["account_id"], kind="turn")[-1]["outcome"] == "cut"


def test_websocket_stats_count_open_connections(simulator):
    account = simulator.add_account()
    with ws_connect(simulator, account), ws_connect(simulator, account):
        assert simulator.stats()["open_websockets"] >= 2
    deadline = time.monotonic() + 5
    while simulator.stats()["open_websockets"] != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)


# --- account-bound history -------------------------------------------------------------------------------------


def test_encrypted_history_only_verifies_on_its_account(simulator):
    first, second = simulator.add_account(), simulator.add_account()
    body = turn_body("remember")
    output = events_of(post_turn(simulator, first, body).text)[-1]["response"]["output"]
    follow_up = {**body, "input": body["input"] + output + [user_message("again")]}
    assert post_turn(simulator, first, follow_up).status_code == 200
    refused = post_turn(simulator, second, follow_up)
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": refused.json()["error"]["message"],
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_encrypted_content",
    }
    assert refused.json()["error"]["message"].startswith("The encrypted content gAAAA")
    with ws_connect(simulator, second) as ws:
        frame = ws_turn(ws, follow_up)[-1]
        assert frame["type"] == "error" and frame["status"] == 400
    simulator.patch_account(second["account_id"], verify_encrypted_content=False)
    assert post_turn(simulator, second, follow_up).status_code == 200


def test_compaction_items_are_bound_too(simulator):
    first, second = simulator.add_account(), simulator.add_account()
    body = {k: v for k, v in turn_body("long history").items() if k != "stream"}
    simulator.set_config(compact_endpoint=True)  # the retired endpoint, for gateways that still call it
    try:
        compact = httpx.post(
            f"{simulator.codex_base_url}/responses/compact",
            json=body,
            headers={"Authorization": f"Bearer {first['access_token']}"},
        )
    finally:
        simulator.set_config(compact_endpoint=False)
    assert compact.status_code == 200
    output = compact.json()["output"]
    compaction = output[-1]
    assert compaction["type"] == "compaction" and compaction["id"].startswith("cmp_")
    assert compaction["encrypted_content"].startswith("gAAAA")
    follow_up = turn_body(input=[*output, user_message("next")])
    assert post_turn(simulator, first, follow_up).status_code == 200
    assert post_turn(simulator, second, follow_up).json()["error"]["code"] == "invalid_encrypted_content"


def test_the_legacy_compact_endpoint_is_gone_unless_switched_on(simulator):
    account = simulator.add_account()
    assert simulator.config() == {"compact_endpoint": False}
    url, auth = f"{simulator.codex_base_url}/responses/compact", {"Authorization": f"Bearer {account['access_token']}"}
    gone = httpx.post(url, json=turn_body(), headers=auth)
    assert gone.status_code == 404 and gone.json() == {"detail": "Not Found"}
    logged = simulator.requests(account_id=account["account_id"], kind="compact")
    assert [(e["status"], e["path"]) for e in logged] == [(404, "/backend-api/codex/responses/compact")]
    with pytest.raises(RuntimeError, match="unknown field"):
        simulator.set_config(compact_endpnt=True)
    assert simulator.set_config(compact_endpoint=True) == {"compact_endpoint": True}
    try:
        assert httpx.post(url, json=turn_body(), headers=auth).status_code == 200
    finally:
        simulator.set_config(compact_endpoint=False)


def _compaction_body(history: list) -> dict:
    return turn_body(input=[*history, {"type": "compaction_trigger"}])


@pytest.mark.parametrize("transport", ["http", "websocket"])
def test_a_compaction_trigger_is_answered_with_exactly_one_bound_compaction(simulator, transport):
    first, second = simulator.add_account(percent_per_turn=2), simulator.add_account()
    history = turn_body("long history")["input"]
    if transport == "http":
        events = events_of(post_turn(simulator, first, _compaction_body(history)).text)
    else:
        with ws_connect(simulator, first) as ws:
            events = ws_turn(ws, _compaction_body(history))[1:]  # after codex.rate_limits
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    (compaction,) = events[-1]["response"]["output"]
    assert set(compaction) == {"id", "type", "encrypted_content"} and compaction["type"] == "compaction"
    assert compaction["id"].startswith("cmp_") and compaction["encrypted_content"].startswith("gAAAA")
    assert events[-1]["response"]["usage"]["total_tokens"] > 0
    assert simulator.get_account(first["account_id"])["primary_used_percent"] == 2  # it counts like a turn
    (entry,) = simulator.requests(account_id=first["account_id"], kind="turn")
    assert entry["compaction_trigger"] is True
    assert entry["input_types"] == ["message:developer", "message:user", "compaction_trigger"]
    follow_up = turn_body(input=[*history, compaction, user_message("next")])
    assert post_turn(simulator, first, follow_up).status_code == 200
    refused = post_turn(simulator, second, _compaction_body([*history, compaction]))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_encrypted_content"
    simulator.patch_account(first["account_id"], primary_used_percent=100)
    assert post_turn(simulator, first, _compaction_body(history)).status_code == 429


def test_previous_response_id_must_be_known_to_the_account(simulator):
    first, second = simulator.add_account(), simulator.add_account()
    response_id = events_of(post_turn(simulator, first).text)[-1]["response"]["id"]
    assert post_turn(simulator, first, turn_body(previous_response_id=response_id)).status_code == 200
    refused = post_turn(simulator, second, turn_body(previous_response_id=response_id))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "previous_response_not_found"


# --- the other routes and the control API ----------------------------------------------------------------------


def test_models_realtime_and_unknown_models(simulator):
    account = simulator.add_account(models=["gpt-5.2", "gpt-5.1-codex"])
    auth = {"Authorization": f"Bearer {account['access_token']}"}
    models = httpx.get(f"{simulator.codex_base_url}/models?client_version=0.169.0", headers=auth).json()["models"]
    assert [m["slug"] for m in models] == ["gpt-5.2", "gpt-5.1-codex"]
    assert all(m["supported_reasoning_levels"] and m["visibility"] == "list" and m["context_window"] for m in models)
    unsupported = post_turn(simulator, account, turn_body(model="gpt-4o"))
    assert unsupported.status_code == 400 and unsupported.json()["error"]["param"] == "model"
    call = httpx.post(
        f"{simulator.codex_base_url}/realtime/calls",
        content="v=0\r\ns=-\r\n",
        headers={**auth, "Content-Type": "application/sdp"},
    )
    assert call.status_code == 201 and call.text.startswith("v=0")
    assert call.headers["content-type"].startswith("application/sdp") and call.headers["location"]


def test_request_log_records_metadata_and_never_bodies(simulator):
    account = simulator.add_account()
    simulator.clear_requests()
    marker = f"secret-{uuid.uuid4().hex}"
    body = turn_body(marker)
    post_turn(simulator, account, body, **{"session-id": "sess-1", "thread-id": "sess-1", "x-client-request-id": "r1"})
    post_turn(simulator, account, token="bad")
    log = simulator.requests()
    assert marker not in json.dumps(log)
    ok, refused = log
    assert ok["kind"] == "turn" and ok["transport"] == "http" and ok["account_id"] == account["account_id"]
    assert (ok["model"], ok["prompt_cache_key"], ok["status"], ok["outcome"]) == (
        "gpt-5.2",
        body["prompt_cache_key"],
        200,
        "completed",
    )
    assert ok["session_id"] == "sess-1" and ok["headers"]["x-client-request-id"] == "r1"
    assert (refused["status"], refused["outcome"], refused["error_code"]) == (401, "rejected", "token_invalid")
    assert simulator.requests(status=401) == [refused]
    assert ok["input_types"] == ["message:developer", "message:user"] and ok["compaction_trigger"] is False


def test_reposting_an_account_replaces_it_and_bad_fields_are_refused(simulator):
    account = simulator.add_account(primary_used_percent=50)
    replaced = simulator.add_account(account["account_id"], access_token="fresh-token")
    assert replaced["primary_used_percent"] == 0 and replaced["access_token"] == "fresh-token"
    assert post_turn(simulator, account).status_code == 401
    with pytest.raises(RuntimeError, match="unknown field"):
        simulator.patch_account(account["account_id"], primary_used_prcent=3)
    with pytest.raises(RuntimeError, match="unknown fault kind"):
        simulator.patch_account(account["account_id"], faults=[{"kind": "explode"}])
