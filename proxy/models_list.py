"""The model list of a pool: the union of its accounts' lists, filtered by pool and key, cached briefly."""

import asyncio

import httpx
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from accounts.models import PoolApiKey, PoolMembership, UpstreamAccount

from .dbthread import on_db_thread
from .errors import UpstreamUnavailable
from .turns import fresh_account
from .upstream import UpstreamFailure, client, upstream_headers

# Models follow the plan (and what an operator set for the account): one account of each kind is asked,
# so a pool of many accounts costs a few calls per cache period, not one per account.
_KINDS_ASKED = 10


def _accounts_to_ask(pool_id: int) -> list[UpstreamAccount]:
    """One serving account of each plan type and model list in the pool."""
    now = timezone.now()
    members = PoolMembership.objects.filter(pool_id=pool_id, enabled=True).select_related("account")
    chosen: dict[tuple, UpstreamAccount] = {}
    for account in (m.account for m in members):
        serving = account.status == "active" and not (account.cooldown_until and account.cooldown_until > now)
        kind = (account.plan_type, tuple(sorted(account.model_slugs or [])))
        if serving and kind not in chosen:
            chosen[kind] = account
    return list(chosen.values())[:_KINDS_ASKED]


async def _account_models(account: UpstreamAccount, client_version: str, headers) -> list[dict]:
    try:
        account = await fresh_account(account)
        params = {"client_version": client_version} if client_version else None
        response = await client().get(
            account.upstream_base_url + "/models", params=params, headers=upstream_headers(headers, account), timeout=15
        )
    except (httpx.HTTPError, UpstreamFailure):
        return []
    if response.status_code != 200:
        return []
    try:
        models = response.json().get("models", [])
    except ValueError:
        return []
    return [m for m in models if isinstance(m, dict) and isinstance(m.get("slug"), str)]


async def pool_models(key: PoolApiKey, client_version: str, headers) -> list[dict]:
    cache_key = f"pool-models:{key.pool_id}:{client_version}"
    merged = cache.get(cache_key)
    if merged is None:
        accounts = await on_db_thread(_accounts_to_ask)(key.pool_id)
        lists = await asyncio.gather(*(_account_models(a, client_version, headers) for a in accounts))
        if accounts and not any(lists):
            raise UpstreamUnavailable("No account of this pool could list its models.")
        merged, seen = [], set()
        for listing in lists:
            for model in listing:
                if model["slug"] not in seen:
                    seen.add(model["slug"])
                    merged.append(model)
        cache.set(cache_key, merged, settings.POOLER_MODELS_CACHE_SECONDS)
    return [m for m in merged if key.allows_model(m["slug"])]
