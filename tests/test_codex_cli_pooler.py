"""The real Codex CLI through the pooler, over HTTP/SSE and over websockets."""

import pytest

from accounts.models import RequestLog
from tests.factories import make_account, make_key, make_pool
from tests.support.codex import run_codex
from tests.support.rows import key_rows

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.codex_cli]


def cli(codex_bin, pooler, key, prompt, tmp_path, *, websockets, resume_last=False):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    return run_codex(
        codex_bin,
        pooler.codex_base_url,
        key,
        prompt,
        websockets=websockets,
        home=home,
        cwd=work,
        resume_last=resume_last,
    )


def turns_of(key_row, count: int) -> list[RequestLog]:
    return key_rows(key_row, count, is_prewarm=False, route="codex.responses")


def assert_no_http_turns(simulator) -> None:
    """The CLI falls back to HTTP silently when upgrades fail: make sure no turn took that road."""
    posts = [r for r in simulator.requests() if r.get("kind") == "turn" and r.get("transport") == "http"]
    assert posts == []


@pytest.mark.parametrize("websockets", [False, True], ids=["http", "websocket"])
def test_codex_cli_turn_and_resume_through_the_pooler(codex_bin, pooler, simulator, tmp_path, websockets):
    pool = make_pool(strategy="round_robin")
    for _ in range(3):
        make_account(pool, simulator)
    key_row, key = make_key(pool)
    simulator.clear_requests()
    first = cli(codex_bin, pooler, key, "hello through the pooler", tmp_path, websockets=websockets)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "echo: hello through the pooler" in first.stdout
    second = cli(codex_bin, pooler, key, "and again", tmp_path, websockets=websockets, resume_last=True)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "echo: and again" in second.stdout
    rows = turns_of(key_row, 2)
    assert rows[0].total_tokens > 0 and rows[0].outcome == "ok"
    assert rows[0].account_id == rows[-1].account_id, "a resumed session must reach the same account"
    transports = {r.transport for r in rows}
    assert transports == {"websocket" if websockets else "http"}
    if websockets:
        assert_no_http_turns(simulator)
        assert RequestLog.objects.filter(api_key=key_row, is_prewarm=True).exists()


@pytest.mark.parametrize("websockets", [False, True], ids=["http", "websocket"])
def test_a_session_survives_its_account_running_out(codex_bin, pooler, simulator, tmp_path, websockets):
    pool = make_pool(strategy="fill_first")
    first = make_account(pool, simulator, membership={"priority": 0})
    second = make_account(pool, simulator, membership={"priority": 1})
    key_row, key = make_key(pool)
    simulator.clear_requests()
    for i, prompt in enumerate(["turn one", "turn two", "turn three"]):
        result = cli(codex_bin, pooler, key, prompt, tmp_path, websockets=websockets, resume_last=i > 0)
        assert result.returncode == 0, result.stderr[-2000:]
    assert {r.account_id for r in turns_of(key_row, 3)} == {first.id}
    simulator.patch_account(first.chatgpt_account_id, primary_used_percent=100.0)
    result = cli(codex_bin, pooler, key, "turn four", tmp_path, websockets=websockets, resume_last=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "echo: turn four" in result.stdout and "usage limit" not in result.stderr.lower()
    last = turns_of(key_row, 4)[-1]
    assert last.account_id == second.id and last.migrated_from_id == first.id
    assert last.migration_reason
    if websockets:
        assert_no_http_turns(simulator)


def test_hold_policy_shows_the_usage_limit_with_the_owner_reset(codex_bin, pooler, simulator, tmp_path):
    pool = make_pool(strategy="fill_first", session_migration="hold")
    first = make_account(pool, simulator, membership={"priority": 0})
    make_account(pool, simulator, membership={"priority": 1})
    _, key = make_key(pool)
    assert cli(codex_bin, pooler, key, "one", tmp_path, websockets=False).returncode == 0
    simulator.patch_account(first.chatgpt_account_id, primary_used_percent=100.0)
    result = cli(codex_bin, pooler, key, "two", tmp_path, websockets=False, resume_last=True)
    assert result.returncode != 0 and "usage limit" in (result.stderr + result.stdout).lower()
