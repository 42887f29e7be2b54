"""OAuth login, the worker role (refresh, quota polling) and key rotation, against the simulator's auth server."""

import os
import re
import socket
import subprocess
import sys
import time
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from accounts.models import AuditLog, RequestLog, SessionAffinity, UpstreamAccount
from proxy.routing import plan_turn
from tests.codex_turns import reply_text, session_headers, sse_events, turn_body
from tests.factories import make_account, make_key, make_pool
from tests.support.pooler import REPO, _free_port, subprocess_database_url

pytestmark = pytest.mark.django_db(transaction=True)


def manage(*args, simulator, env=None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=kwargs.pop("stdin", subprocess.DEVNULL),
        env={
            **os.environ,
            "DATABASE_URL": subprocess_database_url(),
            "POOLER_AUTH_BASE_URL": simulator.url,
            **(env or {}),
        },
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


def test_login_account_takes_the_pasted_redirect_when_its_port_is_taken(simulator):
    pool = make_pool()
    account = simulator.add_account(email="pasted@example.com")
    simulator.next_login(account["account_id"])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = manage(
            "login_account",
            "--pool",
            pool.name,
            "--callback-port",
            str(port),
            simulator=simulator,
            stdin=subprocess.PIPE,
        )
        redirect = httpx.get(read_authorize_url(process), follow_redirects=False)
        process.stdin.write(redirect.headers["location"] + "\n")
        process.stdin.flush()
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "paste the redirect URL" in err
    assert UpstreamAccount.objects.get(chatgpt_account_id=account["account_id"]).email == "pasted@example.com"


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


@pytest.mark.parametrize(
    "fault, message",
    [
        ({"kind": "token_malformed"}, "not JSON"),
        ({"kind": "token_malformed", "json": ["not", "tokens"]}, "without the expected tokens"),
    ],
)
def test_login_account_says_clearly_when_the_auth_server_answers_garbage(simulator, fault, message):
    pool = make_pool()
    account = simulator.add_account(faults=[fault])
    simulator.next_login(account["account_id"])
    process = manage("login_account", "--pool", pool.name, "--callback-port", str(_free_port()), simulator=simulator)
    redirect = httpx.get(read_authorize_url(process), follow_redirects=False)
    httpx.get(redirect.headers["location"].replace("localhost", "127.0.0.1"))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1 and message in err and "Traceback" not in err
    assert not UpstreamAccount.objects.filter(chatgpt_account_id=account["account_id"]).exists()


def refreshed_count(worker: subprocess.Popen) -> int:
    """How many tokens a finished `run_worker --once` says it refreshed."""
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    return int(re.search(r"refreshed (\d+) token", out).group(1))


def wait_for_token_request_in_flight(simulator, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not simulator.requests(kind="token", status=None):
        assert time.monotonic() < deadline, "the first worker never called the auth server"
        time.sleep(0.05)


def assert_tokens_work_upstream(simulator, accounts) -> None:
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


def test_two_overlapping_workers_refresh_each_account_exactly_once(simulator):
    pool = make_pool()
    soon = timezone.now() + timedelta(seconds=60)
    accounts = [make_account(pool, simulator, token_expires_at=soon) for _ in range(8)]
    for account in accounts:
        # A slow auth server: the first worker is still busy when the second one starts.
        simulator.patch_account(account.chatgpt_account_id, faults=[{"kind": "token_slow", "delay": 0.5}])
    first = manage("run_worker", "--once", "--no-quota", simulator=simulator)
    wait_for_token_request_in_flight(simulator)
    second = manage("run_worker", "--once", "--no-quota", simulator=simulator)
    done = [refreshed_count(first), refreshed_count(second)]
    # Together each account once: no refresh token was spent twice. On PostgreSQL both did part of the work
    # (row locks); SQLite locks the whole file, so there the second worker finds nothing left.
    assert sum(done) == len(accounts), done
    if connection.vendor == "postgresql":
        assert min(done) >= 1, done
    for account in accounts:
        assert simulator.get_account(account.chatgpt_account_id)["refresh_count"] == 1
        account.refresh_from_db()
        assert account.token_expires_at > soon and account.status == "active"
    assert_tokens_work_upstream(simulator, accounts)

    # The next round spends the rotated refresh tokens: they work, again exactly once per account.
    UpstreamAccount.objects.filter(pk__in=[a.pk for a in accounts]).update(token_expires_at=soon)
    workers = [manage("run_worker", "--once", "--no-quota", simulator=simulator) for _ in range(2)]
    assert sum(refreshed_count(worker) for worker in workers) == len(accounts)
    for account in accounts:
        assert simulator.get_account(account.chatgpt_account_id)["refresh_count"] == 2
        account.refresh_from_db()
        assert account.status == "active"
    assert_tokens_work_upstream(simulator, accounts)


def test_a_failing_job_does_not_stop_the_worker_or_the_other_jobs(simulator):
    pool = make_pool()
    soon = timezone.now() + timedelta(seconds=60)
    garbled, healthy, error_page = (make_account(pool, simulator, token_expires_at=soon) for _ in range(3))
    bad_usage = make_account(pool, simulator)
    simulator.patch_account(garbled.chatgpt_account_id, faults=[{"kind": "token_malformed"}])
    simulator.patch_account(
        error_page.chatgpt_account_id, faults=[{"kind": "token_malformed", "status": 502, "json": ["oops"]}]
    )
    simulator.patch_account(
        bad_usage.chatgpt_account_id, faults=[{"kind": "usage_malformed"}], primary_used_percent=9.0
    )
    simulator.patch_account(healthy.chatgpt_account_id, primary_used_percent=33.0)
    worker = manage("run_worker", "--rounds", "2", "--interval", "0", simulator=simulator)
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    # Round one: the garbled replies fail their accounts only; round two retries them and succeeds.
    assert out.count("refreshed") == 2 and "refreshed 1 token(s)" in out and "refreshed 2 token(s)" in out, out
    assert "malformed token reply" in err and "http_502" in err
    for account in (garbled, healthy, error_page):
        assert simulator.get_account(account.chatgpt_account_id)["refresh_count"] == 1
        account.refresh_from_db()
        assert account.status == "active" and account.token_expires_at > soon
        assert account.access_token not in err and account.refresh_token not in err
    assert healthy.primary_used_percent == 33.0
    bad_usage.refresh_from_db()
    assert bad_usage.last_error.startswith("quota poll failed") and bad_usage.primary_used_percent is None


def test_a_failing_round_is_logged_and_the_next_round_still_runs(simulator):
    soon = timezone.now() + timedelta(seconds=60)
    account = make_account(make_pool(), simulator, token_expires_at=soon)
    # A retention beyond the calendar makes housekeeping fail in every round, after the refreshes ran.
    worker = manage(
        "run_worker",
        "--rounds",
        "2",
        "--interval",
        "0",
        "--no-quota",
        simulator=simulator,
        env={"POOLER_LOG_RETENTION_DAYS": "999999999"},
    )
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 1 and err.count("worker round failed") == 2, err
    assert err.strip().splitlines()[-1] == "CommandError: the last round failed (see the log above)"
    assert simulator.get_account(account.chatgpt_account_id)["refresh_count"] == 1


def test_housekeeping_clears_expired_cooldowns_affinities_and_old_logs(simulator):
    pool = make_pool()
    now = timezone.now()
    cooled = make_account(pool, cooldown_until=now - timedelta(seconds=1), cooldown_reason="rate_limited")
    cooling = make_account(pool, cooldown_until=now + timedelta(hours=1), cooldown_reason="rate_limited")
    for key, expires in (("gone", now - timedelta(seconds=1)), ("kept", now + timedelta(hours=1))):
        SessionAffinity.objects.create(pool=pool, session_key_hash=key, account=cooled, expires_at=expires)
    retention = timedelta(days=settings.POOLER_LOG_RETENTION_DAYS)
    for request_id, age in (("old", retention + timedelta(days=1)), ("recent", retention - timedelta(days=1))):
        RequestLog.objects.create(request_id=request_id, route="responses", created_at=now - age)
    worker = manage("run_worker", "--once", "--no-quota", simulator=simulator)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    cooled.refresh_from_db()
    cooling.refresh_from_db()
    assert (cooled.cooldown_until, cooled.cooldown_reason) == (None, "")
    assert cooling.cooldown_until > now and cooling.cooldown_reason == "rate_limited"
    assert list(SessionAffinity.objects.values_list("session_key_hash", flat=True)) == ["kept"]
    assert list(RequestLog.objects.values_list("request_id", flat=True)) == ["recent"]


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


def read_with_only(key: str, account, field: str, simulator) -> str:
    """A secret of the account as a process that has only `key` decrypts it."""
    check = manage(
        "shell",
        "-c",
        f"from accounts.models import UpstreamAccount as A; print(A.objects.get(pk={account.pk}).{field})",
        simulator=simulator,
        env={"POOLER_ENCRYPTION_KEYS": key},
    )
    out, err = check.communicate(timeout=60)
    assert check.returncode == 0, err
    return out.strip().splitlines()[-1]


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
    assert read_with_only(new_key, account, "access_token", simulator) == token


@pytest.mark.skipif(connection.vendor != "postgresql", reason="watches PostgreSQL's row locks (pg_locks)")
def test_rotate_encryption_key_keeps_a_refresh_that_commits_meanwhile(simulator):
    from cryptography.fernet import Fernet
    from django.db import connection, transaction

    account = make_account(make_pool())
    new_key = Fernet.generate_key().decode()
    keys = f"{new_key},{','.join(settings.POOLER_ENCRYPTION_KEYS)}"
    with transaction.atomic():
        # A refresh in progress holds the row; rotation waits for it and must keep its new tokens.
        refreshing = UpstreamAccount.objects.select_for_update().get(pk=account.pk)
        rotate = manage("rotate_encryption_key", simulator=simulator, env={"POOLER_ENCRYPTION_KEYS": keys})
        deadline = time.monotonic() + 30
        with connection.cursor() as cursor:
            while not cursor.execute("SELECT 1 FROM pg_locks WHERE NOT granted").fetchall():
                assert rotate.poll() is None and time.monotonic() < deadline, rotate.stderr.read()
                time.sleep(0.05)
        refreshing.refresh_token = "rt_after_the_refresh"
        refreshing.save(update_fields=["refresh_token"])
    out, err = rotate.communicate(timeout=60)
    assert rotate.returncode == 0 and "re-encrypted 1 account(s)" in out, err
    assert read_with_only(new_key, account, "refresh_token", simulator) == "rt_after_the_refresh"
