"""Budgets over rolling windows, counted in PostgreSQL from finished turns: two gateway processes refuse at the
documented point with Retry-After on both transports and /v1, and GET /v1/usage shows a key its windows."""

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.utils import timezone
from websockets.sync.client import connect

from accounts import budgets
from accounts.models import RequestLog
from proxy.errors import RateLimited
from proxy.limits import admit
from tests.codex_turns import session_headers, turn_body
from tests.factories import make_account, make_key, make_pool
from tests.support.rows import key_rows
from tests.test_websocket_route import read_turn, ws_headers, ws_url

pytestmark = pytest.mark.django_db(transaction=True)


def row(key, tokens: int, ago: timedelta, model: str = "gpt-5.2", cost: str | None = None) -> RequestLog:
    return RequestLog.objects.create(
        request_id="r",
        api_key=key,
        pool=key.pool,
        route="codex.responses",
        model=model,
        total_tokens=tokens,
        output_tokens=tokens // 2,
        cost_usd=Decimal(cost) if cost else None,
        created_at=timezone.now() - ago,
    )


def test_a_rolling_window_refuses_until_its_oldest_turns_leave_it(db):
    key, _ = make_key(make_pool(), budgets=[{"window": "5h", "kind": "tokens", "amount": 1000}])
    row(key, 600, timedelta(hours=6))  # out of the window
    row(key, 400, timedelta(hours=4))
    row(key, 300, timedelta(hours=2))
    admit(key, "a")  # 700 of 1000
    row(key, 300, timedelta(hours=1))
    with pytest.raises(RateLimited) as error:
        admit(key, "b")  # 1000 of 1000
    assert error.value.code == "key_budget_exceeded" and "1,000 tokens per 5h" in error.value.message
    # The 4-hours-old turn leaves the window in one hour, and then 600 are left in it.
    assert 3590 <= error.value.retry_after <= 3601
    (report,) = budgets.report(key, timezone.now())
    assert (report["used"], report["remaining"], report["exhausted"]) == (1000, 0, True)


def test_budgets_of_one_model_and_of_cost_and_pool_defaults(db):
    pool = make_pool(default_budgets=[{"window": "day", "kind": "cost", "amount": 1}])
    key, _ = make_key(pool)
    row(key, 10, timedelta(minutes=5), cost="0.6")
    admit(key, "a")
    row(key, 10, timedelta(minutes=4), cost="0.4")
    with pytest.raises(RateLimited) as error:
        admit(key, "b")
    assert "$1.00 per day" in error.value.message
    own, _ = make_key(pool, budgets=[{"window": "week", "kind": "output_tokens", "amount": 100, "model": "gpt-5.5"}])
    row(own, 400, timedelta(days=1), model="gpt-5.2")
    admit(own, "c")  # other models do not count
    row(own, 200, timedelta(days=1), model="gpt-5.5")
    with pytest.raises(RateLimited):
        admit(own, "d")


def _http(server, key: str, text: str = "hello") -> httpx.Response:
    return httpx.post(
        f"{server.codex_base_url}/responses", json=turn_body(text), headers=session_headers(key), timeout=30
    )


