"""Device-code onboarding (`login_account --device` and the admin page) against the simulator's auth server."""

import re
import subprocess

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse

from accounts.models import AuditLog, UpstreamAccount
from tests.factories import make_pool
from tests.support.browser import ARTIFACTS, needs_chromium, operator_page
from tests.support.pooler import _free_port
from tests.test_secrets_at_rest import all_stored_text
from tests.test_worker_and_login import manage

pytestmark = pytest.mark.django_db(transaction=True)


def device(simulator, action: str, **fields) -> dict:
    """The user at the device page: approve (with `account_id`), deny, expire, or the server's slow_down."""
    response = httpx.post(f"{simulator.url}/_sim/device/{action}", json=fields)
    assert response.status_code == 200, response.text
    return response.json()


def device_auth_id(simulator, user_code: str) -> str:
    codes = httpx.get(f"{simulator.url}/_sim/device").json()["codes"]
    return next(c["device_auth_id"] for c in codes if c["user_code"] == user_code)


@pytest.fixture(autouse=True)
def quick_polls(simulator):
    """Codes issued from now on ask for a poll every second (the real server says 5)."""
    httpx.patch(f"{simulator.url}/_sim/device", json={"interval": 1}).raise_for_status()


def start_login(pool, simulator, *args, env=None) -> tuple[subprocess.Popen, str, str]:
    """`login_account --device` running, and the verification URL and user code it printed."""
    process = manage("login_account", "--pool", pool.name, "--device", *args, simulator=simulator, env=env)
    printed = []
    for line in process.stdout:
        printed.append(line.strip())
        if line.startswith("Waiting for the approval"):
            return process, printed[1], printed[2]
    raise AssertionError(f"{printed} {process.stderr.read()}")


def test_an_approved_device_login_stores_the_account_with_its_tokens_encrypted(simulator):
    pool = make_pool()
    account = simulator.add_account(email="device@example.com", plan_type="pro")
    process, url, user_code = start_login(pool, simulator, "--label", "by-device")
    assert url == f"{simulator.url}/codex/device"
    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{5}", user_code)
    device(simulator, "approve", user_code=user_code, account_id=account["account_id"])
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"logged in by-device (device@example.com; account {account['account_id']}, plan pro)" in out
    stored = UpstreamAccount.objects.get(label="by-device")
    assert stored.chatgpt_account_id == account["account_id"] and stored.memberships.get().pool == pool
    # The tokens of the exchange (the code was swapped for new ones), usable and only ever stored encrypted.
    issued = simulator.get_account(account["account_id"])
    assert (stored.access_token, stored.refresh_token) == (issued["access_token"], issued["refresh_token"])
    stored_text = all_stored_text()
    for secret in (stored.access_token, stored.refresh_token, stored.id_token):
        assert secret not in stored_text
    assert simulator.requests(kind="token", account_id=account["account_id"], status=200)


def test_a_denied_device_login_says_so_and_stores_nothing(simulator):
    pool = make_pool()
    account = simulator.add_account()
    process, _, user_code = start_login(pool, simulator)
    device(simulator, "deny", user_code=user_code)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1 and "Traceback" not in err
    assert f"CommandError: the sign-in with code {user_code} was declined; nothing was stored" in err
    assert not UpstreamAccount.objects.filter(chatgpt_account_id=account["account_id"]).exists()


def test_an_expired_device_code_says_so(simulator):
    process, _, user_code = start_login(make_pool(), simulator)
    device(simulator, "expire", user_code=user_code)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"the code {user_code} expired before it was approved" in err
    assert not UpstreamAccount.objects.exists()


def test_a_code_nobody_approves_in_time_gives_up(simulator):
    process, _, user_code = start_login(make_pool(), simulator, "--timeout", "2")
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"the code {user_code} was not approved within 2 seconds; run login_account --device again" in err


