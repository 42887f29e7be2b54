"""The operator commands work end to end on real rows."""

import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from accounts.models import AuditLog, McpToken, Pool, PoolApiKey, UpstreamAccount
from tests.factories import write_auth_json

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_create_pool_with_strategy_and_models():
    run("create_pool", "team", "--strategy", "round_robin", "--models", "gpt-5.2, gpt-5.1-codex")
    pool = Pool.objects.get(name="team")
    assert pool.strategy == "round_robin"
    assert pool.allowed_models == ["gpt-5.2", "gpt-5.1-codex"]
    assert AuditLog.objects.filter(action="create_pool").exists()


def test_create_pool_twice_is_a_clear_error():
    run("create_pool", "team")
    with pytest.raises(CommandError, match="already exists"):
        run("create_pool", "team")


def test_import_account_reads_identity_from_id_token(tmp_path):
    run("create_pool", "team")
    data = write_auth_json(tmp_path / "auth.json", account_id="acct-42", email="ana@example.com", plan="pro")
    out = run(
        "import_account",
        "--pool",
        "team",
        "--auth-json",
        str(tmp_path / "auth.json"),
        "--base-url",
        "http://127.0.0.1:9/backend-api/codex",
    )
    account = UpstreamAccount.objects.get(chatgpt_account_id="acct-42")
    assert "acct-42" in out
    assert (account.email, account.plan_type, account.label) == ("ana@example.com", "pro", "ana@example.com")
    assert account.access_token == data["tokens"]["access_token"]
    assert account.token_expires_at is not None
    assert account.memberships.get().pool.name == "team"


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"tokens": {}}),
        json.dumps({"OPENAI_API_KEY": "sk"}),
        json.dumps({"tokens": {"id_token": "x", "access_token": "y", "refresh_token": "z"}}),
    ],
)
def test_import_account_rejects_malformed_file_and_writes_nothing(tmp_path, content):
    run("create_pool", "team")
    path = tmp_path / "auth.json"
    path.write_text(content)
    with pytest.raises(CommandError) as error:
        run("import_account", "--pool", "team", "--auth-json", str(path))
    assert "\n" not in str(error.value)
    assert UpstreamAccount.objects.count() == 0


def test_create_api_key_prints_raw_key_last_and_stores_hash():
    run("create_pool", "team")
    out = run(
        "create_api_key",
        "--pool",
        "team",
        "--name",
        "ci",
        "--rpm",
        "30",
        "--tokens-per-day",
        "1000",
        "--max-concurrent",
        "2",
        "--models",
        "gpt-5.2",
    )
    raw = out.strip().splitlines()[-1]
    key = PoolApiKey.objects.get()
    assert raw.startswith(key.prefix) and key.matches(raw)
    assert raw not in key.secret_hash
    assert (key.rpm, key.tokens_per_day, key.max_concurrent, key.allowed_models) == (30, 1000, 2, ["gpt-5.2"])


def test_create_mcp_token_for_user():
    get_user_model().objects.create_user("ops")
    raw = run("create_mcp_token", "--user", "ops", "--write").strip().splitlines()[-1]
    token = McpToken.objects.get()
    assert token.can_write and token.matches(raw) and McpToken.lookup(raw) == token
    with pytest.raises(CommandError, match="no user"):
        run("create_mcp_token", "--user", "nobody")


def test_pooler_status_shows_pools_accounts_and_keys(tmp_path):
    run("create_pool", "team")
    write_auth_json(tmp_path / "auth.json", email="bo@example.com")
    run("import_account", "--pool", "team", "--auth-json", str(tmp_path / "auth.json"))
    UpstreamAccount.objects.update(primary_used_percent=42.0)
    run("create_api_key", "--pool", "team", "--name", "laptop")
    out = run("pooler_status")
    assert "pool team" in out and "bo@example.com" in out and "42%" in out and "laptop" in out


def test_commands_fail_with_exit_status_1(tmp_path):
    import os
    import subprocess
    import sys

    from tests.support.pooler import subprocess_database_url

    result = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "--pool", "missing"],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": subprocess_database_url()},
    )
    assert result.returncode == 1
    assert "no pool named 'missing'" in result.stderr
