"""Upstream faults over HTTP and websocket: what the client sees, what the account becomes, what is logged,
and that nothing leaks (upstream streams, sockets, concurrency slots)."""

import json
import os
import time
import uuid

import httpx
import pytest
from django.conf import settings
from django.utils import timezone
from websockets.sync.client import connect

from accounts.models import ConcurrencySlot, RequestLog
from tests.codex_turns import reply_text, session_headers, sse_events, turn_body
from tests.factories import make_account, make_key, make_pool
from tests.support.pooler import PoolerServer, _free_port

pytestmark = pytest.mark.django_db(transaction=True)
FIRST_BYTE_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def faulty(django_db_setup, django_db_blocker, simulator):
    """A pooler that gives up on a silent upstream after one second."""
    server = PoolerServer(
        extra_env={"POOLER_AUTH_BASE_URL": simulator.url, "POOLER_FIRST_BYTE_TIMEOUT": str(FIRST_BYTE_TIMEOUT)}
    )
    yield server
    server.close()


def two_accounts(simulator, **first_fields):
    """Pool with a first account (where the fault is) and a healthy second one, fill_first."""
    pool = make_pool(strategy="fill_first")
    first = make_account(pool, simulator, membership={"priority": 0}, **first_fields)
    second = make_account(pool, simulator, membership={"priority": 1})
    key_row, key = make_key(pool)
    return first, second, key_row, key


