"""Two-factor sign-in: enrolment by QR code, codes from the authenticator, one-time recovery codes; failed sign-ins
throttled per user and address, audited, and lifted by unlock_operator."""

import base64
import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import AuditLog
from accounts.two_factor import _qr_svg
from tests.support.browser import ARTIFACTS, needs_chromium, operator_page
from tests.support.pooler import PoolerServer

PASSWORD = "correct horse battery"


@pytest.fixture
def owner(db):
    return get_user_model().objects.create_superuser("owner", "owner@example.com", PASSWORD)


def sign_in(client: Client, code: str = "", password: str = PASSWORD, username: str = "owner"):
    data = {"username": username, "password": password, "otp_token": code, "next": "/admin/"}
    return client.post("/admin/login/?next=/admin/", data)


def current_code(user) -> str:
    device = TOTPDevice.objects.get(user=user, confirmed=True)
    return f"{totp(device.bin_key):06d}"


def enrol(client: Client, user) -> list[str]:
    page = client.get("/admin/2fa/").content.decode()
    assert "<svg" in page and 'id="totp-secret"' in page
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    done = client.post("/admin/2fa/", {"code": f"{totp(device.bin_key):06d}"}).content.decode()
    return re.findall(r"<li><code>(\w+)</code></li>", done)


def test_when_required_an_owner_enrols_then_signs_in_with_codes(settings, owner):
    settings.POOLER_REQUIRE_2FA = True
    # django-otp also slows down a device after a wrong code (1 s, 2 s, 4 s…): not within this test.
    settings.OTP_TOTP_THROTTLE_FACTOR = settings.OTP_STATIC_THROTTLE_FACTOR = 0
    client = Client()
    assert sign_in(client).status_code == 302
    # The password alone opens nothing but the enrolment page.
    assert client.get("/admin/").status_code == 302
    assert client.get("/admin/login/?next=/admin/")["Location"] == "/admin/2fa/"
    assert client.get("/admin/dashboard/").status_code == 302
    codes = enrol(client, owner)
    assert len(codes) == 10
    assert client.get("/admin/").status_code == 200
    assert AuditLog.objects.filter(action="enrol_2fa", actor="admin:owner").exists()

    # Next time the code is needed: none, a wrong one, then a recovery code (once only).
    fresh = Client()
    assert "Enter the current code" in sign_in(fresh).content.decode()
    assert (
        "wrong or was already used"
        in sign_in(fresh, "000000" if current_code(owner) != "000000" else "111111").content.decode()
    )
    assert sign_in(fresh, codes[0]).status_code == 302 and fresh.get("/admin/").status_code == 200
    assert "wrong or was already used" in sign_in(Client(), codes[0]).content.decode()
    assert AuditLog.objects.filter(action="signin_failed", object_repr="owner").count() == 3
    # The authenticator's own code works too (in a new 30-second step it would be a new code).
    TOTPDevice.objects.filter(user=owner).update(last_t=-1)
    other = Client()
    assert sign_in(other, current_code(owner)).status_code == 302 and other.get("/admin/").status_code == 200


def test_someone_who_enrolled_needs_the_code_even_when_not_required(settings, owner):
    settings.POOLER_REQUIRE_2FA = False
    client = Client()
    assert sign_in(client).status_code == 302 and client.get("/admin/").status_code == 200
    codes = enrol(client, owner)
    assert "Enter the current code" in sign_in(Client()).content.decode()
    assert sign_in(Client(), codes[1]).status_code == 302
    # A session that gave no code cannot enrol anew over the existing device.
    stale = Client()
    stale.force_login(owner)
    assert stale.get("/admin/2fa/")["Location"].startswith("/admin/login/")


def test_failed_sign_ins_lock_a_user_out_at_an_address_until_unlocked(settings, owner):
    settings.AXES_FAILURE_LIMIT = 3
    client = Client()
    for _ in range(3):
        sign_in(client, password="wrong")
    locked = sign_in(client)  # even the right password, for now
    assert locked.status_code == 429 and "unlock_operator" in locked.content.decode()
    assert AuditLog.objects.filter(action="signin_locked_out", object_repr="owner").exists()
    assert AuditLog.objects.filter(action="signin_failed", actor="signin:127.0.0.1").count() >= 3
    out = io.StringIO()
    call_command("unlock_operator", "--username", "owner", stdout=out)
    assert "cleared" in out.getvalue()
    assert sign_in(client).status_code == 302 and client.get("/admin/").status_code == 200
    assert AuditLog.objects.filter(action="unlock_operator", actor="cli").exists()


