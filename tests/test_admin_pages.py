"""Every admin page renders for a superuser, never shows a secret, and audits changes."""

import re
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.sessions.models import Session
from django.forms import MultiWidget
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditLog, McpToken, Pool, PoolApiKey, RequestLog, SessionAffinity, UpstreamAccount
from tests.factories import make_account, make_auth_json, make_key, make_mcp_token, make_pool

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(admin_user):
    pool = make_pool()
    account = make_account(pool)
    key, raw = make_key(pool)
    _, raw_token = make_mcp_token(admin_user)
    RequestLog.objects.create(
        request_id="req-1", pool=pool, api_key=key, account=account, route="responses", status_code=200, model="gpt-5.2"
    )
    SessionAffinity.objects.create(
        pool=pool, session_key_hash="a" * 64, account=account, expires_at=timezone.now() + timedelta(hours=1)
    )
    AuditLog.objects.create(actor="cli", action="add", object_type="pool", object_id=str(pool.pk), object_repr="p")
    return {
        "pool": pool,
        "account": account,
        "secrets": [raw, raw_token, account.access_token, account.refresh_token, account.id_token],
    }


# The models of DESIGN.md with pages of their own (memberships are edited inside their pool's page).
DESIGN_MODELS = [Pool, UpstreamAccount, PoolApiKey, McpToken, SessionAffinity, RequestLog, AuditLog]


def test_every_admin_page_renders_without_secrets(admin_client, seeded):
    assert set(DESIGN_MODELS) <= set(admin.site._registry)
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        obj = model.objects.first()
        assert obj is not None or model not in DESIGN_MODELS, f"no {model.__name__} seeded"
        pages = [reverse("admin:{}_{}_changelist".format(*info))]
        if obj is not None:
            pages.append(reverse("admin:{}_{}_change".format(*info), args=[obj.pk]))
        add = admin_client.get(reverse("admin:{}_{}_add".format(*info)))
        assert add.status_code in (200, 403)  # logs are read-only: no add page
        for url in pages:
            response = admin_client.get(url)
            assert response.status_code == 200, url
            body = response.content.decode()
            for secret in seeded["secrets"]:
                assert secret not in body, url


def test_adding_a_key_shows_it_once_and_audits(admin_client, seeded):
    response = admin_client.post(
        reverse("admin:accounts_poolapikey_add"),
        # As the browser posts the form: every JSON field with its initial value.
        {
            "pool": seeded["pool"].pk,
            "name": "web",
            "allowed_models": "[]",
            "allowed_service_tiers": "[]",
            "budgets": "[]",
            "reasoning_effort_over_cap": "lower",
        },
    )
    key = PoolApiKey.objects.get(name="web")
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    raw = re.search(r'<code id="issued-secret">([^<]+)</code>', response.content.decode()).group(1)
    assert key.matches(raw)
    assert AuditLog.objects.filter(action="add", object_type="poolapikey", actor="admin:admin").exists()
    # Shown in that response only: not in a message cookie, the session table or any later page.
    assert all(raw not in morsel.value for morsel in response.cookies.values())
    assert all(raw not in str(session.get_decoded()) for session in Session.objects.all())
    assert raw not in admin_client.get(reverse("admin:accounts_poolapikey_change", args=[key.pk])).content.decode()
    assert raw not in admin_client.get(reverse("admin:accounts_poolapikey_changelist")).content.decode()


def test_adding_an_account_by_pasting_auth_json(admin_client, seeded):
    import json

    data = make_auth_json(account_id="acct-pasted", email="paste@example.com")
    response = admin_client.post(
        reverse("admin:accounts_upstreamaccount_add"),
        {"auth_json": json.dumps(data), "pool": seeded["pool"].pk, "label": "pasted", "base_url": ""},
    )
    assert response.status_code == 302
    account = UpstreamAccount.objects.get(chatgpt_account_id="acct-pasted")
    assert account.label == "pasted" and account.email == "paste@example.com"
    assert account.memberships.filter(pool=seeded["pool"]).exists()


