"""The operator commands work end to end on real rows."""

import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from accounts.jwt_claims import AUTH_CLAIM
from accounts.models import AuditLog, McpToken, Pool, PoolApiKey, UpstreamAccount
from accounts.sample_auth import sample_jwt
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


def _tokens_with_id_claims(claims: dict) -> str:
    access = sample_jwt({"exp": 4102444800})
    return json.dumps({"tokens": {"id_token": sample_jwt(claims), "access_token": access, "refresh_token": "rt_1"}})


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"tokens": {}}),
        json.dumps({"OPENAI_API_KEY": "sk"}),
        json.dumps({"tokens": {"id_token": "x", "access_token": "y", "refresh_token": "z"}}),
        "\ufeff{}".encode("utf-16"),
        _tokens_with_id_claims({"email": "a@example.com", AUTH_CLAIM: "plus"}),
        _tokens_with_id_claims({"email": ["a@example.com"], AUTH_CLAIM: {"chatgpt_account_id": "acct-1"}}),
    ],
)
def test_import_account_rejects_malformed_file_and_writes_nothing(tmp_path, content):
    run("create_pool", "team")
    path = tmp_path / "auth.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CommandError) as error:
        run("import_account", "--pool", "team", "--auth-json", str(path))
    assert "\n" not in str(error.value)
    assert UpstreamAccount.objects.count() == 0


def test_two_accounts_of_one_email_get_distinct_labels(tmp_path):
    run("create_pool", "team")
    for account_id in ("acct-personal", "acct-team"):
        write_auth_json(tmp_path / f"{account_id}.json", account_id=account_id, email="ana@example.com")
        run("import_account", "--pool", "team", "--auth-json", str(tmp_path / f"{account_id}.json"))
    labels = dict(UpstreamAccount.objects.values_list("chatgpt_account_id", "label"))
    assert labels == {"acct-personal": "ana@example.com", "acct-team": "ana@example.com (acct-team)"}
    # Importing the first again keeps its label; a label chosen twice is a one-line error.
    run("import_account", "--pool", "team", "--auth-json", str(tmp_path / "acct-personal.json"))
    assert UpstreamAccount.objects.get(chatgpt_account_id="acct-personal").label == "ana@example.com"
    write_auth_json(tmp_path / "third.json", account_id="acct-third")
    with pytest.raises(CommandError, match="label 'ana@example.com' is taken"):
        run(
            "import_account",
            "--pool",
            "team",
            "--auth-json",
            str(tmp_path / "third.json"),
            "--label",
            "ana@example.com",
        )
    assert not UpstreamAccount.objects.filter(chatgpt_account_id="acct-third").exists()


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
