"""The life of a Pool API key: expiry, pause and resume, rotation with a grace period; from manage.py, MCP and
the admin, each change audited."""

import io
import json
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from accounts.models import AuditLog, PoolApiKey, RequestLog
from accounts.secrets import prefix_of
from tests.codex_turns import session_headers, turn_body
from tests.factories import make_account, make_key, make_mcp_token, make_pool
from tests.support.rows import key_rows
from tests.test_admin_pages import change_page_data
from tests.test_mcp import call_all, text_json
from tests.test_websocket_route import create_frame, read_turn, ws_headers, ws_url

pytestmark = pytest.mark.django_db(transaction=True)


def post_turn(pooler, key: str) -> httpx.Response:
    return httpx.post(f"{pooler.codex_base_url}/responses", json=turn_body(), headers=session_headers(key), timeout=30)


def v1_turn(pooler, key: str) -> httpx.Response:
    body = {"model": "gpt-5.2", "input": "hi"}
    return httpx.post(f"{pooler.url}/v1/responses", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip().splitlines()[-1] if out.getvalue().strip() else ""


def test_an_expired_key_hears_why(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    _, raw = make_key(pool, expires_at=timezone.now() - timedelta(seconds=1))
    for response in (post_turn(pooler, raw), v1_turn(pooler, raw)):
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "key_expired" and "expired at" in error["message"]


def test_an_open_websocket_reads_its_key_on_each_turn(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    # Expired since the connection opened: its next turn is refused, and accounted to the key.
    key, raw = make_key(pool)
    with connect(ws_url(pooler), additional_headers=ws_headers(raw)) as ws:
        ws.send(create_frame())
        assert read_turn(ws)[-1]["type"] == "response.completed"
        PoolApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        ws.send(create_frame("again"))
        (refused,) = read_turn(ws)
    assert refused["type"] == "error" and refused["status"] == 401
    assert refused["error"]["code"] == "key_expired" and "expired at" in refused["error"]["message"]
    served, row = key_rows(key, 2)
    assert (served.status_code, served.transport) == (200, "websocket")
    assert (row.status_code, row.error_code, row.outcome, row.transport) == (
        401,
        "key_expired",
        "rejected",
        "websocket",
    )
    assert row.account is None  # refused before any upstream call
    # Paused: a new connection is refused at once, the open one at its next turn, until the key is resumed.
    paused, raw = make_key(pool)
    with connect(ws_url(pooler), additional_headers=ws_headers(raw)) as ws:
        ws.send(create_frame())
        assert read_turn(ws)[-1]["type"] == "response.completed"
        run("api_key", "pause", paused.prefix)
        with pytest.raises(InvalidStatus) as denied, connect(ws_url(pooler), additional_headers=ws_headers(raw)):
            pass
        assert denied.value.response.status_code == 403
        ws.send(create_frame("still mine?"))
        (refused,) = read_turn(ws)
        assert refused["status"] == 403 and refused["error"]["code"] == "key_paused"
        run("api_key", "resume", paused.prefix)
        ws.send(create_frame("mine again"))
        assert read_turn(ws)[-1]["type"] == "response.completed"
        # Revoked (a leaked key): the open connection serves no more turns.
        PoolApiKey.objects.filter(pk=paused.pk).update(revoked_at=timezone.now())
        ws.send(create_frame("after the revocation"))
        (refused,) = read_turn(ws)
        assert refused["status"] == 401 and refused["error"]["code"] == "invalid_api_key"
    assert [r.status_code for r in key_rows(paused, 4)] == [200, 403, 200, 401]


def test_create_api_key_takes_expiry_budgets_and_policy(db):
    pool = make_pool(name="life")
    raw = run(
        "create_api_key", "--pool", "life", "--expires-at", "2027-01-31T00:00:00Z",
        "--budget", "5h:tokens:200000", "--budget", "day:cost:5.00", "--budget", "week:output_tokens:1000000:gpt-5.5",
        "--force-model", "gpt-5.2", "--max-effort", "low", "--over-effort", "refuse", "--max-output-tokens", "500",
    )  # fmt: skip
    key = PoolApiKey.objects.get(prefix=prefix_of(raw))
    assert key.pool == pool and key.expires_at == datetime(2027, 1, 31, tzinfo=UTC)
    assert key.budgets == [
        {"window": "5h", "kind": "tokens", "amount": 200000},
        {"window": "day", "kind": "cost", "amount": 5.0},
        {"window": "week", "kind": "output_tokens", "amount": 1000000, "model": "gpt-5.5"},
    ]
    assert (key.forced_model, key.max_reasoning_effort, key.reasoning_effort_over_cap) == ("gpt-5.2", "low", "refuse")
    for bad in (["--budget", "fortnight:tokens:5"], ["--budget", "day:cost"], ["--expires-at", "2027-01-31"]):
        with pytest.raises(CommandError):
            call_command("create_api_key", "--pool", "life", *bad, stdout=io.StringIO(), stderr=io.StringIO())


def test_a_paused_key_is_refused_until_resumed(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    key, raw = make_key(pool)
    run("api_key", "pause", key.prefix)
    for response in (post_turn(pooler, raw), v1_turn(pooler, raw)):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "key_paused" and "paused" in response.json()["error"]["message"]
    # The websocket upgrade is refused too (the Codex CLI then falls back to HTTP and hears the 403).
    with pytest.raises(InvalidStatus), connect(ws_url(pooler), additional_headers=ws_headers(raw)):
        pass
    run("api_key", "resume", key.prefix)
    assert post_turn(pooler, raw).status_code == 200
    with connect(ws_url(pooler), additional_headers=ws_headers(raw)) as ws:
        ws.send(create_frame())
        assert read_turn(ws)[-1]["type"] == "response.completed"
    actions = list(AuditLog.objects.filter(object_id=str(key.pk)).values_list("action", "actor"))
    assert ("pause_api_key", "cli") in actions and ("resume_api_key", "cli") in actions


def test_rotation_keeps_the_row_and_the_old_secret_works_for_the_grace_period(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    key, old = make_key(pool, rpm=100, allowed_models=["gpt-5.2"])
    assert post_turn(pooler, old).status_code == 200
    new = run("api_key", "rotate", key.prefix, "--grace", "3600")
    assert new != old and prefix_of(new) == key.prefix
    key.refresh_from_db()
    assert (key.rpm, key.allowed_models) == (100, ["gpt-5.2"]) and key.rotated_at is not None
    assert post_turn(pooler, new).status_code == 200
    assert post_turn(pooler, old).status_code == 200  # within the grace period
    # The grace period ends: only the new secret works.
    PoolApiKey.objects.filter(pk=key.pk).update(previous_secret_expires_at=timezone.now() - timedelta(seconds=1))
    assert post_turn(pooler, old).status_code == 401
    assert post_turn(pooler, new).status_code == 200
    assert RequestLog.objects.filter(api_key=key, status_code=200).count() == 4  # one key, one history
    # Without a grace period the old secret stops at once; the audit row names no secret.
    newest = run("api_key", "rotate", key.prefix)
    assert post_turn(pooler, new).status_code == 401 and post_turn(pooler, newest).status_code == 200
    audit = AuditLog.objects.filter(action="rotate_api_key", object_id=str(key.pk)).last()
    key.refresh_from_db()
    assert key.secret_hash not in str(audit.changes) and "previous_secret_hash" not in audit.changes


def test_mcp_lists_the_life_of_keys_and_write_tokens_pause_and_rotate(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    key, raw = make_key(pool, expires_at=timezone.now() + timedelta(days=3), budgets=[
        {"window": "day", "kind": "tokens", "amount": 1000}
    ])  # fmt: skip
    user = User.objects.create_user("keeper", is_superuser=True)
    _, reader = make_mcp_token(user)
    _, writer = make_mcp_token(user, can_write=True)
    url = f"{pooler.url}/mcp"
    tools, (refused,) = call_all(url, reader, [("pause_api_key", {"prefix": key.prefix})])
    assert refused.is_error and {"pause_api_key", "resume_api_key", "rotate_api_key"} <= tools
    _, (paused, rotated, listed) = call_all(
        url,
        writer,
        [
            ("pause_api_key", {"prefix": key.prefix}),
            ("rotate_api_key", {"prefix": key.prefix, "grace_seconds": 600}),
            ("list_api_keys", {"pool": pool.name}),
        ],
    )
    assert all(text_json(r) == r.structured_content for r in (paused, rotated, listed))
    assert paused.structured_content["paused_at"] is not None
    new = rotated.structured_content["new_key"]
    assert prefix_of(new) == key.prefix and rotated.structured_content["previous_secret_works_until"]
    assert listed.structured_content, listed.content
    (row,) = listed.structured_content["items"]
    assert row["state"] == "paused" and row["expires_at"] and row["rotated_at"]
    assert row["previous_secret_works_until"] and row["budgets"][0]["remaining"] == 1000
    assert post_turn(pooler, new).status_code == 403
    call_all(url, writer, [("resume_api_key", {"prefix": key.prefix})])
    assert post_turn(pooler, new).status_code == 200 and post_turn(pooler, raw).status_code == 200
    actors = set(AuditLog.objects.filter(object_id=str(key.pk)).values_list("action", "actor"))
    assert {
        ("pause_api_key", "mcp:keeper"),
        ("rotate_api_key", "mcp:keeper"),
        ("resume_api_key", "mcp:keeper"),
    } <= actors


def key_action(admin_client, action: str, *selected, **fields):
    """Run a key action from the admin's changelist, as the browser posts it."""
    data = {"action": action, "_selected_action": [k.pk for k in selected], **fields}
    return admin_client.post(reverse("admin:accounts_poolapikey_changelist"), data, follow=True)


def shown_secret(response) -> str:
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    return re.search(r'<code id="issued-secret">([^<]+)</code>', response.content.decode()).group(1)


def test_the_admin_pauses_resumes_and_rotates_keys_with_a_grace_the_operator_chooses(admin_client):
    pool = make_pool()
    key, old = make_key(pool)
    other, _ = make_key(pool)
    key_action(admin_client, "pause_keys", key, other)
    key.refresh_from_db()
    other.refresh_from_db()
    assert key.paused_at is not None and other.paused_at is not None and key.refusal(timezone.now()) == "paused"
    key_action(admin_client, "resume_keys", key)
    key.refresh_from_db()
    other.refresh_from_db()
    assert key.paused_at is None and other.paused_at is not None
    actions = set(AuditLog.objects.filter(object_id=str(key.pk)).values_list("action", "actor"))
    assert {("pause_api_key", "admin:admin"), ("resume_api_key", "admin:admin")} <= actions

    # Rotate asks first, on a page of its own, how long the old secret keeps working.
    asked = key_action(admin_client, "rotate_key", key)
    page = asked.content.decode()
    assert asked.status_code == 200 and 'name="grace_seconds"' in page and 'value="3600"' in page
    assert 'name="apply"' in page and f'name="_selected_action" value="{key.pk}"' in page
    assert PoolApiKey.objects.get(pk=key.pk).rotated_at is None  # nothing rotated yet
    refused = key_action(admin_client, "rotate_key", key, apply="Rotate", grace_seconds="-5")
    assert refused.status_code == 200 and "errorlist" in refused.content.decode()
    assert PoolApiKey.objects.get(pk=key.pk).rotated_at is None
    # Two keys at once: refused, each new secret is shown once, on a page of its own.
    warned = key_action(admin_client, "rotate_key", key, other, apply="Rotate", grace_seconds="600")
    assert [m.message for m in warned.context["messages"]] == [
        "Select one key to rotate: its new secret is shown once."
    ]

    before = timezone.now()
    new = shown_secret(key_action(admin_client, "rotate_key", key, apply="Rotate", grace_seconds="600"))
    key.refresh_from_db()
    assert prefix_of(new) == key.prefix and key.matches(new) and key.matches(old)  # the old one, for the grace
    grace = key.previous_secret_expires_at - before
    assert timedelta(seconds=599) <= grace <= timedelta(seconds=610)
    assert new not in admin_client.get(reverse("admin:accounts_poolapikey_change", args=[key.pk])).content.decode()
    # A grace of 0 rotates now: the secret before stops at once.
    newest = shown_secret(key_action(admin_client, "rotate_key", key, apply="Rotate", grace_seconds="0"))
    key.refresh_from_db()
    assert key.matches(newest) and not key.matches(new) and not key.matches(old)
    assert key.previous_secret_expires_at is None
    rotations = AuditLog.objects.filter(action="rotate_api_key", object_id=str(key.pk), actor="admin:admin")
    assert rotations.count() == 2 and all(key.secret_hash not in str(r.changes) for r in rotations)


def test_the_admin_saves_a_keys_policy_and_audits_it(admin_client):
    pool = make_pool()
    key, raw = make_key(pool)
    url = reverse("admin:accounts_poolapikey_change", args=[key.pk])
    data = change_page_data(admin_client.get(url))
    budgets = [
        {"window": "5h", "kind": "tokens", "amount": 200000},
        {"window": "month", "kind": "input_tokens", "amount": 5000000, "model": "gpt-5.5"},
        {"window": "day", "kind": "cost", "amount": 5.0},
    ]
    data.update(
        {
            "expires_at_0": "2027-01-31",
            "expires_at_1": "00:00:00",
            "rpm": "30",
            "tokens_per_day": "100000",
            "max_concurrent": "2",
            "allowed_models": json.dumps(["gpt-5.2", "gpt-5.5"]),
            "forced_model": "gpt-5.2",
            "max_reasoning_effort": "low",
            "reasoning_effort_over_cap": "refuse",
            "forced_service_tier": "flex",
            "allowed_service_tiers": json.dumps(["default", "flex"]),
            "max_input_tokens": "50000",
            "max_output_tokens": "4000",
            "budgets": json.dumps(budgets),
        }
    )
    saved = admin_client.post(url, data)
    assert saved.status_code == 302, saved.context["adminform"].form.errors if saved.context else saved
    key.refresh_from_db()
    assert key.expires_at == datetime(2027, 1, 31, tzinfo=UTC)
    assert (key.rpm, key.tokens_per_day, key.max_concurrent) == (30, 100000, 2)
    assert (key.forced_model, key.max_reasoning_effort, key.reasoning_effort_over_cap) == ("gpt-5.2", "low", "refuse")
    assert (key.forced_service_tier, key.allowed_service_tiers) == ("flex", ["default", "flex"])
    assert (key.max_input_tokens, key.max_output_tokens) == (50000, 4000)
    assert key.allowed_models == ["gpt-5.2", "gpt-5.5"] and key.budgets == budgets
    assert key.matches(raw)  # an edit is not a rotation
    change = AuditLog.objects.get(action="change", object_type="poolapikey", object_id=str(key.pk))
    assert change.actor == "admin:admin"
    assert change.changes["forced_model"] == {"before": "", "after": "gpt-5.2"}
    assert change.changes["budgets"]["after"] == budgets and "secret_hash" not in change.changes
    # A budget the gateway could not read is refused on the form, and nothing changes.
    data["budgets"] = json.dumps([{"window": "fortnight", "kind": "tokens", "amount": 5}])
    refused = admin_client.post(url, data)
    assert refused.status_code == 200 and "fortnight" in refused.content.decode()
    assert PoolApiKey.objects.get(pk=key.pk).budgets == budgets
