"""The pool's quota as a key's clients see it: in turn headers, `codex.rate_limits` events, the websocket
handshake and `GET /backend-api/wham/usage`, in place of the figures of whichever account served a turn.

The formula (README.md, "The pool's quota"), per window: the mean, weighted by membership weight, of the used
percent of the pool's active accounts, an account that cannot serve counting 100; it resets when the first
account's part of it goes down (when every account is out: the pool's soonest comeback).
"""

import glob
import json
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.utils import timezone
from websockets.sync.client import connect

from accounts.models import UpstreamAccount
from proxy.pool_quota import aggregate
from tests.codex_turns import session_headers, sse_events, turn_body
from tests.factories import make_account, make_key, make_pool
from tests.support.codex import run_codex
from tests.support.pooler import PoolerServer
from tests.test_codex_sessions import turns_of
from tests.test_websocket_route import create_frame, read_turn, ws_headers, ws_url

pytestmark = pytest.mark.django_db(transaction=True)
TRANSPORTS = pytest.mark.parametrize("websockets", [False, True], ids=["http", "websocket"])


@pytest.fixture(scope="module")
def pooler(django_db_setup, django_db_blocker, simulator):
    """A pooler that keeps its routing snapshot for a minute: each test's pool is read once, at its first turn,
    so the figures the test set are the ones shown (the turns themselves move the accounts' figures)."""
    server = PoolerServer(extra_env={"POOLER_AUTH_BASE_URL": simulator.url, "POOLER_ROUTING_CACHE_SECONDS": "60"})
    yield server
    server.close()


def whole_seconds(seconds: float):
    return timezone.now().replace(microsecond=0) + timedelta(seconds=seconds)


def account(primary=0.0, secondary=0.0, *, primary_reset=3600, secondary_reset=86400, weight=1, **fields):
    """An account as the routing snapshot holds it (not saved): figures and resets in seconds from now."""
    row = UpstreamAccount(
        status=fields.pop("status", "active"),
        primary_used_percent=primary,
        secondary_used_percent=secondary,
        primary_resets_at=whole_seconds(primary_reset) if primary_reset is not None else None,
        secondary_resets_at=whole_seconds(secondary_reset) if secondary_reset is not None else None,
        **fields,
    )
    row.weight = weight
    return row


def at_known_percents(pool, simulator, primary: float, secondary: float, primary_reset: int, secondary_reset: int):
    """An account of `pool` whose figures are the same at the simulator and in the pooler's snapshot."""
    primary_at, secondary_at = whole_seconds(primary_reset), whole_seconds(secondary_reset)
    return make_account(
        pool,
        simulator,
        primary_used_percent=primary,
        secondary_used_percent=secondary,
        primary_resets_at=primary_at,
        secondary_resets_at=secondary_at,
        primary_window_minutes=300,
        secondary_window_minutes=10080,
        plan_type="plus",
        sim_fields={
            "primary_used_percent": primary,
            "secondary_used_percent": secondary,
            "primary_reset_at": int(primary_at.timestamp()),
            "secondary_reset_at": int(secondary_at.timestamp()),
        },
    )


def three_account_pool(simulator, **pool_fields):
    """20 %, 50 % and an exhausted account (back in 30 minutes): the pool has used (20 + 50 + 100) / 3 = 56.7 %
    of its five hours, back first when the exhausted one is; (10 + 30 + 60) / 3 = 33.3 % of its week."""
    pool = make_pool(**pool_fields)
    low = at_known_percents(pool, simulator, 20.0, 10.0, 2 * 3600, 5 * 86400)
    mid = at_known_percents(pool, simulator, 50.0, 30.0, 3 * 3600, 6 * 86400)
    out = at_known_percents(pool, simulator, 100.0, 60.0, 30 * 60, 4 * 86400)
    key_row, key = make_key(pool)
    expected = {
        "primary": (56.7, 300, int(out.primary_resets_at.timestamp())),
        "secondary": (33.3, 10080, int(out.secondary_resets_at.timestamp())),
    }
    return (low, mid, out), key_row, key, expected


def header_windows(headers) -> dict:
    return {
        name: (
            float(headers[f"x-codex-{name}-used-percent"]),
            int(headers[f"x-codex-{name}-window-minutes"]),
            int(headers[f"x-codex-{name}-reset-at"]),
        )
        for name in ("primary", "secondary")
    }


