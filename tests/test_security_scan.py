"""After real traffic, no secret and no prompt text is anywhere an operator or attacker could read it."""

import io
import json
import re
import uuid

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from websockets.sync.client import connect

from accounts import secrets
from accounts.models import PoolApiKey
from tests.codex_turns import session_headers, turn_body
from tests.factories import make_account, make_key, make_mcp_token, make_pool
from tests.test_secrets_at_rest import all_stored_text

pytestmark = pytest.mark.django_db(transaction=True)


def test_no_secret_or_prompt_leaks_after_a_run(pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator)
    _, key = make_key(pool)
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-the-scan")
    _, mcp_token = make_mcp_token(admin, can_write=True)
    prompt = f"PROMPT-MARKER-{uuid.uuid4().hex}"
    seen = []  # everything a client or operator can read

    for body in [turn_body(prompt), {**turn_body(prompt), "model": "not-a-served-model"}]:
        response = httpx.post(f"{pooler.codex_base_url}/responses", json=body, headers=session_headers(key), timeout=30)
        seen.append(json.dumps(dict(response.headers)))
    for bad in ["{" + prompt, json.dumps({"input": prompt})]:
        seen.append(httpx.post(f"{pooler.codex_base_url}/responses", content=bad, headers=session_headers(key)).text)
    seen.append(
        httpx.post(
            f"{pooler.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-5.2", "messages": [{"role": "user", "content": prompt}], "n": 3},
        ).text
    )
    seen.append(
        httpx.post(
            f"{pooler.codex_base_url}/responses", json=turn_body(prompt), headers=session_headers(mcp_token)
        ).text
    )  # an MCP token is not a pool key
    with connect(
        pooler.codex_base_url.replace("http://", "ws://") + "/responses",
        additional_headers={"Authorization": f"Bearer {key}"},
    ) as ws:
        ws.send(json.dumps({"type": "response.create", **turn_body(prompt)}))
        while json.loads(ws.recv(timeout=20))["type"] != "response.completed":
            pass
    seen.append(httpx.get(f"{pooler.url}/metrics").text)

    client = Client()
    client.force_login(admin)
    for url in [
        "/admin/dashboard/",
        "/admin/accounts/requestlog/",
        "/admin/accounts/auditlog/",
        f"/admin/accounts/upstreamaccount/{account.pk}/change/",
        "/admin/accounts/poolapikey/",
        "/admin/accounts/sessionaffinity/",
        "/admin/accounts/mcptoken/",
        "/admin/accounts/operatorinvite/",
    ]:
        seen.append(client.get(url).content.decode())
    # An invite's link is shown once, to the owner who made it; its token is nowhere else.
    invite = client.post("/admin/accounts/operatorinvite/add/", {"email": "new@example.com", "owner": "on"})
    invite_token = invite.content.decode().split("/admin/invite/#")[1].split("<")[0]
    seen.append(client.get("/admin/accounts/operatorinvite/").content.decode())

    account.refresh_from_db()
    haystack = "\n".join(seen) + all_stored_text() + pooler.log()
    secrets_ = [key, mcp_token, account.access_token, account.refresh_token, account.id_token, prompt, invite_token]
    for secret in secrets_:
        assert secret not in haystack


def _form_post(client: httpx.Client, path: str, data: dict) -> httpx.Response:
    """A form posted as a browser posts it: with the CSRF token of the page it is on."""
    page = client.get(path)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return client.post(path, data={**data, "csrfmiddlewaretoken": csrf})


def test_invite_links_and_recovery_codes_stay_out_of_the_server_log(pooler):
    """Daphne logs every request's path: an invite's token (in the link's fragment, which no client sends) and
    the recovery codes shown at enrolment travel in bodies only, so neither is in the log nor stored in clear."""
    out = io.StringIO()
    call_command(
        "invite_operator",
        "--email",
        "ivy@example.com",
        "--owner",
        "--url",
        pooler.url,
        stdout=out,
        stderr=io.StringIO(),
    )
    link = out.getvalue().split()[-1]
    token = link.split("#", 1)[1]
    password = "ivy's long password 42"
    with httpx.Client(base_url=pooler.url, timeout=30) as browser:
        assert browser.get(link).status_code == 200  # the page, whose script posts the fragment
        opened = _form_post(browser, "/admin/invite/", {"token": token})
        assert opened.status_code == 200 and "ivy@example.com" in opened.text
        fields = {"token": token, "new_password1": password, "new_password2": password}
        assert "Your password is set" in _form_post(browser, "/admin/invite/", fields).text
        assert _form_post(browser, "/admin/invite/", {"token": token}).status_code == 410
        assert _form_post(browser, "/admin/invite/", {"token": token[:-1]}).status_code == 404

        # Ivy, now an owner, enrols an authenticator and is shown her recovery codes.
        login = {"username": "ivy@example.com", "password": password, "next": "/admin/"}
        assert _form_post(browser, "/admin/login/", login).status_code == 302
        assert "<svg" in browser.get("/admin/2fa/").text
        device = TOTPDevice.objects.get(user__username="ivy@example.com", confirmed=False)
        enrolled = _form_post(browser, "/admin/2fa/", {"code": f"{totp(device.bin_key):06d}"})
        codes = re.findall(r"<li><code>(\w+)</code></li>", enrolled.text)
        assert len(codes) == 10
    with httpx.Client(base_url=pooler.url, timeout=30) as later:
        assert _form_post(later, "/admin/login/", {**login, "otp_token": codes[0]}).status_code == 302
        assert later.get("/admin/").status_code == 200

    log = pooler.log()
    assert "/admin/invite/" in log and "/admin/2fa/" in log  # the log is the one these requests went to
    assert token not in log and token not in all_stored_text()
    for code in codes:
        assert code not in log


def test_key_comparison_needs_the_whole_secret():
    pool = make_pool()
    key, raw = make_key(pool)
    tampered = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    assert secrets.prefix_of(tampered) == key.prefix  # same lookup row …
    assert PoolApiKey.lookup(tampered) is None  # … but the constant-time hash compare refuses it
    assert PoolApiKey.lookup(raw) == key


def test_operator_and_runtime_surfaces_are_not_public(pooler):
    assert httpx.get(f"{pooler.url}/admin/").status_code == 302
    assert httpx.get(f"{pooler.url}/admin/dashboard/").status_code == 302
    assert httpx.post(f"{pooler.url}/mcp", json={}).status_code == 401
    assert httpx.post(f"{pooler.codex_base_url}/responses", json={}).status_code == 401
    assert httpx.get(f"{pooler.url}/v1/models").status_code == 401
    # /metrics answers loopback (the default allow-list) and nobody else without the token: see test_metrics.
