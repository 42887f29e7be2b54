"""Every admin page renders for a superuser, never shows a secret, and audits changes."""

import pytest
from django.contrib import admin
from django.urls import reverse

from accounts.models import AuditLog, PoolApiKey, RequestLog, UpstreamAccount
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
    return {
        "pool": pool,
        "account": account,
        "secrets": [raw, raw_token, account.access_token, account.refresh_token, account.id_token],
    }


def test_every_admin_page_renders_without_secrets(admin_client, seeded):
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        pages = [reverse("admin:{}_{}_changelist".format(*info)), reverse("admin:{}_{}_add".format(*info))]
        obj = model.objects.first()
        if obj is not None:
            pages.append(reverse("admin:{}_{}_change".format(*info), args=[obj.pk]))
        for url in pages:
            response = admin_client.get(url)
            assert response.status_code in (200, 403), url
            body = response.content.decode()
            for secret in seeded["secrets"]:
                assert secret not in body, url


def test_adding_a_key_shows_it_once_and_audits(admin_client, seeded):
    response = admin_client.post(
        reverse("admin:accounts_poolapikey_add"),
        {"pool": seeded["pool"].pk, "name": "web", "allowed_models": "[]"},
        follow=True,
    )
    key = PoolApiKey.objects.get(name="web")
    shown = [m.message for m in response.context["messages"]]
    raw = shown[0].rsplit(" ", 1)[-1]
    assert key.matches(raw)
    assert AuditLog.objects.filter(action="add", object_type="poolapikey", actor="admin:admin").exists()
    assert raw not in admin_client.get(reverse("admin:accounts_poolapikey_change", args=[key.pk])).content.decode()


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