def test_slow_down_widens_the_poll_interval(simulator):
    account = simulator.add_account()
    simulator.clear_requests()
    process, _, user_code = start_login(make_pool(), simulator)
    device(simulator, "slow_down", user_code=user_code)
    device(simulator, "approve", user_code=user_code, account_id=account["account_id"])
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "the auth server asked to poll less often: every 6 s now" in err
    polls = simulator.requests(kind="device_token")
    slowed = next(i for i, poll in enumerate(polls) if poll["error_code"] == "slow_down")
    assert polls[slowed + 1]["status"] == 200
    assert polls[slowed + 1]["time"] - polls[slowed]["time"] >= 6


def test_an_unreachable_auth_server_is_named(simulator):
    dead = f"http://127.0.0.1:{_free_port()}"
    process = manage(
        "login_account", "--pool", make_pool().name, "--device", simulator=simulator, env={"POOLER_AUTH_BASE_URL": dead}
    )
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1 and "Traceback" not in err
    assert f"cannot reach the auth server at {dead} (ConnectError)" in err


# The admin page, through Django's test client (the browser drives it at the end).


@pytest.fixture
def admin_auth(settings, simulator):
    settings.POOLER_AUTH_BASE_URL = simulator.url


def start_page_login(client, pool, label="") -> tuple[str, str]:
    """Start a login on the page; its poll URL and the user code it shows."""
    response = client.post(reverse("admin:accounts_device_login"), {"pool": pool.pk, "label": label})
    assert response.status_code == 302, response.content
    page = client.get(response["Location"]).content.decode()
    user_code = re.search(r'id="user-code"[^>]*>([^<]+)<', page).group(1)
    poll_url = re.search(r'data-poll-url="([^"]+)"', page).group(1)
    return poll_url, user_code


def test_the_admin_page_logs_an_account_in_and_keeps_the_code_sealed(admin_client, admin_auth, simulator):
    pool = make_pool(name="team-device")
    account = simulator.add_account(email="page@example.com")
    poll_url, user_code = start_page_login(admin_client, pool, label="from-admin")
    assert admin_client.post(poll_url).json() == {"status": "pending", "interval": 1}
    # The session holds what can fetch the tokens: only encrypted.
    secret = device_auth_id(simulator, user_code)
    assert all(secret not in str(session.get_decoded()) for session in Session.objects.all())
    assert secret not in all_stored_text()

    device(simulator, "approve", user_code=user_code, account_id=account["account_id"])
    answer = admin_client.post(poll_url).json()
    stored = UpstreamAccount.objects.get(chatgpt_account_id=account["account_id"])
    assert answer == {
        "status": "approved",
        "message": "Logged in from-admin (page@example.com) into pool team-device.",
        "account_url": reverse("admin:accounts_upstreamaccount_change", args=[stored.pk]),
    }
    assert stored.label == "from-admin" and stored.memberships.get().pool == pool
    assert AuditLog.objects.filter(actor="admin:admin", action="import_account", object_id=str(stored.pk)).exists()
    assert admin_client.post(poll_url).json() == answer  # the outcome stays; the code is not polled again


@pytest.mark.parametrize(
    "action, status, message",
    [("deny", "denied", "was declined; nothing was stored"), ("expire", "expired", "expired before it was approved")],
)
def test_the_admin_page_says_when_the_code_is_denied_or_expired(
    admin_client, admin_auth, simulator, action, status, message
):
    poll_url, user_code = start_page_login(admin_client, make_pool())
    device(simulator, action, user_code=user_code)
    answer = admin_client.post(poll_url).json()
    assert answer["status"] == status and message in answer["message"] and user_code in answer["message"]
    assert not UpstreamAccount.objects.exists()


def test_the_admin_page_names_an_unreachable_auth_server(admin_client, settings):
    settings.POOLER_AUTH_BASE_URL = f"http://127.0.0.1:{_free_port()}"
    response = admin_client.post(reverse("admin:accounts_device_login"), {"pool": make_pool().pk})
    assert response.status_code == 200 and "cannot reach the auth server" in response.content.decode()


