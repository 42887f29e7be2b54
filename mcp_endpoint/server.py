"""The operator MCP server: read tools over pools, accounts, keys and logs; write tools for tokens that may."""

import json
from collections.abc import Callable
from typing import Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent

from accounts.models import AccountStatus
from proxy.auth import bearer_token
from proxy.dbthread import on_db_thread

from . import queries
from .tokens import live_token

server = MCPServer(
    name="codex-pooler",
    instructions="Read-only views of the Codex Pooler (pools, accounts, quota, keys, request and audit logs), "
    "plus pause/resume of accounts and pause/resume/rotation/revocation of keys for tokens with the write scope. "
    "Never returns secrets (but the new key of a rotation, once) or prompt text.",
)


def _result(data, summary: str) -> CallToolResult:
    """The data as structured content and, for clients that read only text (many do), as text: a one-line summary
    (names in it may hold line breaks, so they are flattened), then the same JSON on the lines after it."""
    structured = data if isinstance(data, dict) else {"items": data}
    text = " ".join(summary.splitlines()) + "\n" + json.dumps(structured, ensure_ascii=False, indent=1)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


async def _query(function: Callable, *args, **kwargs):
    try:
        return await on_db_thread(function)(*args, **kwargs)
    except queries.InvalidInput as error:
        raise ToolError(str(error)) from None


async def _writer(ctx: Context) -> str:
    """The actor name of a caller allowed to write, or a tool error for a read-only token."""
    token = await on_db_thread(live_token)(bearer_token(ctx.headers or {}))
    if token is None or not token.can_write:
        raise ToolError(
            "This MCP token is read-only; an operator can create one with "
            "`python manage.py create_mcp_token --user NAME --write`."
        )
    return f"mcp:{token.user.get_username()}"


@server.tool(description="The pools: strategy, accounts, how many can serve now, live keys.")
async def list_pools() -> CallToolResult:
    pools = await _query(queries.list_pools)
    return _result(
        pools,
        f"{len(pools)} pool(s): "
        + ", ".join(f"{p['name']} ({p['eligible_accounts']}/{p['accounts']} accounts can serve)" for p in pools),
    )


@server.tool(description="Capacity of one pool now: eligible accounts, soonest reset, quota headroom.")
async def pool_status(pool: str) -> CallToolResult:
    status = await _query(queries.pool_status, pool)
    return _result(
        status,
        f"pool {status['pool']}: {status['eligible_accounts']} of {status['accounts']} accounts "
        f"can serve; soonest reset {status['soonest_reset'] or 'none pending'}",
    )


@server.tool(description="Upstream accounts (optionally of one pool or status) with health and quota windows.")
async def list_accounts(
    pool: str | None = None, status: Literal["active", "paused", "reauth_required", "disabled"] | None = None
) -> CallToolResult:
    accounts = await _query(queries.list_accounts, pool, status)
    near = [
        a["label"]
        for a in accounts
        if max(a["quota"]["primary_used_percent"], a["quota"]["secondary_used_percent"]) >= 80
    ]
    return _result(accounts, f"{len(accounts)} account(s); near their limits: {', '.join(near) or 'none'}")


@server.tool(description="One account by label or ChatGPT account id: status, health, quota, cooldown, last error.")
async def get_account(account: str) -> CallToolResult:
    found = await _query(queries.get_account, account)
    return _result(
        found,
        f"{found['label']}: {found['status']}, "
        f"{'eligible' if found['eligible'] else 'not eligible: ' + str(found['why_not_eligible'])}",
    )


@server.tool(description="Pool API keys by prefix and name, with limits and current usage (never the key).")
async def list_api_keys(pool: str | None = None) -> CallToolResult:
    keys = await _query(queries.list_api_keys, pool)
    return _result(
        keys, f"{len(keys)} key(s): " + ", ".join(f"{k['prefix']}… {k['name'] or ''} ({k['state']})" for k in keys)
    )


