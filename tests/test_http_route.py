"""The Codex backend route over HTTP/SSE against real Daphne, the simulator and the test database."""

import contextlib
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.utils import timezone

from accounts.models import RequestLog, UpstreamAccount
from tests.codex_turns import reply_text, session_headers, sse_events, turn_body
from tests.factories import make_account, make_key, make_pool

pytestmark = pytest.mark.django_db(transaction=True)


def post_turn(pooler, key, body=None, session=None, **kwargs) -> httpx.Response:
    return httpx.post(
        f"{pooler.codex_base_url}/responses",
        json=body or turn_body(session=session),
        headers=session_headers(key, session),
        timeout=30,
        **kwargs,
    )


def served_by(simulator, request_session: str) -> set[str]:
    return {
        r["account_id"]
        for r in simulator.requests()
        if r.get("session_id") == request_session or (r.get("headers") or {}).get("session-id") == request_session
    }


def wait_for_log(request_id: str | None = None, timeout: float = 5, **filters) -> RequestLog:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        query = RequestLog.objects.filter(**filters)
        if request_id:
            query = query.filter(request_id=request_id)
        row = query.first()
        if row is not None:
            return row
        time.sleep(0.05)
    raise AssertionError(f"no RequestLog row for {request_id or filters}")


def test_a_turn_streams_the_simulated_reply_and_is_accounted(pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator)
    _, key = make_key(pool)
    response = post_turn(pooler, key, turn_body("hello pooler"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert reply_text(events) == "echo: hello pooler"
    assert events[-1]["type"] == "response.completed"
    assert "x-codex-primary-used-percent" in response.headers
    row = wait_for_log(response.headers["x-request-id"])
    assert (row.account, row.status_code, row.outcome, row.route) == (account, 200, "ok", "codex.responses")
    assert row.input_tokens > 0 and row.output_tokens > 0 and row.total_tokens > 0 and row.ttft_ms is not None
    account.refresh_from_db()
    assert account.primary_used_percent is not None and account.last_used_at is not None


def test_the_upstream_sees_the_account_not_the_client_key(pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator)
    _, key = make_key(pool)
    simulator.clear_requests()
    assert post_turn(pooler, key).status_code == 200
    seen = simulator.requests()[-1]
    assert seen["account_id"] == account.chatgpt_account_id and seen["status"] == 200


def test_exhausted_account_is_never_chosen(pooler, simulator):
    pool = make_pool()
    reset = timezone.now() + timedelta(hours=2)
    spent = make_account(
        pool, simulator, sim_fields={"primary_used_percent": 100.0}, primary_used_percent=100.0, primary_resets_at=reset
    )
    make_account(pool, simulator)
    _, key = make_key(pool)
    for _ in range(4):
        assert post_turn(pooler, key).status_code == 200
    assert spent.chatgpt_account_id not in {r["account_id"] for r in simulator.requests()}


def test_usage_limit_fails_over_and_cools_the_account_down(pooler, simulator):
    pool = make_pool()
    # The pooler does not know yet: its snapshot says this account has the most headroom.
    limited = make_account(pool, simulator, sim_fields={"primary_used_percent": 100.0}, primary_used_percent=0.0)
    healthy = make_account(pool, simulator, primary_used_percent=40.0)
    _, key = make_key(pool)
    response = post_turn(pooler, key, turn_body("still works"))
    assert response.status_code == 200
    assert reply_text(sse_events(response.text)) == "echo: still works"
    row = wait_for_log(response.headers["x-request-id"])
    assert row.account == healthy and [a["account_id"] for a in row.attempts] == [limited.id, healthy.id]
    limited.refresh_from_db()
    assert limited.cooldown_reason == "usage_limit_reached" and limited.cooldown_until > timezone.now()


def test_expired_token_is_refreshed_and_used(pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator, token_expires_at=timezone.now() - timedelta(minutes=1))
    old_refresh = account.refresh_token
    simulator.patch_account(account.chatgpt_account_id, expire_access_token=True)
    _, key = make_key(pool)
    response = post_turn(pooler, key)
    assert response.status_code == 200, response.text
    account.refresh_from_db()
    assert account.refresh_token != old_refresh and account.last_refresh_at is not None
    assert account.token_expires_at > timezone.now()


def test_a_revoked_token_is_refreshed_once_after_a_401(pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator)  # the pooler thinks the token is fine for an hour
    simulator.patch_account(account.chatgpt_account_id, expire_access_token=True)
    _, key = make_key(pool)
    assert post_turn(pooler, key).status_code == 200
    account.refresh_from_db()
    assert account.status == "active" and account.last_refresh_at is not None


def test_all_exhausted_gives_429_with_retry_after(pooler, simulator):
    pool = make_pool()
    for _ in range(2):
        make_account(pool, simulator, sim_fields={"primary_used_percent": 100.0})
    _, key = make_key(pool)
    response = post_turn(pooler, key)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "usage_limit_reached"
    # Now both are cooling down: the next turn is refused without an upstream attempt.
    again = post_turn(pooler, key)
    assert again.status_code == 429 and int(again.headers["Retry-After"]) > 0


def test_five_turns_of_a_session_stay_on_one_account(pooler, simulator):
    pool = make_pool(strategy="round_robin")
    accounts = [make_account(pool, simulator) for _ in range(3)]
    _, key = make_key(pool)
    session = str(uuid.uuid4())
    served = set()
    for _ in range(5):
        response = post_turn(pooler, key, turn_body(session=session), session=session)
        assert response.status_code == 200
        served.add(wait_for_log(response.headers["x-request-id"]).account_id)
    assert len(served) == 1 and served <= {a.id for a in accounts}


def test_first_event_arrives_before_a_slow_upstream_finishes(pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator)
    simulator.patch_account(account.chatgpt_account_id, faults=[{"kind": "slow", "event_delay": 0.3, "count": 1}])
    _, key = make_key(pool)
    start = time.monotonic()
    with httpx.stream(
        "POST", f"{pooler.codex_base_url}/responses", json=turn_body(), headers=session_headers(key), timeout=30
    ) as response:
        chunks = response.iter_raw()
        next(chunks)
        first_at = time.monotonic() - start
        for _ in chunks:
            pass
    total = time.monotonic() - start
    assert first_at < 1.0 and total > first_at + 1.0


def test_client_disconnect_closes_the_upstream(pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator)
    simulator.patch_account(account.chatgpt_account_id, faults=[{"kind": "slow", "event_delay": 0.5, "count": 1}])
    _, key = make_key(pool)
    simulator.clear_requests()
    with httpx.stream(
        "POST", f"{pooler.codex_base_url}/responses", json=turn_body(), headers=session_headers(key), timeout=30
    ) as response:
        request_id = response.headers["x-request-id"]
        next(response.iter_raw())
    row = wait_for_log(request_id, timeout=10)
    assert row.outcome == "client_closed"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        outcomes = [r.get("outcome") for r in simulator.requests() if r["account_id"] == account.chatgpt_account_id]
        if "client_closed" in outcomes:
            break
        time.sleep(0.1)
    assert "client_closed" in outcomes


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_fail_over_before_the_first_byte(pooler, simulator, status):
    pool = make_pool(strategy="fill_first")
    sick = make_account(pool, simulator, membership={"priority": 0})
    make_account(pool, simulator, membership={"priority": 1})
    simulator.patch_account(sick.chatgpt_account_id, faults=[{"kind": "status", "status": status, "count": 1}])
    _, key = make_key(pool)
    response = post_turn(pooler, key)
    assert response.status_code == 200
    sick.refresh_from_db()
    assert sick.consecutive_failures == 1 and sick.cooldown_until > timezone.now()


def test_wrong_revoked_and_expired_keys_get_401(pooler, simulator):
    pool = make_pool()
    revoked, revoked_raw = make_key(pool, revoked_at=timezone.now())
    _, expired_raw = make_key(pool, expires_at=timezone.now() - timedelta(seconds=1))
    for key in ["cpk_nope_nope", revoked_raw, expired_raw, "x"]:
        response = post_turn(pooler, key)
        assert response.status_code == 401
        error = response.json()["error"]
        expected = "key_expired" if key == expired_raw else "invalid_api_key"  # the holder of a whole key learns why
        assert error["type"] == "invalid_request_error" and error["code"] == expected


def test_body_limits_and_invalid_json(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    _, key = make_key(pool)
    url = f"{pooler.codex_base_url}/responses"
    huge = b'{"model": "gpt-5.2", "input": "' + b"x" * (16 * 1024 * 1024 + 1) + b'"}'
    assert httpx.post(url, content=huge, headers=session_headers(key), timeout=60).status_code == 413
    bad = httpx.post(url, content=b"{nope", headers=session_headers(key))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    odd = httpx.post(url, json=turn_body(model="gpt-5.2\x00"), headers=session_headers(key))
    assert odd.status_code == 400 and odd.json()["error"]["param"] == "model"


def test_a_caller_without_a_valid_key_hears_401_whatever_its_body(pooler, simulator):
    """A turn's key is checked with its plan, after the body is read: a bad body must not answer first."""
    pool = make_pool()
    make_account(pool, simulator)
    url = f"{pooler.codex_base_url}/responses"
    huge = b'{"model": "gpt-5.2", "input": "' + b"x" * (16 * 1024 * 1024 + 1) + b'"}'
    for content in (b"{nope", huge, b'{"model": 7}'):
        for key in ("cpk_nope_nope", None):
            headers = session_headers(key) if key else {"content-type": "application/json"}
            response = httpx.post(url, content=content, headers=headers, timeout=60)
            assert response.status_code == 401, (content[:20], key, response.text)
    before = RequestLog.objects.count()
    assert post_turn(pooler, "cpk_nope_nope").status_code == 401
    assert RequestLog.objects.count() == before  # a refused key is no turn of anyone's


def test_zstd_and_gzip_bodies_are_accepted(pooler, simulator):
    import gzip
    import json

    import zstandard

    pool = make_pool()
    make_account(pool, simulator)
    _, key = make_key(pool)
    raw = json.dumps(turn_body("packed")).encode()
    for encoding, packed in [("zstd", zstandard.ZstdCompressor().compress(raw)), ("gzip", gzip.compress(raw))]:
        response = httpx.post(
            f"{pooler.codex_base_url}/responses",
            content=packed,
            timeout=30,
            headers={**session_headers(key), "Content-Encoding": encoding, "Content-Type": "application/json"},
        )
        assert reply_text(sse_events(response.text)) == "echo: packed"


def test_models_and_unknown_routes(pooler, simulator):
    pool = make_pool(allowed_models=["gpt-5.2", "gpt-5.1-codex"])
    make_account(pool, simulator)
    _, key = make_key(pool)
    headers = {"Authorization": f"Bearer {key}"}
    models = httpx.get(f"{pooler.codex_base_url}/models?client_version=0.169.0", headers=headers).json()["models"]
    assert {m["slug"] for m in models} <= {"gpt-5.2", "gpt-5.1-codex"} and models
    assert httpx.get(f"{pooler.codex_base_url}/anything", headers=headers).status_code == 404
    assert httpx.post(f"{pooler.url}/backend-api/other", headers=headers).status_code == 404


def test_models_are_the_union_of_the_pools_accounts(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator, plan_type="plus", sim_fields={"models": ["gpt-5.2"]})
    make_account(pool, simulator, plan_type="pro", sim_fields={"models": ["gpt-5.2", "gpt-6.1-sol"]})
    _, key = make_key(pool, allowed_models=["gpt-5.2", "gpt-6.1-sol", "gpt-5.1-codex"])
    headers = {"Authorization": f"Bearer {key}"}
    models = httpx.get(f"{pooler.codex_base_url}/models", headers=headers, timeout=30).json()["models"]
    assert sorted(m["slug"] for m in models) == ["gpt-5.2", "gpt-6.1-sol"]


def test_realtime_calls_proxy_the_sdp_answer(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    _, key = make_key(pool)
    offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"
    response = httpx.post(
        f"{pooler.codex_base_url}/realtime/calls",
        content=offer,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
    )
    assert response.status_code in (200, 201) and response.text.startswith("v=0")


def test_no_prompt_text_is_stored(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    _, key = make_key(pool)
    marker = f"secret-prompt-{uuid.uuid4().hex}"
    post_turn(pooler, key, turn_body(marker))
    from tests.test_secrets_at_rest import all_stored_text

    wait_for_log(route="codex.responses")
    assert marker not in all_stored_text()
    assert marker not in pooler.log()
    assert UpstreamAccount.objects.exists()


def temporary_files_held(pid: int) -> list[str]:
    """The deleted-on-open files (Python's temporary files) a process holds open."""
    fd_dir = Path(f"/proc/{pid}/fd")
    links = []
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            links.append(os.readlink(fd))
    return [link for link in links if link.endswith("(deleted)")]


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads the server's open files from /proc")
def test_an_open_stream_does_not_hold_its_request_body(pooler, simulator):
    """Daphne kept a request's body (above 100 KB, in a temporary file) until the answer ended."""
    pool = make_pool()
    account = make_account(pool, simulator)
    _, key = make_key(pool)
    simulator.patch_account(account.chatgpt_account_id, faults=[{"kind": "slow", "event_delay": 0.1}])
    body = turn_body("a long conversation")
    body["input"][0]["content"][0]["text"] = "The conversation so far. " * 8000  # 200 KB
    with httpx.stream(
        "POST", f"{pooler.codex_base_url}/responses", json=body, headers=session_headers(key), timeout=30
    ) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        received = next(chunks)  # streaming now: the upstream has the body
        assert temporary_files_held(pooler.process.pid) == []
        received += b"".join(chunks)
    assert reply_text(sse_events(received.decode())) == "echo: a long conversation"
