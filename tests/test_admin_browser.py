"""An operator in headless Chromium: login, the dashboard, the request log. Screenshots go to test-artifacts/."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts.models import AuditLog, RequestLog
from tests.factories import make_account, make_key, make_pool
from tests.support.browser import ARTIFACTS, needs_chromium, operator_page

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


@pytest.fixture
def seeded():
    get_user_model().objects.create_superuser("operator", "ops@example.com", "correct horse battery")
    pool = make_pool(name="team")
    now = timezone.now()
    busy = make_account(
        pool,
        label="alice",
        primary_used_percent=92.0,
        primary_resets_at=now + timedelta(hours=2),
        secondary_used_percent=40.0,
        secondary_resets_at=now + timedelta(days=3),
    )
    make_account(pool, label="bob", primary_used_percent=15.0, secondary_used_percent=5.0)
    make_account(
        pool,
        label="carol",
        cooldown_until=now + timedelta(minutes=9),
        cooldown_reason="rate_limited",
        last_error="status 429 rate_limit_exceeded",
    )
    key, _ = make_key(pool, name="ci-bot")
    for hours in range(0, 30, 3):
        RequestLog.objects.create(
            created_at=now - timedelta(hours=hours),
            request_id=f"req-{hours}",
            pool=pool,
            api_key=key,
            account=busy,
            route="codex.responses",
            model="gpt-5.2",
            status_code=200,
            outcome="ok",
            total_tokens=1000 + hours * 50,
            input_tokens=800,
            output_tokens=200,
            ttft_ms=120,
            duration_ms=900,
            attempts=[
                {"account": "carol", "outcome": "status 429", "status": 429, "ms": 40},
                {"account": "alice", "outcome": "ok", "status": 200, "ms": 120},
            ],
        )
    AuditLog.objects.create(actor="cli", action="create_pool", object_type="pool", object_repr="team")


@needs_chromium
def test_operator_browses_dashboard_and_request_log(pooler, seeded):
    with operator_page(f"{pooler.url}/admin/dashboard/", "operator", "correct horse battery") as operator:
        page = operator.page
        assert page.locator("text=Pool team").count() == 1
        assert page.locator("svg rect").count() >= 24
        assert "92%" in page.content() and "rate_limited" in page.content()
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        page.goto(f"{pooler.url}/admin/accounts/requestlog/?model=gpt-5.2&status_code=200")
        assert page.locator("#result_list tbody tr").count() == 10
        page.screenshot(path=str(ARTIFACTS / "request-log.png"), full_page=True)
        page.locator("#result_list tbody tr th a").first.click()
        page.wait_for_selector("text=alice → ok")
        assert "carol → status 429" in page.content()
        page.screenshot(path=str(ARTIFACTS / "request-detail.png"), full_page=True)

        page.goto(f"{pooler.url}/admin/accounts/auditlog/")
        assert "create_pool" in page.content()
    assert operator.problems == []
    assert operator.foreign == []
