"""API-equivalent cost: every turn is priced at the price in force when it ran, and the operator finds that cost on
the row, in the dashboard, in `pooler_status`, in the MCP `usage_summary` and in /metrics. A later price leaves
the past as it was; a model without a price reads "unpriced", never $0.00."""

import io
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from accounts import pricing
from accounts.models import AuditLog, ModelPrice, RequestLog
from simulator.state import DEFAULT_MODELS
from tests.codex_turns import session_headers, sse_events, turn_body
from tests.factories import make_account, make_key, make_mcp_token, make_pool
from tests.support.pooler import PoolerServer
from tests.test_http_route import wait_for_log
from tests.test_mcp import call_all
from tests.test_metrics import samples, total

pytestmark = pytest.mark.django_db(transaction=True)

UNPRICED_MODEL = "gpt-experimental-9"


@pytest.fixture(scope="module")
def pooler(django_db_setup, django_db_blocker, simulator):
    """The pooler reading the price table at every turn, so that a price a test sets applies to the next turn."""
    server = PoolerServer(extra_env={"POOLER_AUTH_BASE_URL": simulator.url, "POOLER_PRICES_CACHE_SECONDS": "0"})
    yield server
    server.close()


def run_turn(pooler, key: str, model: str, input_tokens: int) -> tuple[RequestLog, dict]:
    """A Codex turn whose usage reports `input_tokens` (the simulator serves half of them from the cache): its
    row and the usage the client was told."""
    body = turn_body(f"@tokens {input_tokens}\n@say priced", model=model)
    response = httpx.post(f"{pooler.codex_base_url}/responses", json=body, headers=session_headers(key), timeout=30)
    assert response.status_code == 200, response.text
    completed = next(e for e in sse_events(response.text) if e["type"] == "response.completed")
    return wait_for_log(response.headers["x-request-id"]), completed["response"]["usage"]


def by_hand(usage: dict, per_million: tuple) -> Decimal:
    """The API bill of a usage object: cached tokens are part of input_tokens, reasoning part of output_tokens."""
    input_price, cached_price, output_price = (Decimal(str(p)) for p in per_million)
    cached = usage["input_tokens_details"]["cached_tokens"]
    dollars = (
        (usage["input_tokens"] - cached) * input_price + cached * cached_price + usage["output_tokens"] * output_price
    )
    return dollars / 1_000_000


def shipped(model: str) -> pricing.Price:
    return next(p for p in pricing.shipped_prices() if p.model == model)


def dashboard(admin_client) -> str:
    response = admin_client.get("/admin/dashboard/")
    assert response.status_code == 200
    return re.sub(r"\s+", " ", response.content.decode())


def status_rows() -> dict[str, list[str]]:
    """The lines of `pooler_status` by their first cell (an account's label, a key's prefix…, a model): its
    cells, which the tables keep at least two spaces apart."""
    out = io.StringIO()
    call_command("pooler_status", stdout=out)
    cells = [re.split(r"\s{2,}", line.strip()) for line in out.getvalue().splitlines() if line.strip()]
    return {row[0]: row for row in cells}


def month_gauges(pooler, name: str) -> dict[tuple, float]:
    """A pooler_month_* gauge of /metrics by (pool, key, account, model)."""
    found = samples(httpx.get(f"{pooler.url}/metrics").text)
    return {
        tuple(dict(labels)[k] for k in ("pool", "key", "account", "model")): value
        for (n, labels), value in found.items()
        if n == name
    }


def summary(pooler, token: str, **arguments) -> dict:
    _, [result] = call_all(f"{pooler.url}/mcp", token, [("usage_summary", arguments)])
    assert not result.is_error, result.content
    return result.structured_content


