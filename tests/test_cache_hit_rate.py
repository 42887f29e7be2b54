"""What session moves cost: the prompt cache hit rate (cached input tokens / input tokens) per key, account and
pool, and the share of sessions that touched more than one account, as the dashboard, the MCP usage_summary
and /metrics show them."""

import re

import httpx
import pytest
from django.contrib.auth import get_user_model

from accounts.models import RequestLog, SessionAffinity
from tests.codex_turns import session_headers, turn_body
from tests.factories import make_account, make_key, make_mcp_token, make_pool
from tests.test_cost import dashboard, month_gauges, status_rows, summary
from tests.test_http_route import wait_for_log
from tests.test_metrics import samples, total

pytestmark = pytest.mark.django_db(transaction=True)


def turn(pooler, key: str, input_tokens: int, session: str, **body) -> httpx.Response:
    """A turn whose usage reports `input_tokens`, of which the simulator says half (rounded down) were cached."""
    response = httpx.post(
        f"{pooler.codex_base_url}/responses",
        json=turn_body(f"@tokens {input_tokens}\n@say cached", **body),
        headers=session_headers(key, session),
        timeout=30,
    )
    wait_for_log(response.headers["x-request-id"])
    return response


def test_cache_hit_rate_and_moved_sessions(pooler, simulator, admin_client):
    # Pool "moving": one session served by `first`, then moved to `second` when `first` fails before answering.
    moving = make_pool(strategy="fill_first")
    first = make_account(moving, simulator, label="first", membership={"priority": 0})
    second = make_account(moving, simulator, label="second", membership={"priority": 1})
    mover_key, mover = make_key(moving, name="mover")
    # Pool "steady": a key whose prompts mostly miss the cache, and one whose only request was refused.
    steady = make_pool()
    third = make_account(steady, simulator, label="third")
    small_key, small = make_key(steady, name="small")
    refused_key, refused = make_key(steady, name="refused", allowed_models=["gpt-5.5"])

    assert turn(pooler, mover, 1000, "s-moving").status_code == 200  # 500 of 1,000 input tokens cached
    simulator.patch_account(first.chatgpt_account_id, faults=[{"kind": "status", "status": 503}])
    assert turn(pooler, mover, 1000, "s-moving").status_code == 200  # on `second`: 500 of 1,000 again
    assert turn(pooler, small, 3, "s-steady").status_code == 200  # 1 of 3 cached
    assert turn(pooler, refused, 1000, "s-refused", model="gpt-5.2").status_code == 403  # no input tokens at all

    moved = RequestLog.objects.get(api_key=mover_key, migrated_from__isnull=False)
    assert (moved.account, moved.migrated_from) == (second, first)
    assert SessionAffinity.objects.get(pool=moving).moves == 1

    _, token = make_mcp_token(get_user_model().objects.get(username="admin"))
    by_key = {g["group"]: g["cache_hit_rate"] for g in summary(pooler, token, group_by="key")["groups"]}
    assert by_key == {mover_key.prefix: 0.5, small_key.prefix: 0.3333, refused_key.prefix: None}
    by_account = {g["group"]: g["cache_hit_rate"] for g in summary(pooler, token, group_by="account")["groups"]}
    assert by_account == {"first": 0.5, "second": 0.5, "third": 0.3333, None: None}  # None: the refused request
    everything = summary(pooler, token, group_by="pool")
    assert {g["group"]: g["cache_hit_rate"] for g in everything["groups"]} == {moving.name: 0.5, steady.name: 0.3333}
    assert everything["sessions"] == {"seen": 2, "moved": 1, "moved_share": 0.5}
    assert summary(pooler, token, group_by="pool", pool=moving.name)["sessions"]["moved_share"] == 1.0

    board = dashboard(admin_client)
    moving_card = board.split(f'id="pool-{moving.name}"', 1)[1].split('id="pool-', 1)[0]
    assert "prompt cache hit rate <strong>50.0%</strong>" in moving_card
    assert "sessions on more than one account: 1 of 1 (100.0%)" in moving_card
    steady_card = board.split(f'id="pool-{steady.name}"', 1)[1].split('id="pool-', 1)[0]
    assert "prompt cache hit rate <strong>33.3%</strong>" in steady_card
    assert "sessions on more than one account: 0 of 1 (0.0%)" in steady_card
    keys = board.split('id="cost-by-key"', 1)[1].split("</table>", 1)[0]
    assert re.search(rf"mover <code>{mover_key.prefix}…</code></td><td>2</td>.*?<td>50\.0%</td>", keys)
    assert re.search(rf"small <code>{small_key.prefix}…</code></td><td>1</td>.*?<td>33\.3%</td>", keys)
    assert re.search(rf"refused <code>{refused_key.prefix}…</code></td><td>1</td>.*?<td>-</td>", keys)
    accounts = board.split('id="cost-by-account"', 1)[1].split("</table>", 1)[0]
    for label, rate in [("first", "50.0%"), ("second", "50.0%"), ("third", "33.3%")]:
        assert re.search(rf"<td>{label}</td><td>1</td>.*?<td>{re.escape(rate)}</td></tr>", accounts)

    # In Prometheus the rate is a ratio of two counters (README: "Prompt cache hit rate").
    metrics = samples(httpx.get(f"{pooler.url}/metrics").text)
    for pool, input_tokens, cached in [(moving, 2000, 1000), (steady, 3, 1)]:
        assert total(metrics, "pooler_input_tokens_total", pool=pool.name) == input_tokens
        assert total(metrics, "pooler_cached_input_tokens_total", pool=pool.name) == cached

    # This month's tokens per pool, key, account and model, read from the rows at scrape: the hit rate of a key,
    # an account or a pool is the ratio of their sums (operations.md, "Metrics"). The refused request used no
    # tokens and makes no series.
    model = RequestLog.objects.get(api_key=small_key).model
    assert month_gauges(pooler, "pooler_month_input_tokens") == {
        (moving.name, mover_key.prefix, first.label, model): 1000,
        (moving.name, mover_key.prefix, second.label, model): 1000,
        (steady.name, small_key.prefix, third.label, model): 3,
    }
    assert month_gauges(pooler, "pooler_month_cached_input_tokens") == {
        (moving.name, mover_key.prefix, first.label, model): 500,
        (moving.name, mover_key.prefix, second.label, model): 500,
        (steady.name, small_key.prefix, third.label, model): 1,
    }
    month = samples(httpx.get(f"{pooler.url}/metrics").text)

    def hit_rate(**labels) -> float:
        cached = total(month, "pooler_month_cached_input_tokens", **labels)
        return round(cached / total(month, "pooler_month_input_tokens", **labels), 4)

    assert hit_rate(key=mover_key.prefix, key_name="mover") == 0.5 and hit_rate(key=small_key.prefix) == 0.3333
    assert [hit_rate(account=a) for a in ("first", "second", "third")] == [0.5, 0.5, 0.3333]
    assert (hit_rate(pool=moving.name), hit_rate(pool=steady.name)) == (0.5, 0.3333)
    assert total(month, "pooler_month_input_tokens", key=refused_key.prefix) == 0

    # pooler_status: the same rates on the accounts' and keys' lines (the last of their cost columns).
    rows = status_rows()
    assert [rows[label][-1] for label in ("first", "second", "third")] == ["50.0%", "50.0%", "33.3%"]
    keys = [rows[f"{k.prefix}…"][-1] for k in (mover_key, small_key, refused_key)]
    assert keys == ["50.0%", "33.3%", "-"]
