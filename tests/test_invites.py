"""Invites: a one-time, expiring link (hashed at rest) where an invited operator sets a password; dead links get
a page that says why, never a 500."""

import hashlib
import io
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.http import HttpRequest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditLog, OperatorInvite, Pool
from tests.factories import make_pool
from tests.support.browser import ARTIFACTS, browser_page, needs_chromium, operator_page

pytestmark = pytest.mark.django_db


def invite(*args) -> str:
    out = io.StringIO()
    call_command("invite_operator", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip().splitlines()[-1]


def token_of(link: str) -> str:
    return link.split("#", 1)[1]


def open_link(client: Client, link: str):
    """What the page's script does with the link's fragment, which never reaches the server by itself."""
    return client.post("/admin/invite/", {"token": token_of(link)})


def set_password(client: Client, link: str, password: str = "a long enough secret 42"):
    return client.post(
        "/admin/invite/", {"token": token_of(link), "new_password1": password, "new_password2": password}
    )


def test_the_command_makes_a_one_time_link_for_a_pool_operator():
    make_pool(name="team")
    make_pool(name="lab")
    link = invite("--email", "nina@example.com", "--pool", "team", "--pool", "lab", "--url", "https://pooler.example")
    # The token is the link's fragment: browsers never send it, so no request line or access log holds it.
    assert re.fullmatch(r"https://pooler\.example/admin/invite/#[\w-]{40,}", link)
    token = token_of(link)
    row = OperatorInvite.objects.get()
    # Only a hash of the token is kept.
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() and token not in str(row.__dict__)
    nina = get_user_model().objects.get(username="nina@example.com")
    assert nina.is_staff and not nina.is_superuser and not nina.has_usable_password()
    assert set(Pool.objects.filter(operators=nina).values_list("name", flat=True)) == {"team", "lab"}
    assert AuditLog.objects.filter(actor="cli", action="invite_operator").exists()

    client = Client()
    bare = client.get("/admin/invite/")
    assert bare.status_code == 200 and 'id="invite-open"' in bare.content.decode()
    page = open_link(client, link)
    assert page.status_code == 200 and "nina@example.com" in page.content.decode()
    assert 'id="id_new_password1"' in page.content.decode()
    mismatch = client.post(
        "/admin/invite/", {"token": token, "new_password1": "one thing 1234", "new_password2": "other"}
    )
    assert mismatch.status_code == 200 and "errorlist" in mismatch.content.decode()
    done = set_password(client, link)
    assert done.status_code == 200 and "Your password is set" in done.content.decode()
    assert client.login(request=HttpRequest(), username="nina@example.com", password="a long enough secret 42")
    assert AuditLog.objects.filter(actor="invite:nina@example.com", action="accept_invite").exists()
    # Once used, the link is dead, for reading and for posting.
    for again in (open_link(Client(), link), set_password(Client(), link, "another one 5678")):
        assert again.status_code == 410 and "already used" in again.content.decode()
    nina.refresh_from_db()
    assert nina.check_password("a long enough secret 42")


def test_expired_and_forged_links_get_a_clear_page():
    make_pool(name="team")
    link = invite("--email", "old@example.com", "--pool", "team")
    OperatorInvite.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = set_password(Client(), link)
    assert expired.status_code == 410 and "expired" in expired.content.decode()
    for forged in ("nope", "x" * 500, "\x00", "%00", "..", "a" * 43, "", "#", " "):
        page = Client().post("/admin/invite/", {"token": forged})
        assert page.status_code == 404 and "not valid" in page.content.decode(), forged
    assert not get_user_model().objects.get(username="old@example.com").has_usable_password()


def test_owner_invites_and_a_new_link_replaces_the_old_one():
    first = invite("--email", "boss@example.com", "--owner")
    second = invite("--email", "boss@example.com", "--owner")
    boss = get_user_model().objects.get(username="boss@example.com")
    assert boss.is_superuser and boss.is_staff
    assert set_password(Client(), first).status_code == 410
    assert set_password(Client(), second).status_code == 200


def test_the_whole_link_pasted_into_the_page_opens_it_too():
    make_pool(name="team")
    link = invite("--email", "paste@example.com", "--pool", "team")
    page = Client().post("/admin/invite/", {"token": f"  {link}\n"})
    assert page.status_code == 200 and "paste@example.com" in page.content.decode()


def test_the_command_refuses_unclear_invites():
    make_pool(name="team")
    for args, message in (
        (["--email", "x@example.com"], "--pool NAME"),
        (["--email", "x@example.com", "--pool", "ghost"], "no pool named 'ghost'"),
        (["--email", "not-an-email", "--pool", "team"], "email address"),
    ):
        with pytest.raises(CommandError, match=message):
            call_command("invite_operator", *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert not OperatorInvite.objects.exists()


def test_an_owner_invites_from_the_admin_and_sees_the_link_once(admin_client):
    pool = make_pool(name="team")
    add = reverse("admin:accounts_operatorinvite_add")
    page = admin_client.post(add, {"email": "ivy@example.com", "pools": [pool.pk]})
    assert page.status_code == 200
    link = re.search(r'<code id="issued-secret">([^<]+)</code>', page.content.decode()).group(1)
    assert link.startswith("http://testserver/admin/invite/#")
    assert link not in admin_client.get(reverse("admin:accounts_operatorinvite_changelist")).content.decode()
    assert set_password(Client(), link).status_code == 200
    ivy = get_user_model().objects.get(username="ivy@example.com")
    assert list(Pool.objects.filter(operators=ivy)) == [pool]
    assert AuditLog.objects.filter(actor="admin:admin", action="invite_operator").exists()
    refused = admin_client.post(add, {"email": "x@example.com"})
    assert "Choose the pools" in refused.content.decode()


def test_pool_operators_cannot_invite(admin_client):
    from accounts import operators

    olga = get_user_model().objects.create_user("olga")
    operators.grant(olga, [make_pool()], "cli")
    client = Client()
    client.force_login(olga)
    assert client.get(reverse("admin:accounts_operatorinvite_add")).status_code == 403


@needs_chromium
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_invitee_sets_a_password_in_the_browser_once(pooler):
    make_pool(name="team")
    link = invite("--email", "nina@example.com", "--pool", "team", "--url", pooler.url)
    password = "a long enough secret 42"
    with browser_page() as visitor:
        page = visitor.page
        page.goto(link)
        assert page.inner_text("#invitee") == "nina@example.com"
        # The page posted the token and took it out of the address bar (and the history).
        assert page.url == f"{pooler.url}/admin/invite/"
        page.fill("#id_new_password1", password)
        page.fill("#id_new_password2", password)
        page.screenshot(path=str(ARTIFACTS / "invite-set-password.png"), full_page=True)
        page.click("#invite-form input[type=submit]")
        assert "Your password is set" in page.inner_text("#invite-done")
        # The same link again, as a second visitor or a reload would open it: dead.
        page.goto(link)
        assert "already used" in page.inner_text("#invite-dead") and page.locator("#invite-form").count() == 0
        page.screenshot(path=str(ARTIFACTS / "invite-used.png"), full_page=True)
        # Pasted into the page (as without script): the same answer.
        page.goto(f"{pooler.url}/admin/invite/")
        page.fill("#id_token", link)
        page.click("#invite-open input[type=submit]")
        assert "already used" in page.inner_text("#invite-dead")
    # The used page answers 410 (the browser logs it as well): nothing else went wrong.
    assert visitor.problems.count(f"410 {pooler.url}/admin/invite/") == 2 and visitor.foreign == []
    assert [problem for problem in visitor.problems if "410" not in problem] == []
    assert token_of(link) not in pooler.log()
    with operator_page(f"{pooler.url}/admin/dashboard/", "nina@example.com", password) as nina:
        assert nina.page.locator("text=Pool team").count() == 1
    assert nina.problems == []