def test_turns_are_priced_when_they_run_and_keep_that_price(pooler, simulator, admin_client):
    pool = make_pool()
    account = make_account(pool, simulator, sim_fields={"models": [*DEFAULT_MODELS, UNPRICED_MODEL]})  # one unpriced
    api_key, key = make_key(pool, name="laptop")
    _, mcp_token = make_mcp_token(get_user_model().objects.get(username="admin"))
    # gpt-5.2 at the operator's price, on the day the shipped file gives its own: the admin's row wins.
    gpt52_day = shipped("gpt-5.2").effective_from
    operator_price = ModelPrice.objects.create(
        model="gpt-5.2",
        effective_from=gpt52_day,
        input_usd_per_million=Decimal("2.00"),
        cached_input_usd_per_million=Decimal("0.20"),
        output_usd_per_million=Decimal("10.00"),
    )
    sol = shipped("gpt-6.1-sol")  # gpt-6.1-sol at the shipped price

    first, first_usage = run_turn(pooler, key, "gpt-5.2", 1_000_000)
    second, second_usage = run_turn(pooler, key, "gpt-5.2", 1_000_000)
    third, third_usage = run_turn(pooler, key, "gpt-6.1-sol", 3_000_000)
    unpriced, _ = run_turn(pooler, key, UNPRICED_MODEL, 1000)

    # The simulator reports reasoning inside output_tokens, as the Responses API does: it is billed once.
    assert 0 < third_usage["output_tokens_details"]["reasoning_tokens"] < third_usage["output_tokens"]
    assert first.cost_usd == by_hand(first_usage, (2.00, 0.20, 10.00))
    assert second.cost_usd == by_hand(second_usage, (2.00, 0.20, 10.00))
    assert third.cost_usd == by_hand(third_usage, (sol.input, sol.cached_input, sol.output))
    assert unpriced.cost_usd is None
    gpt52 = first.cost_usd + second.cost_usd
    assert f"{gpt52:.2f}" == "2.20"  # 2 x (500k x $2 + 500k cached x $0.20 + 17 output x $10) per million
    whole = gpt52 + third.cost_usd

    def shows_the_cost_of_these_turns():
        board = dashboard(admin_client)
        assert f"Value this month: <strong>${whole:,.2f} + 1 unpriced</strong> at API prices" in board
        assert f"<td>gpt-5.2</td><td>2</td><td>${gpt52:,.2f}</td><td>${gpt52:,.2f}</td>" in board
        assert f"<td>gpt-6.1-sol</td><td>1</td><td>${third.cost_usd:,.2f}</td>" in board
        assert f"<td>{UNPRICED_MODEL}</td><td>1</td><td>unpriced</td><td>unpriced</td>" in board
        assert f"${gpt52 + third.cost_usd:,.2f} + 1 unpriced</td>" in board  # the key's line

        models = summary(pooler, mcp_token, group_by="model")
        groups = {g["group"]: g for g in models["groups"]}
        assert groups["gpt-5.2"]["cost_usd"] == pytest.approx(float(gpt52), abs=1e-6)
        assert groups["gpt-5.2"]["unpriced_requests"] == 0
        assert groups["gpt-6.1-sol"]["cost_usd"] == pytest.approx(float(third.cost_usd), abs=1e-6)
        assert groups[UNPRICED_MODEL]["cost_usd"] is None and groups[UNPRICED_MODEL]["unpriced_requests"] == 1
        assert models["cost_usd"] == pytest.approx(float(whole), abs=1e-6) and models["unpriced_requests"] == 1
        [pool_group] = summary(pooler, mcp_token, group_by="pool", pool=pool.name)["groups"]
        assert pool_group["group"] == pool.name and pool_group["cost_usd"] == pytest.approx(float(whole), abs=1e-6)

        status = io.StringIO()
        call_command("pooler_status", stdout=status)
        assert f"value this month (since {timezone.now():%Y-%m}-01): ${whole:,.2f} + 1 unpriced" in status.getvalue()
        # Per account, key and model: today, the last 7 days, this month, and the month's cache hit rate (the
        # simulator serves half of every prompt from the cache).
        rows = status_rows()
        everything = [f"${whole:,.2f} + 1 unpriced"] * 3 + ["50.0%"]
        assert rows[account.label][-4:] == rows[f"{api_key.prefix}…"][-4:] == everything
        assert rows["gpt-5.2"] == ["gpt-5.2", *[f"${gpt52:,.2f}"] * 3, "50.0%"]
        assert rows["gpt-6.1-sol"] == ["gpt-6.1-sol", *[f"${third.cost_usd:,.2f}"] * 3, "50.0%"]
        assert rows[UNPRICED_MODEL] == [UNPRICED_MODEL, "unpriced", "unpriced", "unpriced", "50.0%"]

        # /metrics: this month's cost per pool, key, account and model, read from the rows at scrape; a model
        # without a price has no cost series (never 0) and counts as unpriced.
        where = (pool.name, api_key.prefix, account.label)
        cost = month_gauges(pooler, "pooler_month_cost_usd")
        assert cost == {
            (*where, "gpt-5.2"): pytest.approx(float(gpt52), abs=1e-6),
            (*where, "gpt-6.1-sol"): pytest.approx(float(third.cost_usd), abs=1e-6),
        }
        assert f"{cost[(*where, 'gpt-5.2')]:.2f}" == "2.20"
        assert f"{sum(cost.values()):.2f}" == f"{whole:.2f}"
        assert month_gauges(pooler, "pooler_month_unpriced_turns") == {
            (*where, "gpt-5.2"): 0,
            (*where, "gpt-6.1-sol"): 0,
            (*where, UNPRICED_MODEL): 1,
        }

    shows_the_cost_of_these_turns()
    metrics = samples(httpx.get(f"{pooler.url}/metrics").text)
    assert total(metrics, "pooler_cost_usd_total", pool=pool.name, model="gpt-5.2") == pytest.approx(float(gpt52))
    assert total(metrics, "pooler_cost_usd_total", pool=pool.name, model="gpt-6.1-sol") == pytest.approx(
        float(third.cost_usd)
    )
    assert total(metrics, "pooler_cost_usd_total", model=UNPRICED_MODEL) == 0
    assert total(metrics, "pooler_unpriced_turns_total", model=UNPRICED_MODEL) == 1

    # Prices change afterwards: an operator edits gpt-5.2's price in the admin, another gets a new row from today.
    url = reverse("admin:accounts_modelprice_change", args=[operator_price.pk])
    edited = {
        "model": "gpt-5.2",
        "effective_from": gpt52_day.isoformat(),
        "input_usd_per_million": "20",
        "cached_input_usd_per_million": "2",
        "output_usd_per_million": "100",
        "note": "tenfold",
    }
    assert admin_client.post(url, edited).status_code == 302
    change = AuditLog.objects.get(object_type="modelprice", action="change", actor="admin:admin")
    assert {k: Decimal(v) for k, v in change.changes["input_usd_per_million"].items()} == {"before": 2, "after": 20}
    ModelPrice.objects.create(
        model="gpt-6.1-sol",
        effective_from=timezone.now().date(),
        input_usd_per_million=Decimal(50),
        cached_input_usd_per_million=Decimal(5),
        output_usd_per_million=Decimal(50),
    )
    stored = {row.pk: row.cost_usd for row in RequestLog.objects.all()}
    assert stored == {first.pk: first.cost_usd, second.pk: second.cost_usd, third.pk: third.cost_usd, unpriced.pk: None}
    shows_the_cost_of_these_turns()

    # The next turn is priced at the new price.
    later, later_usage = run_turn(pooler, key, "gpt-5.2", 1_000_000)
    assert later.cost_usd == by_hand(later_usage, (20, 2, 100))
    assert RequestLog.objects.get(pk=first.pk).cost_usd == first.cost_usd


