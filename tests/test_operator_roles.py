"""Owners see every pool; a pool operator sees and changes only the pools granted to them, in the admin, its
dashboard and through their MCP tokens, and every change is audited with its actor."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts import operators
from accounts.models import AuditLog, Pool, PoolApiKey, PoolMembership, RequestLog, SessionAffinity, UpstreamAccount
from tests.factories import make_account, make_key, make_mcp_token, make_pool
from tests.support.browser import ARTIFACTS, needs_chromium, operator_page
from tests.test_admin_pages import change_page_data
from tests.test_mcp import call_all, text_json

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_pools():
    rows = {}
    for name in ("mine", "theirs"):
        pool = make_pool(name=name)
        account = make_account(pool, label=f"{name}-account")
        key, _ = make_key(pool, name=f"{name}-key")
        RequestLog.objects.create(
            request_id=f"{name}-request", pool=pool, api_key=key, account=account, route="codex.responses",
            status_code=200, model="gpt-5.2", total_tokens=100,
        )  # fmt: skip
        SessionAffinity.objects.create(
            pool=pool, session_key_hash=name * 8, account=account, expires_at=timezone.now() + timedelta(hours=1)
        )
        AuditLog.objects.create(
            actor="cli", action="create_pool", object_type="pool", object_id=str(pool.pk), object_repr=f"{name}-pool"
        )
        rows[name] = {"pool": pool, "account": account, "key": key}
    operator = get_user_model().objects.create_user("olga", password="pw")
    operators.grant(operator, [rows["mine"]["pool"]], "cli")
    client = Client()
    client.force_login(operator)
    return {**rows, "operator": operator, "client": client}


LISTS = ["pool", "upstreamaccount", "poolapikey", "sessionaffinity", "requestlog", "auditlog"]


def test_a_pool_operator_sees_only_their_pool_in_every_list(two_pools):
    client = two_pools["client"]
    for model in LISTS:
        page = client.get(reverse(f"admin:accounts_{model}_changelist"))
        assert page.status_code == 200, model
        body = page.content.decode()
        assert "mine" in body and "theirs" not in body, model
    board = client.get("/admin/dashboard/").content.decode()
    assert "Pool mine" in board and "theirs" not in board
    # Rows of another pool are not found, and what only owners change is not offered.
    theirs = two_pools["theirs"]
    for model, row in (("pool", theirs["pool"]), ("upstreamaccount", theirs["account"]), ("poolapikey", theirs["key"])):
        assert client.get(reverse(f"admin:accounts_{model}_change", args=[row.pk])).status_code == 302
    assert client.get(reverse("admin:accounts_modelprice_changelist")).status_code == 403
    assert client.get(reverse("admin:auth_user_changelist")).status_code == 403
    assert (
        "operators"
        not in client.get(reverse("admin:accounts_pool_change", args=[two_pools["mine"]["pool"].pk])).content.decode()
    )


@needs_chromium
@pytest.mark.browser
def test_a_pool_operator_in_the_browser_sees_only_their_pool(pooler, two_pools):
    with operator_page(f"{pooler.url}/admin/dashboard/", "olga", "pw") as operator:
        page = operator.page
        assert page.locator("text=Pool mine").count() == 1 and "theirs" not in page.content()
        page.screenshot(path=str(ARTIFACTS / "operator-dashboard.png"), full_page=True)
        for model, row in (("upstreamaccount", "mine-account"), ("poolapikey", "mine-key"), ("requestlog", "mine")):
            page.goto(f"{pooler.url}{reverse(f'admin:accounts_{model}_changelist')}")
            assert page.locator("#result_list tbody tr").count() == 1, model
            assert row in page.inner_text("#result_list") and "theirs" not in page.content(), model
            page.screenshot(path=str(ARTIFACTS / f"operator-{model}.png"), full_page=True)
        # And every other list the sidebar offers them.
        lists = page.eval_on_selector_all("#nav-sidebar th a", "links => links.map(a => a.href)")
        assert len(lists) >= 6
        for url in lists:
            page.goto(url)
            assert "theirs" not in page.content(), url
    assert operator.problems == [] and operator.foreign == []


def test_a_pool_operator_changes_their_pool_only_and_is_audited(two_pools):
    client, mine, theirs = two_pools["client"], two_pools["mine"], two_pools["theirs"]
    url = reverse("admin:accounts_poolapikey_add")
    form = {
        "allowed_models": "[]",
        "allowed_service_tiers": "[]",
        "budgets": "[]",
        "reasoning_effort_over_cap": "lower",
    }
    refused = client.post(url, {**form, "pool": theirs["pool"].pk, "name": "sneaky"})
    assert "Select a valid choice" in refused.content.decode()
    assert not PoolApiKey.objects.filter(name="sneaky").exists()
    assert client.post(url, {**form, "pool": mine["pool"].pk, "name": "new-key"}).status_code == 200
    assert PoolApiKey.objects.get(name="new-key").pool == mine["pool"]
    client.post(
        reverse("admin:accounts_upstreamaccount_changelist"),
        {"action": "pause_accounts", "_selected_action": [mine["account"].pk, theirs["account"].pk]},
    )
    assert UpstreamAccount.objects.get(pk=mine["account"].pk).status == "paused"
    assert UpstreamAccount.objects.get(pk=theirs["account"].pk).status == "active"
    actions = set(AuditLog.objects.filter(actor="admin:olga").values_list("action", "object_repr"))
    assert ("pause_account", "mine-account") in actions and any(a == "add" for a, _ in actions)


def test_an_owner_grants_pools_on_the_pool_page_audited(admin_client, two_pools):
    theirs = two_pools["theirs"]["pool"]
    url = reverse("admin:accounts_pool_change", args=[theirs.pk])
    data = change_page_data(admin_client.get(url))
    assert admin_client.post(url, {**data, "operators": [two_pools["operator"].pk]}).status_code == 302
    assert set(Pool.objects.filter(operators=two_pools["operator"]).values_list("name", flat=True)) == {
        "mine",
        "theirs",
    }
    grant = AuditLog.objects.get(action="change_operators")
    assert grant.actor == "admin:admin" and grant.changes == {"operators": {"before": [], "after": ["olga"]}}
    assert "theirs" in two_pools["client"].get(reverse("admin:accounts_pool_changelist")).content.decode()


def test_an_operators_mcp_token_reads_and_writes_their_pools_only(pooler, two_pools):
    _, reader = make_mcp_token(two_pools["operator"], can_write=True)
    theirs = two_pools["theirs"]
    _, results = call_all(
        f"{pooler.url}/mcp",
        reader,
        [
            ("list_pools", {}),
            ("list_accounts", {}),
            ("list_api_keys", {}),
            ("query_requests", {}),
            ("usage_summary", {"group_by": "pool"}),
            ("recent_audit_events", {}),
            ("pool_status", {"pool": "theirs"}),
            ("pause_account", {"account": "theirs-account"}),
            ("revoke_api_key", {"prefix": theirs["key"].prefix}),
            ("pause_api_key", {"prefix": theirs["key"].prefix}),
            ("pause_account", {"account": "mine-account"}),
        ],
    )
    # Read as a client that reads only the text content would.
    reads = [text_json(r) for r in results[:6]]
    assert [p["name"] for p in reads[0]["items"]] == ["mine"]
    assert [a["label"] for a in reads[1]["items"]] == ["mine-account"]
    assert [k["name"] for k in reads[2]["items"]] == ["mine-key"]
    assert [r["request_id"] for r in reads[3]["requests"]] == ["mine-request"]
    assert [g["group"] for g in reads[4]["groups"]] == ["mine"]
    assert {e["object"] for e in reads[5]["items"]} == {"mine", "mine-pool"}  # its grant and its creation
    assert all(r.is_error for r in results[6:10]), [r.content[0].text for r in results[6:10]]
    assert "no pool named 'theirs'" in results[6].content[0].text
    assert not results[10].is_error
    assert UpstreamAccount.objects.get(pk=theirs["account"].pk).status == "active"
    key = PoolApiKey.objects.get(pk=theirs["key"].pk)
    assert key.revoked_at is None and key.paused_at is None
    assert UpstreamAccount.objects.get(label="mine-account").status == "paused"
    assert AuditLog.objects.filter(actor="mcp:olga", action="pause_account").count() == 1


def test_an_account_shared_with_another_pool_is_read_only_to_a_pool_operator(pooler, admin_client, two_pools):
    mine, theirs = two_pools["mine"], two_pools["theirs"]
    shared = make_account(mine["pool"], label="shared-account")
    PoolMembership.objects.create(pool=theirs["pool"], account=shared)
    client = two_pools["client"]
    # Seen, since it serves their pool, but not changed: that would change the other pool too.
    page = client.get(reverse("admin:accounts_upstreamaccount_change", args=[shared.pk]))
    assert page.status_code == 200 and "View upstream account" in page.content.decode()
    data = {"label": "renamed", "status": "paused", "base_url": shared.base_url}
    assert client.post(reverse("admin:accounts_upstreamaccount_change", args=[shared.pk]), data).status_code == 403
    changelist = reverse("admin:accounts_upstreamaccount_changelist")
    paused = client.post(
        changelist, {"action": "pause_accounts", "_selected_action": [shared.pk, mine["account"].pk]}, follow=True
    )
    assert "Shared-account: skipped, it also serves pools you do not operate" in paused.content.decode()
    assert UpstreamAccount.objects.get(pk=shared.pk).status == "active"
    assert UpstreamAccount.objects.get(pk=mine["account"].pk).status == "paused"
    _, writer = make_mcp_token(two_pools["operator"], can_write=True)
    _, (refused,) = call_all(f"{pooler.url}/mcp", writer, [("pause_account", {"account": "shared-account"})])
    assert refused.is_error and "also serves pools you do not operate" in refused.content[0].text
    assert UpstreamAccount.objects.get(pk=shared.pk).status == "active"
    # An owner runs every pool: the same action pauses it.
    admin_client.post(changelist, {"action": "pause_accounts", "_selected_action": [shared.pk]})
    assert UpstreamAccount.objects.get(pk=shared.pk).status == "paused"
