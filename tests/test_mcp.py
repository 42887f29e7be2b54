"""The operator MCP endpoint with the mcp SDK's own streamable HTTP client against real Daphne."""

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
import httpx2
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from accounts.models import AuditLog, PoolApiKey, RequestLog, UpstreamAccount
from tests.factories import make_account, make_key, make_mcp_token, make_pool

pytestmark = pytest.mark.django_db(transaction=True)

READ_TOOLS = {
    "list_pools",
    "pool_status",
    "list_accounts",
    "get_account",
    "list_api_keys",
    "query_requests",
    "usage_summary",
    "recent_audit_events",
}
WRITE_TOOLS = {"pause_account", "resume_account", "revoke_api_key"}
# The life of a key (pause, resume, rotate) has its own story: tests/test_key_life.py.
KEY_LIFE_TOOLS = {"pause_api_key", "resume_api_key", "rotate_api_key"}


def wait_for(condition, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@asynccontextmanager
async def mcp_session(url: str, token: str):
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


@pytest.fixture
def seeded():
    ops = get_user_model().objects.create_user("ops", is_superuser=True)  # an owner: every pool
    pool = make_pool(name="team")
    now = timezone.now()
    busy = make_account(pool, label="busy", primary_used_percent=91.0, primary_resets_at=now + timedelta(hours=1))
    make_account(
        pool,
        label="sick",
        cooldown_until=now + timedelta(minutes=5),
        cooldown_reason="status 503",
        last_error="status 503",
        consecutive_failures=2,
    )
    key, raw_key = make_key(pool, name="laptop", rpm=60)
    for i, status in enumerate([200, 200, 429]):
        RequestLog.objects.create(
            request_id=f"r{i}",
            pool=pool,
            api_key=key,
            account=busy,
            route="codex.responses",
            model="gpt-5.2",
            status_code=status,
            outcome="ok" if status == 200 else "rejected",
            total_tokens=100 * (i + 1),
            input_tokens=80,
            output_tokens=20,
        )
    AuditLog.objects.create(actor="cli", action="create_pool", object_type="pool", object_repr="team")
    _, reader = make_mcp_token(ops)
    _, writer = make_mcp_token(ops, can_write=True)
    return {"pool": pool, "busy": busy, "key": key, "raw_key": raw_key, "reader": reader, "writer": writer}


def text_json(result):
    """What a client that reads only the text content gets: the summary line, then the tool's JSON."""
    summary, _, data = result.content[0].text.partition("\n")
    assert summary and len(result.content) == 1
    return json.loads(data)


def call_all(url: str, token: str, calls: list[tuple[str, dict]]) -> list:
    async def run():
        async with mcp_session(url, token) as session:
            tools = {t.name for t in (await session.list_tools()).tools}
            return tools, [await session.call_tool(name, args) for name, args in calls]

    return asyncio.run(run())


def test_read_tools_answer_with_structured_metadata(pooler, seeded):
    url = f"{pooler.url}/mcp"
    calls = [
        ("list_pools", {}),
        ("pool_status", {"pool": "team"}),
        ("list_accounts", {"pool": "team"}),
        ("get_account", {"account": "busy"}),
        ("list_api_keys", {}),
        ("query_requests", {"pool": "team", "status_code": 429}),
        ("query_requests", {"limit": 2}),
        ("usage_summary", {"group_by": "model"}),
        ("usage_summary", {"group_by": "hour"}),
        ("recent_audit_events", {"limit": 5}),
    ]
    tools, results = call_all(url, seeded["reader"], calls)
    assert tools == READ_TOOLS | WRITE_TOOLS | KEY_LIFE_TOOLS
    assert not any(r.is_error for r in results), [r.content for r in results if r.is_error]
    by_name = dict(zip([c[0] for c in calls[:5]], results[:5], strict=True))
    assert by_name["list_pools"].structured_content["items"][0]["eligible_accounts"] == 1
    status = by_name["pool_status"].structured_content
    assert status["eligible_accounts"] == 1 and status["unavailable"][0]["label"] == "sick" and status["soonest_reset"]
    assert by_name["get_account"].structured_content["quota"]["primary_used_percent"] == 91.0
    assert by_name["list_api_keys"].structured_content["items"][0]["prefix"] == seeded["key"].prefix
    assert (
        results[5].structured_content["total"] == 1
        and results[5].structured_content["requests"][0]["status_code"] == 429
    )
    assert results[6].structured_content["next_offset"] == 2
    assert results[7].structured_content["groups"] == [
        {
            "group": "gpt-5.2",
            "requests": 3,
            "input_tokens": 240,
            "cached_tokens": 0,
            "output_tokens": 60,
            "total_tokens": 600,
            "errors": 1,
            "compactions": 0,
            "moves": 0,
            "context_lost": 0,
            "unpriced_requests": 3,  # rows written here, not by a turn: no cost was set
            "cost_usd": None,
            "cache_hit_rate": 0.0,
        }
    ]
    assert results[9].structured_content["items"][0]["action"] == "create_pool"
    assert {name for name, _ in calls} == READ_TOOLS
    # Clients that read only text content (most of them) get the same JSON, after a one-line summary.
    for result in results:
        assert text_json(result) == result.structured_content
    assert text_json(by_name["get_account"])["quota"]["primary_used_percent"] == 91.0


def test_bad_inputs_are_clear_tool_errors(pooler, seeded):
    _, results = call_all(
        f"{pooler.url}/mcp",
        seeded["reader"],
        [
            ("pool_status", {"pool": "nope"}),
            ("query_requests", {"since": "yesterday"}),
            ("query_requests", {"limit": 0}),
            ("get_account", {"account": "ghost"}),
        ],
    )
    assert all(r.is_error for r in results)
    texts = [r.content[0].text for r in results]
    assert "no pool named 'nope'" in texts[0] and "ISO 8601" in texts[1] and "limit" in texts[2]
    assert "ghost" in texts[3]


def test_write_tools_need_the_write_scope_and_are_audited(pooler, seeded):
    url = f"{pooler.url}/mcp"
    UpstreamAccount.objects.filter(label="sick").update(status="paused")
    writes = [
        ("pause_account", {"account": "busy"}),
        ("resume_account", {"account": "sick"}),
        ("revoke_api_key", {"prefix": seeded["key"].prefix}),
    ]
    assert {name for name, _ in writes} == WRITE_TOOLS
    _, refused = call_all(url, seeded["reader"], writes)
    assert all(r.is_error and "read-only" in r.content[0].text for r in refused)
    assert UpstreamAccount.objects.get(label="busy").status == "active"
    assert UpstreamAccount.objects.get(label="sick").status == "paused"
    assert PoolApiKey.objects.get(pk=seeded["key"].pk).revoked_at is None
    assert not AuditLog.objects.filter(actor__startswith="mcp:").exists()
    UpstreamAccount.objects.filter(label="sick").update(status="active")
    _, results = call_all(
        url,
        seeded["writer"],
        [
            ("pause_account", {"account": "busy"}),
            ("resume_account", {"account": "busy"}),
            ("pause_account", {"account": "busy"}),
            ("revoke_api_key", {"prefix": seeded["key"].prefix}),
        ],
    )
    assert not any(r.is_error for r in results)
    assert [text_json(r)["status"] for r in results[:3]] == ["paused", "active", "paused"]
    assert text_json(results[3])["prefix"] == seeded["key"].prefix
    assert UpstreamAccount.objects.get(label="busy").status == "paused"
    assert PoolApiKey.objects.get(pk=seeded["key"].pk).revoked_at is not None
    actions = list(AuditLog.objects.filter(actor="mcp:ops").values_list("action", flat=True))
    assert sorted(actions) == ["pause_account", "pause_account", "resume_account", "revoke_api_key"]


def test_only_live_mcp_tokens_pass_the_gate(pooler, seeded):
    from accounts.models import McpToken

    ops = get_user_model().objects.get(username="ops")
    _, expired_raw = make_mcp_token(ops, expires_at=timezone.now() - timedelta(seconds=1))
    _, revoked_raw = make_mcp_token(ops, revoked_at=timezone.now())
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    for path in ["/mcp", "/mcp/"]:
        for token in ["x", "wrong", seeded["raw_key"], expired_raw, revoked_raw]:
            response = httpx.post(
                f"{pooler.url}{path}",
                json=init,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"},
            )
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_mcp_token"
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert McpToken.objects.count() == 4
    # A deactivated operator is out at once, with every token they had, read or write.
    get_user_model().objects.filter(username="ops").update(is_active=False)
    for token in [seeded["reader"], seeded["writer"]]:
        response = httpx.post(
            f"{pooler.url}/mcp",
            json=init,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"},
        )
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_mcp_token"
    # And the other way round: an MCP token is no Pool API key.
    response = httpx.post(
        f"{pooler.codex_base_url}/responses",
        json={"model": "gpt-5.2", "input": []},
        headers={"Authorization": f"Bearer {seeded['writer']}"},
    )
    assert response.status_code == 401


def test_no_tool_output_carries_a_secret_or_a_prompt(pooler, simulator, seeded):
    from accounts.models import McpToken

    # A real turn first, so the logs the tools read hold a row whose prompt must not come back.
    marker = f"MARKER-{uuid.uuid4().hex}"
    live_pool = make_pool(name="live")
    make_account(live_pool, simulator, label="live")
    live_key, live_raw = make_key(live_pool, name="ci")
    reply = httpx.post(
        f"{pooler.url}/v1/chat/completions",
        json={"model": "gpt-5.2", "messages": [{"role": "user", "content": marker}]},
        headers={"Authorization": f"Bearer {live_raw}"},
        timeout=30,
    )
    assert marker in reply.json()["choices"][0]["message"]["content"]
    wait_for(lambda: RequestLog.objects.filter(api_key=live_key).exists())
    make_account(seeded["pool"], label="expired", status="reauth_required")

    reads = [(name, {}) for name in ["list_pools", "list_accounts", "list_api_keys", "query_requests"]]
    reads += [("usage_summary", {"group_by": group}) for group in ["key", "account", "model", "hour", "day"]]
    reads += [
        ("recent_audit_events", {}),
        ("pool_status", {"pool": "live"}),
        ("get_account", {"account": "live"}),
        ("query_requests", {"pool": "live", "model": "gpt-5.2"}),
    ]
    writes = [
        ("pause_account", {"account": "live"}),
        ("resume_account", {"account": "live"}),
        ("revoke_api_key", {"prefix": live_key.prefix}),
    ]
    errors = [
        ("pool_status", {"pool": "nope"}),
        ("get_account", {"account": "ghost"}),
        ("query_requests", {"since": "yesterday"}),
        ("resume_account", {"account": "expired"}),
        ("revoke_api_key", {"prefix": "cpk_nothing"}),
    ]
    _, read_results = call_all(f"{pooler.url}/mcp", seeded["reader"], reads + writes)
    _, write_results = call_all(f"{pooler.url}/mcp", seeded["writer"], writes + errors + [("recent_audit_events", {})])
    results = read_results + write_results
    assert not any(r.is_error for r in read_results[: len(reads)])
    assert all(r.is_error for r in read_results[len(reads) :])  # the writes, refused to a reader
    assert not any(r.is_error for r in write_results[: len(writes)])
    assert all(r.is_error for r in write_results[len(writes) : -1])
    assert any(r["request_id"] for r in read_results[3].structured_content["requests"])  # the turn is listed

    secrets = [marker, seeded["raw_key"], live_raw, seeded["reader"], seeded["writer"]]
    for account in UpstreamAccount.objects.all():
        secrets += [account.access_token, account.refresh_token, account.id_token]
    secrets += [key.secret_hash for key in PoolApiKey.objects.all()]
    secrets += [token.secret_hash for token in McpToken.objects.all()]
    dumped = json.dumps([r.model_dump(mode="json") for r in results])
    for secret in filter(None, secrets):
        assert secret not in dumped


def test_resume_only_resumes_a_paused_account(pooler, seeded):
    pool = seeded["pool"]
    make_account(pool, label="expired", status="reauth_required")
    make_account(pool, label="off", status="disabled")
    _, results = call_all(
        f"{pooler.url}/mcp",
        seeded["writer"],
        [
            ("resume_account", {"account": "expired"}),
            ("resume_account", {"account": "off"}),
            ("pause_account", {"account": "expired"}),  # else a resume could follow
        ],
    )
    assert all(r.is_error for r in results)
    texts = [r.content[0].text for r in results]
    assert "expired is reauth_required" in texts[0] and "login_account" in texts[0]
    assert "off is disabled" in texts[1] and "cannot be resumed" in texts[1]
    assert "cannot be paused" in texts[2]
    assert UpstreamAccount.objects.get(label="expired").status == "reauth_required"
    assert UpstreamAccount.objects.get(label="off").status == "disabled"
    assert not AuditLog.objects.filter(actor="mcp:ops").exists()


def test_a_session_manager_that_cannot_start_answers_503(seeded):
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from mcp_endpoint.app import McpApp
    from mcp_endpoint.server import server

    async def run():
        # The SDK runs a session manager only once: a second start fails as a broken start would.
        manager = StreamableHTTPSessionManager(app=server._lowlevel_server, stateless=True, json_response=True)
        async with manager.run():
            pass
        app, sent = McpApp(session_manager=manager), []

        async def receive():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/mcp",
            "headers": [(b"authorization", f"Bearer {seeded['reader']}".encode())],
        }
        for _ in range(2):  # the first request found the failure, the next hears it at once
            await asyncio.wait_for(app(scope, receive, send), 15)
        return [
            (start["status"], json.loads(body["body"])["error"])
            for start, body in zip(sent[::2], sent[1::2], strict=True)
        ]

    for status, error in asyncio.run(run()):
        assert status == 503 and error["code"] == "mcp_unavailable" and error["type"] == "server_error"


def test_a_large_call_under_the_pooler_cap_is_served(pooler, seeded):
    # Past the SDK's own 4 MB default, yet under POOLER_MAX_BODY_BYTES: the pooler's cap is the one that holds.
    call = {"jsonrpc": "2.0", "id": "x" * (5 * 1024 * 1024), "method": "tools/list", "params": {}}
    response = httpx.post(
        f"{pooler.url}/mcp",
        json=call,
        headers={"Authorization": f"Bearer {seeded['reader']}", "Accept": "application/json, text/event-stream"},
        timeout=30,
    )
    assert response.status_code == 200, response.text[:300]
    assert {tool["name"] for tool in response.json()["result"]["tools"]} == READ_TOOLS | WRITE_TOOLS | KEY_LIFE_TOOLS