def event_windows(limits: dict) -> dict:
    return {
        name: (w["used_percent"], w["window_minutes"], w.get("reset_at", w.get("resets_at")))
        for name, w in limits.items()
        if name in ("primary", "secondary")
    }


# The formula, on accounts as the snapshot holds them.


def test_the_pool_is_the_mean_of_the_accounts_that_can_serve():
    now = timezone.now()
    view = aggregate(
        [
            account(20.0, 10.0, primary_reset=7200),
            account(50.0, 30.0, primary_reset=10800),
            account(100.0, 60.0, primary_reset=1800),  # exhausted: back in 30 minutes
            account(90.0, 90.0, status="paused"),  # serves nobody: not part of the pool's capacity
        ],
        now,
    )
    assert (view.primary.used_percent, view.secondary.used_percent) == (56.7, 33.3)
    assert (view.primary.window_minutes, view.secondary.window_minutes) == (300, 10080)
    assert view.primary.resets_at == whole_seconds(1800) and not view.limit_reached


def test_an_account_counts_up_to_its_reserve_and_by_its_weight():
    now = timezone.now()
    reserved = aggregate([account(40.0, reserve_percent=80.0), account(85.0, reserve_percent=80.0)], now)
    assert reserved.primary.used_percent == (50.0 + 100.0) / 2  # 40 of 80 is half of what it may give
    weighted = aggregate([account(10.0, weight=3), account(50.0, weight=1)], now)
    assert weighted.primary.used_percent == (3 * 10.0 + 50.0) / 4


def test_an_account_out_of_its_week_has_no_five_hours_to_give_either():
    view = aggregate([account(10.0, 100.0, secondary_reset=3 * 86400), account(30.0, 40.0)], timezone.now())
    assert view.primary.used_percent == (100.0 + 30.0) / 2
    assert view.secondary.used_percent == (100.0 + 40.0) / 2
    # Its five hours come back with its week, after the other account's five hours.
    assert view.primary.resets_at == whole_seconds(3600)
    assert view.secondary.resets_at == whole_seconds(86400)


def test_an_exhausted_pool_resets_when_its_first_account_comes_back():
    view = aggregate([account(100.0, primary_reset=5400), account(100.0, primary_reset=2400)], timezone.now())
    assert view.limit_reached and view.primary.used_percent == 100.0
    assert view.primary.resets_at == whole_seconds(2400)


def test_a_window_past_its_reset_is_empty_and_an_unused_pool_starts_afresh():
    now = timezone.now()
    view = aggregate([account(70.0, 70.0, primary_reset=-60, secondary_reset=-60)], now)
    assert (view.primary.used_percent, view.secondary.used_percent) == (0.0, 0.0)
    assert view.primary.resets_at is None
    assert view.primary.reset_at(now) == now + timedelta(minutes=300)


# What clients see through the pooler.


def test_http_turns_show_the_pool_not_the_account_that_served_them(pooler, simulator):
    accounts, key_row, key, expected = three_account_pool(simulator, strategy="round_robin")
    shown = []
    for _ in range(2):
        response = httpx.post(f"{pooler.codex_base_url}/responses", json=turn_body(), headers=session_headers(key))
        assert response.status_code == 200, response.text
        assert sse_events(response.text)[-1]["type"] == "response.completed"
        shown.append(header_windows(response.headers))
        assert response.headers["x-codex-credits-has-credits"] == "false"
    rows = turns_of(key_row, 2)
    assert rows[0].account != rows[1].account  # two accounts served, one view: the numbers do not jump
    assert shown == [expected, expected]
    # The pooler's own accounting still gets each account's figures (the simulator adds 1 % a turn).
    served = {a.pk: a for a in accounts}[rows[0].account_id]
    served.refresh_from_db()
    assert served.primary_used_percent in (21.0, 51.0)