def log_of(key_row, timeout=5, count=1) -> RequestLog:
    """The latest RequestLog row of a key, once it has `count` rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = RequestLog.objects.filter(api_key=key_row)
        if rows.count() >= count:
            return rows.order_by("-created_at").first()
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} RequestLog rows")


def open_sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:  # closed while we looked
            pass
    return count


def assert_nothing_leaked(simulator, key_row):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = simulator.stats()
        idle = stats["open_streams"] == 0 and stats["open_websockets"] == 0
        if idle and not ConcurrencySlot.objects.filter(api_key=key_row).exists():
            return
        time.sleep(0.1)
    raise AssertionError(f"leak: {simulator.stats()}, slots {ConcurrencySlot.objects.filter(api_key=key_row).count()}")


def wait_for_no_open_websockets(simulator, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while simulator.stats()["open_websockets"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert simulator.stats()["open_websockets"] == 0


HTTP_FAILOVER_CASES = {
    "connect refused": ({}, "connect", "connect"),
    "timeout before first byte": ({"kind": "slow", "first_byte_delay": 3}, "timeout", "timeout"),
    "500": ({"kind": "status", "status": 500}, "status 500", "status 500"),
    "502": ({"kind": "status", "status": 502}, "status 502", "status 502"),
    "503": ({"kind": "status", "status": 503}, "status 503", "status 503"),
    "429 rate_limit_exceeded": ({"kind": "rate_limit", "retry_after": 30}, "status 429", "rate_limited"),
    "401 with failing refresh": ("dead-token", "auth 401", "reauth_required"),
}


@pytest.mark.parametrize("case", HTTP_FAILOVER_CASES)
def test_http_fault_before_first_byte_fails_over(faulty, simulator, case):
    fault, attempt_outcome, health = HTTP_FAILOVER_CASES[case]
    extra = {"base_url": f"http://127.0.0.1:{_free_port()}/backend-api/codex"} if case == "connect refused" else {}
    first, second, key_row, key = two_accounts(simulator, **extra)
    if fault == "dead-token":
        simulator.patch_account(
            first.chatgpt_account_id, expire_access_token=True, faults=[{"kind": "refresh_invalid_grant"}]
        )
    elif fault:
        simulator.patch_account(first.chatgpt_account_id, faults=[fault])
    response = httpx.post(
        f"{faulty.codex_base_url}/responses", json=turn_body("survives"), headers=session_headers(key), timeout=30
    )
    assert response.status_code == 200 and reply_text(sse_events(response.text)) == "echo: survives"
    row = log_of(key_row)
    assert row.account == second and row.outcome == "ok"
    assert row.attempts[0]["account_id"] == first.id and row.attempts[0]["outcome"].startswith(attempt_outcome)
    first.refresh_from_db()
    if health == "reauth_required":
        assert first.status == "reauth_required"
    else:
        assert first.cooldown_until > timezone.now() and first.last_error
        if health == "rate_limited":
            assert first.cooldown_reason == "rate_limited"
    assert_nothing_leaked(simulator, key_row)


def test_http_usage_limit_cools_down_until_the_reset(faulty, simulator):
    first, second, key_row, key = two_accounts(simulator)
    simulator.patch_account(first.chatgpt_account_id, primary_used_percent=100.0, primary_reset_after_seconds=900)
    response = httpx.post(
        f"{faulty.codex_base_url}/responses", json=turn_body(), headers=session_headers(key), timeout=30
    )
    assert response.status_code == 200
    first.refresh_from_db()
    remaining = (first.cooldown_until - timezone.now()).total_seconds()
    assert first.cooldown_reason == "usage_limit_reached" and 850 < remaining <= 901
    assert log_of(key_row).account == second
    assert_nothing_leaked(simulator, key_row)


def test_http_401_with_working_refresh_stays_on_the_account(faulty, simulator):
    first, _, key_row, key = two_accounts(simulator)
    simulator.patch_account(first.chatgpt_account_id, faults=[{"kind": "expire_token"}])
    response = httpx.post(
        f"{faulty.codex_base_url}/responses", json=turn_body(), headers=session_headers(key), timeout=30
    )
    assert response.status_code == 200
    first.refresh_from_db()
    assert log_of(key_row).account == first and first.status == "active" and first.last_refresh_at
    assert_nothing_leaked(simulator, key_row)


def test_http_stream_cut_midway_passes_through_without_retry(faulty, simulator):
    first, _, key_row, key = two_accounts(simulator)
    simulator.patch_account(first.chatgpt_account_id, faults=[{"kind": "cut", "after_events": 4}])
    response = httpx.post(
        f"{faulty.codex_base_url}/responses", json=turn_body(), headers=session_headers(key), timeout=30
    )
    events = sse_events(response.text)
    assert response.status_code == 200 and events and events[-1]["type"] != "response.completed"
    row = log_of(key_row)
    assert row.outcome == "upstream_cut" and row.account == first and len(row.attempts) == 1
    assert_nothing_leaked(simulator, key_row)


def test_http_slow_stream_is_relayed_as_it_comes(faulty, simulator):
    first, _, key_row, key = two_accounts(simulator)
    simulator.patch_account(first.chatgpt_account_id, faults=[{"kind": "slow", "event_delay": 0.1}])
    response = httpx.post(
        f"{faulty.codex_base_url}/responses", json=turn_body("slowly"), headers=session_headers(key), timeout=30
    )
    assert reply_text(sse_events(response.text)) == "echo: slowly"
    row = log_of(key_row)
    assert row.outcome == "ok" and row.ttft_ms < 500 and row.duration_ms > 1000


def test_http_client_gone_before_the_first_byte(faulty, simulator):
    first, _, key_row, key = two_accounts(simulator)
    simulator.patch_account(first.chatgpt_account_id, faults=[{"kind": "slow", "first_byte_delay": 0.8}])
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{faulty.codex_base_url}/responses",
            json=turn_body(),
            headers=session_headers(key),
            timeout=httpx.Timeout(30, read=0.3),
        )
    row = log_of(key_row)
    assert row.outcome == "client_closed"
    first.refresh_from_db()
    assert first.cooldown_until is None  # the client left: not the account's fault
    assert_nothing_leaked(simulator, key_row)


def test_http_faults_leave_no_sockets_behind(faulty, simulator):
    first, _, key_row, key = two_accounts(simulator)
    pid = faulty.process.pid
    httpx.post(f"{faulty.codex_base_url}/responses", json=turn_body(), headers=session_headers(key), timeout=30)
    before = open_sockets(pid)
    for i in range(60):
        simulator.patch_account(
            first.chatgpt_account_id,
            faults=[[{"kind": "cut", "after_events": 3}], [{"kind": "status", "status": 503}], []][i % 3],
            primary_used_percent=0,
        )
        first.cooldown_until = None
        first.save(update_fields=["cooldown_until"])
        try:
            with httpx.stream(
                "POST", f"{faulty.codex_base_url}/responses", json=turn_body(), headers=session_headers(key), timeout=30
            ) as response:
                next(response.iter_raw())
        except httpx.HTTPError:
            pass
    assert_nothing_leaked(simulator, key_row)
    # Kept-alive upstream connections are no leak: one at most in each connection pool (a turn's session picks
    # its pool), where a leak would grow with the 40 failed turns.
    assert open_sockets(pid) <= before + settings.POOLER_UPSTREAM_POOLS + 5


def ws_turn(url: str, key: str, text: str = "hello") -> list[dict]:
    with connect(url, additional_headers={"Authorization": f"Bearer {key}", "session-id": str(uuid.uuid4())}) as ws:
        ws.send(json.dumps({"type": "response.create", **turn_body(text)}))
        return read_ws_turn(ws)


def read_ws_turn(ws) -> list[dict]:
    events = []
    while True:
        try:
            events.append(json.loads(ws.recv(timeout=20)))
        except Exception:  # noqa: BLE001 - a close ends the turn too
            return events
        if events[-1]["type"] in ("response.completed", "response.failed", "error"):
            return events


WS_FAILOVER_CASES = {
    "connect refused": None,
    "500 error frame": {"kind": "status", "status": 500},
    "502 error frame": {"kind": "status", "status": 502},
    "503 error frame": {"kind": "status", "status": 503},
    "429 rate_limit_exceeded": {"kind": "rate_limit", "retry_after": 30},
    "usage limit": "exhausted",
    "401 with failing refresh": "dead-token",
}


@pytest.mark.parametrize("case", WS_FAILOVER_CASES)
def test_websocket_fault_before_first_event_fails_over(faulty, simulator, case):
    fault = WS_FAILOVER_CASES[case]
    extra = {"base_url": f"http://127.0.0.1:{_free_port()}/backend-api/codex"} if case == "connect refused" else {}
    first, second, key_row, key = two_accounts(simulator, **extra)
    if fault == "exhausted":
        simulator.patch_account(first.chatgpt_account_id, primary_used_percent=100.0)
    elif fault == "dead-token":
        simulator.patch_account(
            first.chatgpt_account_id, expire_access_token=True, faults=[{"kind": "refresh_invalid_grant"}]
        )
    elif fault:
        simulator.patch_account(first.chatgpt_account_id, faults=[fault])
    events = ws_turn(faulty.codex_base_url.replace("http://", "ws://") + "/responses", key, "ws survives")
    assert reply_text(events) == "echo: ws survives" and not any(e["type"] == "error" for e in events)
    row = log_of(key_row)
    assert row.account == second and row.transport == "websocket" and row.attempts[0]["account_id"] == first.id
    first.refresh_from_db()
    assert first.status == "reauth_required" if fault == "dead-token" else first.cooldown_until > timezone.now()
    assert_nothing_leaked(simulator, key_row)


def test_websocket_401_with_working_refresh_stays_on_the_account(faulty, simulator):
    first, _, key_row, key = two_accounts(simulator)
    url = faulty.codex_base_url.replace("http://", "ws://") + "/responses"
    with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        ws.send(json.dumps({"type": "response.create", **turn_body("one")}))
        one = read_ws_turn(ws)
        # The access token dies while the connection is open: the next turn is answered 401.
        simulator.patch_account(first.chatgpt_account_id, faults=[{"kind": "expire_token"}])
        ws.send(
            json.dumps({"type": "response.create", **turn_body("two", previous_response_id=one[-1]["response"]["id"])})
        )
        assert reply_text(read_ws_turn(ws)) == "echo: two"
    row = log_of(key_row, count=2)
    assert row.account == first and row.outcome == "ok" and row.migrated_from is None
    assert [a["account_id"] for a in row.attempts] == [first.id]
    first.refresh_from_db()
    assert first.status == "active" and first.last_refresh_at and first.cooldown_until is None
    assert simulator.get_account(first.chatgpt_account_id)["refresh_count"] == 1
    assert_nothing_leaked(simulator, key_row)


def test_websocket_slow_stream_is_relayed_as_it_comes(faulty, simulator):
    first, _, key_row, key = two_accounts(simulator)
    simulator.patch_account(first.chatgpt_account_id, faults=[{"kind": "slow", "event_delay": 0.1}])
    events = ws_turn(faulty.codex_base_url.replace("http://", "ws://") + "/responses", key, "slowly")
    assert reply_text(events) == "echo: slowly"
    row = log_of(key_row)
    assert row.outcome == "ok" and row.transport == "websocket" and row.ttft_ms < 500 and row.duration_ms > 1000
    assert_nothing_leaked(simulator, key_row)


def test_websocket_cut_midway_closes_the_client(faulty, simulator):
    first, _, key_row, key = two_accounts(simulator)
    simulator.patch_account(first.chatgpt_account_id, faults=[{"kind": "cut", "after_events": 4}])
    events = ws_turn(faulty.codex_base_url.replace("http://", "ws://") + "/responses", key)
    assert events and events[-1]["type"] != "response.completed"
    assert log_of(key_row).outcome == "upstream_cut"
    assert_nothing_leaked(simulator, key_row)


def start_turn_then_leave(faulty, key: str, leave) -> None:
    """Open a websocket, start a turn, call `leave(ws)`, then close the connection."""
    url = faulty.codex_base_url.replace("http://", "ws://") + "/responses"
    with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        ws.send(json.dumps({"type": "response.create", **turn_body()}))
        leave(ws)


def test_websocket_client_disconnect_mid_turn_closes_the_upstream(faulty, simulator):
    first, _, key_row, key = two_accounts(simulator)
    simulator.patch_account(first.chatgpt_account_id, faults=[{"kind": "slow", "event_delay": 0.3}])
    start_turn_then_leave(faulty, key, lambda ws: ws.recv(timeout=10))  # after the first event
    assert log_of(key_row).outcome == "client_closed"
    wait_for_no_open_websockets(simulator, timeout=10)
    assert_nothing_leaked(simulator, key_row)


def test_websocket_client_gone_before_the_first_event(faulty, simulator):
    first, _, key_row, key = two_accounts(simulator)
    simulator.patch_account(first.chatgpt_account_id, faults=[{"kind": "slow", "first_byte_delay": 5}])
    start_turn_then_leave(faulty, key, lambda ws: time.sleep(0.3))
    # Before the upstream's first event (5 s) would have come: all is let go when the client leaves.
    wait_for_no_open_websockets(simulator, timeout=3)
    row = log_of(key_row, timeout=3)
    assert row.outcome == "client_closed" and row.transport == "websocket"
    first.refresh_from_db()
    assert first.cooldown_until is None  # the client left: not the account's fault
    assert_nothing_leaked(simulator, key_row)