def _v1(server, key: str) -> httpx.Response:
    body = {"model": "gpt-5.2", "input": "hello"}
    return httpx.post(f"{server.url}/v1/responses", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _ws_error(server, key: str) -> dict | None:
    """One websocket turn: None when served, else its error frame."""
    with connect(ws_url(server), additional_headers=ws_headers(key)) as ws:
        ws.send(json.dumps({"type": "response.create", **turn_body()}))
        last = read_turn(ws)[-1]
    return None if last["type"] == "response.completed" else last


@pytest.mark.parametrize(
    "budget",
    [
        {"window": "5h", "kind": "tokens", "amount": 2000},
        {"window": "day", "kind": "cost", "amount": "0.003"},
        {"window": "month", "kind": "input_tokens", "amount": 1500},
    ],
    ids=["tokens_per_5h", "cost_per_day", "input_tokens_per_month"],
)
def test_two_processes_refuse_a_spent_budget_on_every_route(pooler, second_pooler, simulator, budget):
    pool = make_pool()
    make_account(pool, simulator)
    key, raw = make_key(pool, budgets=[budget])
    amount = Decimal(str(budget["amount"]))
    column = budgets.KINDS[budget["kind"]]
    served = 0
    # Turns alternate between the processes and the routes until one is refused: each sees the other's turns.
    for turn in range(60):
        server = (pooler, second_pooler)[turn % 2]
        route = turn % 3
        if route == 0:
            ok = _http(server, raw, "x" * 2000).status_code == 200
        elif route == 1:
            ok = _v1(server, raw).status_code == 200
        else:
            ok = _ws_error(server, raw) is None
        if not ok:
            break
        served += 1
        key_rows(key, served, status_code=200)
    else:
        pytest.fail("the budget was never reached")
    rows = key_rows(key, served, status_code=200)
    spent = sum(getattr(r, column) for r in rows)
    largest = max(getattr(r, column) for r in rows)
    # One turn at a time: refused at the first turn after the budget was reached, so passed by at most one turn.
    assert amount <= spent < amount + largest
    for server in (pooler, second_pooler):
        refused = _http(server, raw)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "key_budget_exceeded"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert budget["window"] in refused.json()["error"]["message"]
        window = budgets.WINDOWS[budget["window"]]
        assert 0 < int(refused.headers["Retry-After"]) <= window.total_seconds()
        assert _v1(server, raw).status_code == 429
        error = _ws_error(server, raw)
        assert error["status"] == 429 and error["error"]["code"] == "key_budget_exceeded"
        assert int(error["headers"]["retry-after"]) > 0
    usage = httpx.get(f"{second_pooler.url}/v1/usage", headers={"Authorization": f"Bearer {raw}"}, timeout=10).json()
    (window,) = usage["budgets"]
    assert window["exhausted"] and window["remaining"] == 0 and window["resets_at"]
    assert Decimal(str(window["used"])) >= amount and window["window"] == budget["window"]


def test_v1_usage_shows_a_key_its_windows(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    key, raw = make_key(
        pool,
        budgets=[
            {"window": "5h", "kind": "tokens", "amount": 200000},
            {"window": "week", "kind": "output_tokens", "amount": 1000000, "model": "gpt-5.5"},
        ],
    )
    assert _http(pooler, raw).status_code == 200
    (turn,) = key_rows(key, 1, status_code=200)
    usage = httpx.get(f"{pooler.url}/v1/usage", headers={"Authorization": f"Bearer {raw}"}, timeout=10)
    assert usage.status_code == 200
    five_hours, week = usage.json()["budgets"]
    assert (five_hours["used"], five_hours["remaining"]) == (turn.total_tokens, 200000 - turn.total_tokens)
    assert five_hours["window_seconds"] == 5 * 3600 and five_hours["resets_at"]
    assert (week["model"], week["used"], week["resets_at"]) == ("gpt-5.5", 0, None)
    assert httpx.get(f"{pooler.url}/v1/usage", timeout=10).status_code == 401
    # The Codex backend's usage route answers the same windows beside the pool's quota.
    wham = httpx.get(f"{pooler.url}/backend-api/wham/usage", headers={"Authorization": f"Bearer {raw}"}, timeout=10)
    assert wham.json()["key_budgets"] == usage.json()["budgets"] and "rate_limit" in wham.json()


def test_turns_side_by_side_pass_a_budget_by_at_most_the_readmes_bound(pooler, second_pooler, simulator):
    """README: a window ends up over its amount by at most `max_concurrent × (max input + max output)` tokens."""
    pool = make_pool()
    account = make_account(pool, simulator)
    # Slow turns, so that every turn let in is still running when the others start.
    simulator.patch_account(account.chatgpt_account_id, faults=[{"kind": "slow", "event_delay": 0.1, "count": 1000}])
    concurrent, max_input, max_output, amount = 3, 1000, 600, 5000
    key, raw = make_key(
        pool,
        max_concurrent=concurrent,
        max_input_tokens=max_input,
        max_output_tokens=max_output,
        budgets=[{"window": "5h", "kind": "tokens", "amount": amount}],
    )
    row(key, amount - 1, timedelta(minutes=1))  # one token short of the budget: every next turn is let in
    text = "x" * 1800  # about 600 input tokens (estimated as the request's JSON bytes ÷ 4) and 500 output tokens

    def turn(index: int) -> int:
        server = (pooler, second_pooler)[index % 2]
        body = turn_body(text, max_output_tokens=100000)  # lowered to the key's max_output_tokens
        response = httpx.post(f"{server.codex_base_url}/responses", json=body, headers=session_headers(raw), timeout=60)
        return response.status_code

    # Twice as many turns as the key may run at once, on both processes: max_concurrent lets `concurrent` in.
    with ThreadPoolExecutor(2 * concurrent) as pool_of_clients:
        statuses = list(pool_of_clients.map(turn, range(2 * concurrent)))
    served = statuses.count(200)
    assert 2 <= served <= concurrent and set(statuses) <= {200, 429}, statuses
    turns = key_rows(key, served, status_code=200, route="codex.responses", transport="http")
    for each in turns:
        assert each.input_tokens <= max_input and each.output_tokens <= max_output
    upstream = simulator.requests(account_id=account.chatgpt_account_id, kind="turn")
    assert upstream and all(r["max_output_tokens"] == max_output for r in upstream)
    spent = sum(r.total_tokens for r in RequestLog.objects.filter(api_key=key))
    # Side by side, each turn let in while the window was under its amount finished and counted.
    assert spent - amount == sum(t.total_tokens for t in turns) - 1 > 0
    assert spent - amount <= concurrent * (max_input + max_output)
    # Once they are written, the next turn is refused on either process.
    for server in (pooler, second_pooler):
        refused = _http(server, raw)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "key_budget_exceeded"