def test_the_websocket_shows_the_pool_in_rate_limit_events(pooler, simulator):
    accounts, key_row, key, expected = three_account_pool(simulator)
    with connect(ws_url(pooler), additional_headers=ws_headers(key)) as ws:
        ws.send(create_frame("hello"))
        events = read_turn(ws)
        # An error the backend passes on (the client's fault) carries headers too: the pool's as well.
        ws.send(create_frame("hello", model="gpt-unheard-of"))
        refused = read_turn(ws)[-1]
        assert refused["status"] == 400 and header_windows(refused["headers"]) == expected
    limits = next(e for e in events if e["type"] == "codex.rate_limits")
    assert event_windows(limits["rate_limits"]) == expected
    assert limits["metered_limit_name"] == "codex" and limits["plan_type"] == "plus"
    assert limits["credits"] == {"has_credits": False, "unlimited": False, "balance": "0"}
    assert events[-1]["type"] == "response.completed"
    row = turns_of(key_row, 1)[0]
    served = {a.pk: a for a in accounts}[row.account_id]
    served.refresh_from_db()
    assert served.primary_used_percent in (21.0, 51.0)  # the account's own figure, from the upstream event


def test_wham_usage_answers_the_pool_in_the_backend_shape(pooler, simulator):
    _, _, key, expected = three_account_pool(simulator)
    response = httpx.get(f"{pooler.url}/backend-api/wham/usage", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    usage = response.json()
    assert usage["plan_type"] == "plus" and usage["credits"]["has_credits"] is False
    limits = usage["rate_limit"]
    assert (limits["allowed"], limits["limit_reached"]) == (True, False)
    for name, (used, minutes, reset_at) in expected.items():
        window = limits[f"{name}_window"]
        assert (window["used_percent"], window["limit_window_seconds"], window["reset_at"]) == (
            used,
            minutes * 60,
            reset_at,
        )
        assert abs(window["reset_after_seconds"] - (reset_at - time.time())) <= 2


def test_wham_usage_wants_a_pool_key(pooler):
    for headers in ({}, {"Authorization": "Bearer cpk_not_a_key"}):
        response = httpx.get(f"{pooler.url}/backend-api/wham/usage", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


def test_an_exhausted_pool_says_when_its_first_account_comes_back(pooler, simulator):
    pool = make_pool()
    at_known_percents(pool, simulator, 100.0, 40.0, 90 * 60, 5 * 86400)
    soonest = at_known_percents(pool, simulator, 100.0, 70.0, 40 * 60, 6 * 86400)
    _, key = make_key(pool)
    refused = httpx.post(f"{pooler.codex_base_url}/responses", json=turn_body(), headers=session_headers(key))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "usage_limit_reached"
    usage = httpx.get(f"{pooler.url}/backend-api/wham/usage", headers={"Authorization": f"Bearer {key}"}).json()
    limits = usage["rate_limit"]
    assert (limits["allowed"], limits["limit_reached"]) == (False, True)
    assert limits["primary_window"]["used_percent"] == 100.0
    assert limits["primary_window"]["reset_at"] == int(soonest.primary_resets_at.timestamp())
    # The same time as the usage-limit error the CLI shows ("try again at …").
    assert abs(refused.json()["error"]["resets_at"] - limits["primary_window"]["reset_at"]) <= 2


# The real Codex CLI: what it received, as it stored it in the session's rollout (`token_count` events carry the
# rate limits it was last given; `codex exec --json` prints none).


def received_rate_limits(home: Path) -> list[dict]:
    found = []
    for rollout in glob.glob(str(home / "sessions" / "**" / "*.jsonl"), recursive=True):
        for line in Path(rollout).read_text().splitlines():
            payload = json.loads(line).get("payload") or {}
            if payload.get("type") == "token_count" and payload.get("rate_limits"):
                found.append(payload["rate_limits"])
    return found


@pytest.mark.codex_cli
@TRANSPORTS
def test_the_codex_cli_receives_the_pool_quota(codex_bin, pooler, simulator, tmp_path, websockets):
    _, key_row, key, expected = three_account_pool(simulator)
    simulator.clear_requests()
    result = run_codex(
        codex_bin,
        pooler.codex_base_url,
        key,
        "say hi",
        websockets=websockets,
        home=tmp_path / "home",
        cwd=tmp_path / "work",
        json_events=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "echo: say hi" in result.stdout
    received = received_rate_limits(tmp_path / "home")
    assert received, "the CLI stored no rate limits"
    assert event_windows(received[-1]) == expected
    assert received[-1]["credits"] == {"has_credits": False, "unlimited": False, "balance": "0"}
    transports = {r["transport"] for r in simulator.requests() if r.get("kind") in ("turn", "prewarm")}
    assert transports == {"websocket" if websockets else "http"}
    assert turns_of(key_row, 1)[0].outcome == "ok"