def test_the_admin_page_is_for_staff_with_add_permission_and_csrf_protected(admin_user, admin_auth):
    start = reverse("admin:accounts_device_login")
    poll = reverse("admin:accounts_device_login_poll", kwargs={"login_id": "abc"})
    assert Client().get(start)["Location"].startswith("/admin/login/")
    assert Client().post(poll)["Location"].startswith("/admin/login/")

    viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_upstreamaccount"))
    client = Client()
    client.force_login(viewer)
    assert client.get(start).status_code == 403
    assert client.post(poll).status_code == 403

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    assert strict.post(poll).status_code == 403  # no CSRF token
    assert strict.get(poll).status_code == 405
    changelist = strict.get(reverse("admin:accounts_upstreamaccount_changelist")).content.decode()
    assert f'href="{start}"' in changelist


def get_a_code_on_the_page(page, pool: str, label: str = "") -> str:
    """From the account list, start a device-code login for `pool` on the page; the user code it shows."""
    page.click("text=Log in with a device code")
    page.select_option("#id_pool", label=pool)
    page.fill("#id_label", label)
    page.click("input[value='Get a code']")
    return page.locator("#user-code").inner_text()


@pytest.mark.browser
@needs_chromium
def test_operator_logs_in_an_account_with_a_device_code_in_the_browser(pooler, simulator):
    get_user_model().objects.create_superuser("operator", "ops@example.com", "correct horse battery")
    make_pool(name="browser-team")
    account = simulator.add_account(email="browser@example.com")
    changelist = f"{pooler.url}/admin/accounts/upstreamaccount/"
    with operator_page(changelist, "operator", "correct horse battery", width=1200) as operator:
        page = operator.page
        user_code = get_a_code_on_the_page(page, "browser-team", label="from-browser")
        assert page.locator(f"a[href='{simulator.url}/codex/device']").count() == 1
        page.screenshot(path=str(ARTIFACTS / "device-login-waiting.png"), full_page=True)

        device(simulator, "approve", user_code=user_code, account_id=account["account_id"])
        page.wait_for_selector("text=Logged in from-browser (browser@example.com) into pool browser-team.")
        page.screenshot(path=str(ARTIFACTS / "device-login-approved.png"), full_page=True)
        page.click("text=Open the account")
        page.wait_for_url("**/change/")
        assert page.input_value("#id_label") == "from-browser"
    assert operator.problems == [] and operator.foreign == []
    assert UpstreamAccount.objects.get(label="from-browser").email == "browser@example.com"


@pytest.mark.browser
@needs_chromium
@pytest.mark.parametrize(
    "action, message",
    [
        ("deny", "Denied: the sign-in with code {code} was declined; nothing was stored."),
        ("expire", "Expired: the code {code} expired before it was approved; start the login again."),
    ],
)
def test_the_page_says_when_a_device_code_is_denied_or_expired_in_the_browser(pooler, simulator, action, message):
    get_user_model().objects.create_superuser("operator", "ops@example.com", "correct horse battery")
    make_pool(name="browser-team")
    simulator.add_account(email="browser@example.com")
    changelist = f"{pooler.url}/admin/accounts/upstreamaccount/"
    with operator_page(changelist, "operator", "correct horse battery", width=1200) as operator:
        page = operator.page
        user_code = get_a_code_on_the_page(page, "browser-team", label="never-stored")
        page.wait_for_selector("#device-login-status:has-text('checking every 1 s')")  # the page polls: pending

        device(simulator, action, user_code=user_code)
        status = page.wait_for_selector(f"#device-login-status:has-text('{message.format(code=user_code)}')")
        assert status.get_attribute("class") == "error"
        assert page.locator("#device-login-account").is_hidden()  # no account to open
        page.screenshot(path=str(ARTIFACTS / f"device-login-{action}.png"), full_page=True)
    assert operator.problems == [] and operator.foreign == []
    assert not UpstreamAccount.objects.exists()
    assert not AuditLog.objects.filter(action="import_account").exists()
