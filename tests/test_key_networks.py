"""A Pool API key limited to some networks: refused from elsewhere on every route and both transports, with a
RequestLog row saying why; the caller's address believes X-Forwarded-For only from POOLER_TRUSTED_PROXIES."""

import io

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from accounts.models import AuditLog, PoolApiKey, RequestLog
from accounts.networks import client_address
from accounts.secrets import prefix_of
from tests.codex_turns import session_headers, turn_body
from tests.factories import make_account, make_key, make_pool
from tests.support.pooler import PoolerServer
from tests.test_admin_pages import change_page_data
from tests.test_websocket_route import create_frame, logs, read_turn, ws_headers, ws_url

pytestmark = pytest.mark.django_db(transaction=True)


def codex_turn(server, key: str, **headers) -> httpx.Response:
    return httpx.post(
        f"{server.codex_base_url}/responses",
        json=turn_body(),
        headers={**session_headers(key), **headers},
        timeout=30,
    )


def v1_chat(server, key: str, **headers) -> httpx.Response:
    body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}", **headers}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def v1_models(server, key: str, **headers) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {key}", **headers}, timeout=30)


def refusals(key: PoolApiKey) -> list[tuple[str, str, int]]:
    rows = RequestLog.objects.filter(api_key=key, error_code="ip_not_allowed").order_by("created_at")
    return [(row.route, row.transport, row.status_code) for row in rows]


def test_a_key_for_another_network_is_refused_on_every_route(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    key, raw = make_key(pool, allowed_networks=["10.0.0.0/8", "2001:db8::/32"])
    # A forged X-Forwarded-For from a peer that is no trusted proxy changes nothing.
    for ask in (codex_turn, v1_chat, v1_models):
        for headers in ({}, {"X-Forwarded-For": "10.1.2.3"}):
            response = ask(pooler, raw, **headers)
            assert response.status_code == 403, response.text
            error = response.json()["error"]
            assert error["code"] == "ip_not_allowed" and error["type"] == "permission_error"
            assert "127.0.0.1" in error["message"]
    with pytest.raises(InvalidStatus) as refused, connect(ws_url(pooler), additional_headers=ws_headers(raw)):
        pass
    assert refused.value.response.status_code == 403
    assert refusals(key) == [
        ("codex.responses", "http", 403),
        ("codex.responses", "http", 403),
        ("v1.chat.completions", "http", 403),
        ("v1.chat.completions", "http", 403),
        ("v1.models", "http", 403),
        ("v1.models", "http", 403),
        ("codex.responses", "websocket", 403),
    ]
    assert set(RequestLog.objects.filter(api_key=key).values_list("client_ip", flat=True)) == {"127.0.0.1"}


def test_a_key_for_the_callers_network_is_served(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    key, raw = make_key(pool, allowed_networks=["127.0.0.0/8"])
    assert codex_turn(pooler, raw).status_code == 200
    assert v1_chat(pooler, raw).status_code == 200
    assert v1_models(pooler, raw).status_code == 200
    with connect(ws_url(pooler), additional_headers=ws_headers(raw)) as ws:
        ws.send(create_frame())
        assert read_turn(ws)[-1]["type"] == "response.completed"
    assert refusals(key) == []


@pytest.fixture(scope="module")
def behind_proxy(django_db_setup, django_db_blocker, simulator):
    """The pooler behind a proxy on loopback, which it trusts."""
    server = PoolerServer(extra_env={"POOLER_TRUSTED_PROXIES": "127.0.0.0/8,192.168.7.0/24"})
    yield server
    server.close()


def test_behind_a_trusted_proxy_the_forwarded_address_counts(behind_proxy, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    key, raw = make_key(pool, allowed_networks=["10.0.0.0/8"])
    # The proxy appends what it saw to what the client sent: the right-most untrusted entry is the caller.
    assert codex_turn(behind_proxy, raw, **{"X-Forwarded-For": "10.1.2.3"}).status_code == 200
    assert v1_models(behind_proxy, raw, **{"X-Forwarded-For": "10.9.9.9, 192.168.7.4"}).status_code == 200
    forged = v1_chat(behind_proxy, raw, **{"X-Forwarded-For": "10.1.2.3, 203.0.113.9"})
    assert forged.status_code == 403 and "203.0.113.9" in forged.json()["error"]["message"]
    headers = {**ws_headers(raw), "X-Forwarded-For": "10.4.4.4"}
    with connect(ws_url(behind_proxy), additional_headers=headers) as ws:
        ws.send(create_frame())
        assert read_turn(ws)[-1]["type"] == "response.completed"
    rows = logs(3, api_key=key)
    assert [row.client_ip for row in rows] == ["10.1.2.3", "203.0.113.9", "10.4.4.4"]


@pytest.mark.parametrize(
    "trusted, peer, forwarded, caller",
    [
        ([], "127.0.0.1", "10.0.0.1", "127.0.0.1"),
        (["127.0.0.1/32"], "127.0.0.1", "", "127.0.0.1"),
        (["127.0.0.1/32"], "127.0.0.1", "10.0.0.1", "10.0.0.1"),
        (["127.0.0.1/32"], "127.0.0.1", "10.0.0.1, 127.0.0.1", "10.0.0.1"),
        (["127.0.0.1/32", "10.0.0.0/8"], "127.0.0.1", "198.51.100.7, 10.0.0.1", "198.51.100.7"),
        (["127.0.0.1/32"], "127.0.0.1", "spoofed, 2001:db8::1", "2001:db8::1"),
        (["127.0.0.1/32"], "127.0.0.1", "garbage", "127.0.0.1"),
        (["::1/128"], "::1", "192.0.2.1", "192.0.2.1"),
        (["10.0.0.0/8"], "::ffff:10.0.0.5", "192.0.2.1", "192.0.2.1"),
    ],
)
def test_the_callers_address(settings, trusted, peer, forwarded, caller):
    settings.POOLER_TRUSTED_PROXIES = trusted
    assert client_address(peer, forwarded) == caller


def test_create_api_key_takes_allowed_networks():
    make_pool(name="nets")
    out = io.StringIO()
    args = ["--pool", "nets", "--allow-ip", "10.1.2.3/8", "--allow-ip", "2001:db8::/32", "--allow-ip", "192.0.2.1"]
    call_command("create_api_key", *args, stdout=out, stderr=io.StringIO())
    key = PoolApiKey.objects.get(prefix=prefix_of(out.getvalue().strip().splitlines()[-1]))
    assert key.allowed_networks == ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1/32"]
    with pytest.raises(CommandError, match="not a network"):
        call_command("create_api_key", "--pool", "nets", "--allow-ip", "10.0.0.0/33", stdout=io.StringIO())


def test_the_admin_edits_allowed_networks(admin_client):
    key, _ = make_key(make_pool())
    url = reverse("admin:accounts_poolapikey_change", args=[key.pk])
    data = change_page_data(admin_client.get(url))
    bad = admin_client.post(url, {**data, "allowed_networks": "10.0.0.0/8\nnot-a-network"})
    assert bad.status_code == 200 and "not-a-network" in bad.content.decode()
    assert admin_client.post(url, {**data, "allowed_networks": "10.0.0.0/8, fd00::/8"}).status_code == 302
    key.refresh_from_db()
    assert key.allowed_networks == ["10.0.0.0/8", "fd00::/8"]
    page = admin_client.get(url).content.decode()
    assert "10.0.0.0/8\nfd00::/8" in page
    audit = AuditLog.objects.get(object_type="poolapikey", action="change")
    assert audit.changes["allowed_networks"] == {"before": [], "after": ["10.0.0.0/8", "fd00::/8"]}