def test_pause_action_is_audited(admin_client, seeded):
    account = seeded["account"]
    admin_client.post(
        reverse("admin:accounts_upstreamaccount_changelist"),
        {"action": "pause_accounts", "_selected_action": [account.pk]},
    )
    account.refresh_from_db()
    assert account.status == "paused"
    entry = AuditLog.objects.get(action="pause_account")
    assert entry.changes["status"] == {"before": "active", "after": "paused"}


def change_page_data(response) -> dict:
    """The POST data of an admin change page as it stands: its form and its inline forms."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data = {}
    for form in forms:
        for name in form.fields:
            value, widget = form[name].value(), form.fields[name].widget
            if isinstance(widget, MultiWidget):  # date and time of a datetime, as name_0 and name_1
                parts = enumerate(widget.decompress(value))
                data.update({f"{form.add_prefix(name)}_{i}": part for i, part in parts if part is not None})
            elif value is not None and value is not False:
                data[form.add_prefix(name)] = "on" if value is True else value
    return data


def test_membership_edits_in_the_pool_page_are_audited(admin_client, seeded):
    pool, kept = seeded["pool"], seeded["account"]
    dropped = make_account(pool, label="dropped")
    url = reverse("admin:accounts_pool_change", args=[pool.pk])
    data = change_page_data(admin_client.get(url))
    rows = {data[f"memberships-{i}-account"]: i for i in range(int(data["memberships-TOTAL_FORMS"]))}
    data[f"memberships-{rows[kept.pk]}-weight"] = 5
    data[f"memberships-{rows[dropped.pk]}-DELETE"] = "on"
    assert admin_client.post(url, data).status_code == 302
    assert list(pool.memberships.values_list("account", "weight")) == [(kept.pk, 5)]
    change = AuditLog.objects.get(object_type="poolmembership", action="change")
    assert change.changes == {"weight": {"before": 1, "after": 5}} and change.actor == "admin:admin"
    deleted = AuditLog.objects.get(object_type="poolmembership", action="delete")
    assert deleted.object_repr == f"dropped in {pool.name}" and deleted.changes["account"]["before"] == dropped.pk


def test_session_affinity_changes_and_deletes_are_audited(admin_client, seeded):
    affinity = SessionAffinity.objects.create(
        pool=seeded["pool"],
        session_key_hash="ab" * 32,
        account=seeded["account"],
        expires_at=timezone.now().replace(microsecond=0),
    )
    url = reverse("admin:accounts_sessionaffinity_change", args=[affinity.pk])
    data = {**change_page_data(admin_client.get(url)), "move_reason": "operator"}
    assert admin_client.post(url, data).status_code == 302
    change = AuditLog.objects.get(object_type="sessionaffinity", action="change")
    assert change.changes == {"move_reason": {"before": "", "after": "operator"}}
    admin_client.post(reverse("admin:accounts_sessionaffinity_delete", args=[affinity.pk]), {"post": "yes"})
    assert not SessionAffinity.objects.filter(pk=affinity.pk).exists()
    assert AuditLog.objects.filter(object_type="sessionaffinity", action="delete", actor="admin:admin").exists()


def test_audit_log_rows_cannot_be_deleted_from_the_admin(admin_client, seeded):
    entry = AuditLog.objects.create(actor="cli", action="create_pool", object_type="pool", object_repr="team")
    assert admin_client.get(reverse("admin:accounts_auditlog_delete", args=[entry.pk])).status_code == 403
    admin_client.post(
        reverse("admin:accounts_auditlog_changelist"),
        {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"},
    )
    assert AuditLog.objects.filter(pk=entry.pk).exists()


def run_action(admin_client, action: str, *accounts) -> list[str]:
    """Run an account action from the changelist; returns the messages the operator sees."""
    response = admin_client.post(
        reverse("admin:accounts_upstreamaccount_changelist"),
        {"action": action, "_selected_action": [a.pk for a in accounts]},
        follow=True,
    )
    return [m.message for m in response.context["messages"]]


def test_resume_only_resumes_paused_accounts(admin_client, seeded):
    paused = make_account(seeded["pool"], status="paused", label="paused-one")
    dead = make_account(seeded["pool"], status="reauth_required", label="dead-one")
    shown = run_action(admin_client, "resume_accounts", paused, dead)
    paused.refresh_from_db()
    dead.refresh_from_db()
    assert (paused.status, dead.status) == ("active", "reauth_required")
    assert "dead-one: skipped, it is reauth_required (not paused)" in shown and "resume_account: 1 account(s)" in shown
    assert list(AuditLog.objects.filter(action="resume_account").values_list("object_id", flat=True)) == [
        str(paused.pk)
    ]


@pytest.mark.django_db(transaction=True)
def test_refresh_poll_and_test_turn_actions_reach_the_account_and_are_audited(admin_client, simulator, settings):
    settings.POOLER_AUTH_BASE_URL = simulator.url
    pool = make_pool()
    # Serves one model only, and its token expires in a minute.
    account = make_account(
        pool,
        simulator,
        sim_fields={"models": ["gpt-5.2"], "primary_used_percent": 21.0, "percent_per_turn": 0.0},
        model_slugs=["gpt-5.2"],
        token_expires_at=timezone.now() + timedelta(seconds=60),
    )
    sim_id = account.chatgpt_account_id

    assert run_action(admin_client, "send_test_turns", account) == [f"{account.label}: test_turn ok"]
    assert simulator.get_account(sim_id)["refresh_count"] == 1  # refreshed before the turn
    assert simulator.requests(account_id=sim_id, kind="turn")[-1]["model"] == "gpt-5.2"

    assert run_action(admin_client, "refresh_tokens", account) == [f"{account.label}: refresh_token ok"]
    assert simulator.get_account(sim_id)["refresh_count"] == 2

    shown = run_action(admin_client, "poll_quotas", account)
    assert shown == [f"{account.label}: poll_quota primary 21.0%, secondary 0.0%"]
    account.refresh_from_db()
    assert account.primary_used_percent == 21.0

    results = dict(AuditLog.objects.filter(object_id=str(account.pk)).values_list("action", "changes"))
    assert results["test_turn"]["result"]["after"] == "ok"
    assert results["refresh_token"]["result"]["after"] == "ok"
    assert results["poll_quota"]["result"]["after"].startswith("primary 21.0%")
    assert {e.actor for e in AuditLog.objects.filter(action__in=["test_turn", "refresh_token", "poll_quota"])} == {
        "admin:admin"
    }


@pytest.mark.django_db(transaction=True)
def test_refresh_action_skips_an_account_that_needs_a_new_login(admin_client, simulator, settings):
    settings.POOLER_AUTH_BASE_URL = simulator.url
    account = make_account(make_pool(), simulator, status="reauth_required")
    shown = run_action(admin_client, "refresh_tokens", account)
    assert shown == [f"{account.label}: refresh_token skipped: the account is reauth_required"]
    assert simulator.get_account(account.chatgpt_account_id)["refresh_count"] == 0
    assert AuditLog.objects.get(action="refresh_token").changes["result"]["after"].startswith("skipped")


def test_dashboard_shows_capacity_quota_and_charts(admin_client, seeded):
    UpstreamAccount.objects.update(primary_used_percent=85.0, secondary_used_percent=20.0)
    response = admin_client.get("/admin/dashboard/")
    body = response.content.decode()
    assert response.status_code == 200
    assert f"Pool {seeded['pool'].name}" in body and "1 of 1 accounts can serve now" in body
    assert "<svg" in body and "85%" in body and "gpt-5.2" in body
    for secret in seeded["secrets"]:
        assert secret not in body


def test_dashboard_needs_staff_login(client):
    response = client.get("/admin/dashboard/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
