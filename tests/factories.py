"""Real rows in a line: pools, accounts (registered at the simulator too), keys, tokens."""

import json
import uuid

from accounts.models import McpToken, Pool, PoolApiKey, PoolMembership, UpstreamAccount
from accounts.sample_auth import sample_auth_json

make_auth_json = sample_auth_json


def write_auth_json(path, **kwargs) -> dict:
    data = make_auth_json(**kwargs)
    path.write_text(json.dumps(data))
    return data


def make_pool(name: str | None = None, **fields) -> Pool:
    return Pool.objects.create(name=name or f"pool-{uuid.uuid4().hex[:8]}", **fields)


def make_account(
    pool: Pool | None = None,
    simulator=None,
    *,
    sim_fields: dict | None = None,
    membership: dict | None = None,
    **fields,
) -> UpstreamAccount:
    """An account with real-shaped tokens; registered at `simulator` when given (same tokens)."""
    data = make_auth_json()["tokens"]
    account_id = data["account_id"]
    if simulator is not None:
        simulator.add_account(
            account_id=account_id,
            access_token=data["access_token"],
            refresh_token=data["refresh_token"],
            **(sim_fields or {}),
        )
        fields.setdefault("base_url", simulator.codex_base_url)
    account = UpstreamAccount.objects.create(
        label=fields.pop("label", account_id),
        chatgpt_account_id=account_id,
        access_token=data["access_token"],
        refresh_token=data["refresh_token"],
        id_token=data["id_token"],
        token_expires_at=fields.pop("token_expires_at", None) or _exp(data["access_token"]),
        **fields,
    )
    if pool is not None:
        PoolMembership.objects.create(pool=pool, account=account, **(membership or {}))
    return account


def _exp(token: str):
    from accounts.jwt_claims import expiry

    return expiry(token)


def make_key(pool: Pool, **fields) -> tuple[PoolApiKey, str]:
    key = PoolApiKey(pool=pool, **fields)
    raw = key.issue()
    key.save()
    return key, raw


def make_mcp_token(user, can_write: bool = False, **fields) -> tuple[McpToken, str]:
    token = McpToken(user=user, can_write=can_write, **fields)
    raw = token.issue()
    token.save()
    return token, raw
