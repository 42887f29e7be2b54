"""OAuth login, the worker role (refresh, quota polling) and key rotation, against the simulator's auth server."""

import os
import subprocess
import sys
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.utils import timezone

from accounts.models import AuditLog, UpstreamAccount
from proxy.routing import plan_turn
from tests.codex_turns import reply_text, session_headers, sse_events, turn_body
from tests.factories import make_account, make_key, make_pool
from tests.support.pooler import REPO, _free_port, test_database_url

pytestmark = pytest.mark.django_db(transaction=True)


def manage(*args, simulator, env=None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "DATABASE_URL": test_database_url(), "POOLER_AUTH_BASE_URL": simulator.url, **(env or {})},
        **kwargs,
    )


def read_authorize_url(process: subprocess.Popen) -> str:
    for line in process.stdout:
        if "/oauth/authorize?" in line:
            return line.strip()
    raise AssertionError(process.stderr.read())


def test_login_account_end_to_end(pooler, simulator):
    pool = make_pool()
    _, key = make_key(pool)
    account = simulator.add_account(email="login@example.com")
    simulator.next_login(account["account_id"])
    port = _free_port()
    process = manage(
        "login_account",
        "--pool",
        pool.name,
        "--label",
        "logged-in",
        "--callback-port",
        str(port),
        "--base-url",
        simulator.codex_base_url,
        simulator=simulator,
    )
    url = read_authorize_url(process)
    redirect = httpx.get(url, follow_redirects=False)
    assert redirect.status_code in (302, 303)
    assert redirect.headers["location"].startswith(f"http://localhost:{port}/auth/callback")
    assert httpx.get(redirect.headers["location"].replace("localhost", "127.0.0.1")).status_code == 200
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    stored = UpstreamAccount.objects.get(label="logged-in")
    assert stored.chatgpt_account_id == account["account_id"] and stored.email == "login@example.com"
    response = httpx.post(
        f"{pooler.codex_base_url}/responses", json=turn_body("after login"), headers=session_headers(key), timeout=30
    )
    assert response.status_code == 200 and reply_text(sse_events(response.text)) == "echo: after login"


def test_login_account_says_clearly_when_denied(simulator):
    pool = make_pool()
    account = simulator.add_account()
    simulator.next_login(account["account_id"], deny=True)
    port = _free_port()
    process = manage("login_account", "--pool", pool.name, "--callback-port", str(port), simulator=simulator)
    redirect = httpx.get(read_authorize_url(process), follow_redirects=False)
    httpx.get(redirect.headers["location"].replace("localhost", "127.0.0.1"))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1 and "denied" in err
    assert not UpstreamAccount.objects.filter(chatgpt_account_id=account["account_id"]).exists()


def test_two_workers_refresh_each_account_exactly_once(simulator):
    pool = make_pool()
    soon = timezone.now() + timedelta(seconds=60)
    accounts = [make_account(pool, simulator, token_expires_at=soon) for _ in range(4)]
    workers = [manage("run_worker", "--once", "--no-quota", simulator=simulator) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
    for account in accounts:
        assert simulator.get_account(account.chatgpt_account_id)["refresh_count"] == 1
        account.refresh_from_db()
        assert account.token_expires_at > soon and account.status == "active"
    # The rotated tokens keep working: a turn on each account succeeds directly upstream.
    for account in accounts:
        response = httpx.post(
            f"{simulator.codex_base_url}/responses",
            json=turn_body(),
            timeout=30,
            headers={
                "Authorization": f"Bearer {account.access_token}",
                "chatgpt-account-id": account.chatgpt_account_id,
            },
        )
        assert response.status_code == 200


def test_invalid_grant_marks_reauth_required_and_the_router_skips_it(simulator):
    pool = make_pool()
    dead = make_account(pool, simulator, token_expires_at=timezone.now() + timedelta(seconds=30))
    alive = make_account(pool, simulator)
    simulator.patch_account(dead.chatgpt_account_id, faults=[{"kind": "refresh_invalid_grant"}])
    worker = manage("run_worker", "--once", "--no-quota", simulator=simulator)
    worker.communicate(timeout=60)
    dead.refresh_from_db()
    assert dead.status == "reauth_required" and "invalid_grant" in dead.last_error
    assert AuditLog.objects.filter(action="reauth_required", object_id=str(dead.pk), actor="worker").exists()
    assert plan_turn(pool, "gpt-5.2", None).accounts == [alive]


def test_quota_polling_updates_the_snapshot_and_pooler_status(simulator):
    pool = make_pool()
    account = make_account(pool, simulator)
    simulator.patch_account(account.chatgpt_account_id, primary_used_percent=42.0, secondary_used_percent=7.0)
    worker = manage("run_worker", "--once", simulator=simulator)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    account.refresh_from_db()
    assert (account.primary_used_percent, account.secondary_used_percent) == (42.0, 7.0)
    assert account.primary_resets_at and account.quota_observed_at
    status = manage("pooler_status", simulator=simulator)
    out, _ = status.communicate(timeout=30)
    assert "42%" in out and "7%" in out


def test_rotate_encryption_key_re_encrypts_every_secret(simulator):
    from cryptography.fernet import Fernet

    account = make_account(make_pool())
    token = account.access_token
    new_key = Fernet.generate_key().decode()
    old_keys = ",".join(settings.POOLER_ENCRYPTION_KEYS)
    rotate = manage(
        "rotate_encryption_key", simulator=simulator, env={"POOLER_ENCRYPTION_KEYS": f"{new_key},{old_keys}"}
    )
    out, err = rotate.communicate(timeout=60)
    assert rotate.returncode == 0, err
    assert "re-encrypted" in out
    check = manage(
        "shell",
        "-c",
        f"from accounts.models import UpstreamAccount as A; print(A.objects.get(pk={account.pk}).access_token)",
        simulator=simulator,
        env={"POOLER_ENCRYPTION_KEYS": new_key},
    )
    out, err = check.communicate(timeout=60)
    assert out.strip().splitlines()[-1] == token, err