def test_unlock_can_remove_a_lost_authenticator(settings, owner):
    settings.POOLER_REQUIRE_2FA = True
    client = Client()
    sign_in(client)
    enrol(client, owner)
    call_command("unlock_operator", "--username", "owner", "--reset-2fa", stdout=io.StringIO())
    again = Client()
    assert sign_in(again).status_code == 302
    assert again.get("/admin/login/?next=/admin/")["Location"] == "/admin/2fa/"


@pytest.fixture(scope="module")
def strict_pooler(django_db_setup, django_db_blocker, simulator):
    server = PoolerServer(extra_env={"POOLER_REQUIRE_2FA": "true", "POOLER_AUTH_BASE_URL": simulator.url})
    yield server
    server.close()


@needs_chromium
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_owner_enrols_in_the_browser_and_signs_in_with_a_code_then_a_recovery_code(strict_pooler):
    get_user_model().objects.create_superuser("owner", "owner@example.com", PASSWORD)
    url = f"{strict_pooler.url}/admin/2fa/"
    with operator_page(f"{strict_pooler.url}/admin/login/?next=/admin/2fa/", "owner", PASSWORD, wait_for=url) as op:
        page = op.page
        assert page.locator("#totp-qr svg").count() == 1
        qr_modules = page.get_attribute("#totp-qr svg path", "d")  # the QR code's dark modules, as drawn
        page.screenshot(path=str(ARTIFACTS / "two-factor-enrol.png"), full_page=True)
        # What a phone's app does with the key under the QR code (no database call inside Playwright's loop).
        secret = page.inner_text("#totp-secret")
        key = base64.b32decode(secret + "=" * (-len(secret) % 8))
        page.fill("#id_code", f"{totp(key):06d}")
        page.click("#enrol-form input[type=submit]")
        page.wait_for_selector("#recovery-codes")
        codes = page.locator("#recovery-codes code").all_inner_texts()
        page.screenshot(path=str(ARTIFACTS / "two-factor-recovery-codes.png"), full_page=True)
        page.goto(f"{strict_pooler.url}/admin/dashboard/")
        assert page.locator("text=Pooler dashboard").count() >= 1
    assert op.problems == [] and op.foreign == []
    # The QR code a phone scans is the device's own URL, with the key shown under it.
    device = TOTPDevice.objects.get(user__username="owner", confirmed=True)
    assert f"secret={secret}&" in device.config_url
    assert qr_modules == re.search(r' d="([^"]+)"', _qr_svg(device.config_url)).group(1)
    login, home = f"{strict_pooler.url}/admin/login/?next=/admin/", f"{strict_pooler.url}/admin/"
    # This 30-second step's code was spent on enrolment and a code works once: the app's next code is taken (it is
    # within the one step of drift a device tolerates).
    with operator_page(login, "owner", PASSWORD, code=f"{totp(key, drift=1):06d}", wait_for=home) as op:
        assert op.page.locator("#site-name").count() == 1
        op.page.screenshot(path=str(ARTIFACTS / "two-factor-signed-in.png"), full_page=True)
    assert op.problems == []
    with operator_page(login, "owner", PASSWORD, code=codes[0], wait_for=home) as op:
        assert op.page.locator("#site-name").count() == 1
    assert op.problems == []
    # A recovery code works once: the same code again is refused, and the login form stays.
    with operator_page(login, "owner", PASSWORD, code=codes[0], wait_for=login) as op:
        op.page.wait_for_selector("p.errornote:has-text('That code is wrong or was already used.')")
        assert op.page.url == login and op.page.locator("#id_otp_token").count() == 1
        op.page.screenshot(path=str(ARTIFACTS / "two-factor-recovery-code-reused.png"), full_page=True)
    assert op.problems == [] and op.foreign == []
    assert AuditLog.objects.filter(action="signin_failed", object_repr="owner").count() == 1