def test_the_price_table_is_read_once_per_cache_lifetime(admin_client, settings, django_assert_num_queries):
    settings.POOLER_PRICES_CACHE_SECONDS = 60
    pricing.forget()
    moment = timezone.now()
    with django_assert_num_queries(1):
        assert pricing.table().at("gpt-5.2", moment) == shipped("gpt-5.2")
    with django_assert_num_queries(0):  # the turns that follow read no price from the database
        for _ in range(5):
            pricing.table().cost("gpt-5.2", moment, 1000, 500, 10)
    # An operator's new price is seen at once in the process where it was saved.
    add = {
        "model": "gpt-5.2",
        "effective_from": moment.date().isoformat(),
        "input_usd_per_million": "3",
        "cached_input_usd_per_million": "0.3",
        "output_usd_per_million": "30",
        "note": "",
    }
    assert admin_client.post(reverse("admin:accounts_modelprice_add"), add).status_code == 302
    assert AuditLog.objects.filter(object_type="modelprice", action="add", actor="admin:admin").exists()
    price = pricing.table().at("gpt-5.2", moment)
    assert (price.input, price.source) == (Decimal(3), "admin")
    pricing.forget()


def test_prices_are_dated_and_count_reasoning_once():
    day = date(2026, 6, 1)
    older = pricing.Price("m", date(2026, 1, 1), Decimal(1), Decimal("0.1"), Decimal(10), "shipped")
    newer = pricing.Price("m", day, Decimal(2), Decimal("0.2"), Decimal(20), "admin")
    table = pricing.PriceTable([newer, older])
    midnight = datetime(2026, 6, 1, tzinfo=UTC)
    assert table.at("m", midnight) == newer  # in force from 00:00 UTC of its day
    assert table.at("m", midnight - timedelta(microseconds=1)) == older
    assert table.at("m", datetime(2025, 12, 31, tzinfo=UTC)) is None
    assert table.at("other", midnight) is None
    # 1,000 input of which 400 cached, 300 output of which 200 reasoning: reasoning is inside the 300.
    assert table.cost("m", midnight, 1000, 400, 300) == Decimal("0.0072800000")  # (600x2 + 400x0.2 + 300x20) / 1M
    assert table.cost("other", midnight, 1000, 0, 1) is None  # unpriced, not free
    assert table.cost("other", midnight, 0, 0, 0) == 0  # a turn that used no tokens cost nothing