@server.tool(description="Request log rows (metadata only), newest first, filtered and paginated with offset.")
async def query_requests(
    since: str | None = None,
    until: str | None = None,
    pool: str | None = None,
    key_prefix: str | None = None,
    account: str | None = None,
    model: str | None = None,
    status_code: int | None = None,
    outcome: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> CallToolResult:
    page = await _query(
        queries.query_requests, since, until, pool, key_prefix, account, model, status_code, outcome, limit, offset
    )
    failed = sum(1 for r in page["requests"] if r["status_code"] >= 400)
    return _result(page, f"{len(page['requests'])} of {page['total']} request(s), {failed} failed on this page")


@server.tool(
    description="Requests, tokens, API-equivalent cost (cost_usd at the list price in force when each turn ran; "
    "null when unpriced, with unpriced_requests counting turns whose model has no price), prompt cache hit rate "
    "(cached / input tokens), compactions and session moves, grouped by key, account, pool, model, hour, day or "
    "month (default: last 24 h); `sessions` tells how many sessions of the period touched more than one account."
)
async def usage_summary(
    group_by: Literal["key", "account", "pool", "model", "hour", "day", "month"] = "key",
    since: str | None = None,
    until: str | None = None,
    pool: str | None = None,
) -> CallToolResult:
    summary = await _query(queries.usage_summary, group_by, since, until, pool)
    total = sum(g["total_tokens"] for g in summary["groups"])
    cost = "no priced turn" if summary["cost_usd"] is None else f"${summary['cost_usd']:,.2f} at API prices"
    return _result(
        summary,
        f"{len(summary['groups'])} group(s) by {group_by}, {total} tokens in all, {cost}, "
        f"{summary['unpriced_requests']} unpriced request(s)",
    )


@server.tool(description="The latest audit log entries: who changed what, by admin, manage.py, MCP or the worker.")
async def recent_audit_events(limit: int = 50, actor: str | None = None, action: str | None = None) -> CallToolResult:
    events = await _query(queries.recent_audit_events, limit, actor, action)
    return _result(events, f"{len(events)} audit event(s)")


@server.tool(description="Pause an account: the router stops choosing it. Needs a token with the write scope.")
async def pause_account(account: str, ctx: Context) -> CallToolResult:
    actor = await _writer(ctx)
    found = await _query(queries.set_account_status, account, AccountStatus.PAUSED, actor)
    return _result(found, f"paused {found['label']}")


@server.tool(description="Resume a paused account. Needs a token with the write scope.")
async def resume_account(account: str, ctx: Context) -> CallToolResult:
    actor = await _writer(ctx)
    found = await _query(queries.set_account_status, account, AccountStatus.ACTIVE, actor)
    return _result(found, f"resumed {found['label']}")


@server.tool(description="Revoke a Pool API key by its prefix (e.g. cpk_1a2b3c4d). Needs the write scope.")
async def revoke_api_key(prefix: str, ctx: Context) -> CallToolResult:
    actor = await _writer(ctx)
    revoked = await _query(queries.revoke_api_key, prefix, actor)
    return _result(revoked, f"revoked {revoked['prefix']}… of pool {revoked['pool']}")


@server.tool(description="Pause a Pool API key by its prefix: its turns are refused (403 key_paused) until resumed.")
async def pause_api_key(prefix: str, ctx: Context) -> CallToolResult:
    actor = await _writer(ctx)
    key = await _query(queries.set_key_paused, prefix, True, actor)
    return _result(key, f"paused {key['prefix']}… of pool {key['pool']}")


@server.tool(description="Resume a paused Pool API key by its prefix. Needs the write scope.")
async def resume_api_key(prefix: str, ctx: Context) -> CallToolResult:
    actor = await _writer(ctx)
    key = await _query(queries.set_key_paused, prefix, False, actor)
    return _result(key, f"resumed {key['prefix']}… of pool {key['pool']}")


@server.tool(
    description="Rotate a Pool API key: a new secret on the same key (limits and history kept), returned once in "
    "`new_key`; the old secret keeps working for grace_seconds. Needs the write scope."
)
async def rotate_api_key(prefix: str, ctx: Context, grace_seconds: int = 0) -> CallToolResult:
    actor = await _writer(ctx)
    rotated = await _query(queries.rotate_api_key, prefix, grace_seconds, actor)
    return _result(rotated, f"rotated {rotated['prefix']}…; the new key is in new_key (shown once)")
