"""Bringing an upstream account in from the Codex CLI's auth.json or an OAuth token response."""

import json

from django.db import IntegrityError, transaction

from . import audit, jwt_claims
from .models import Pool, PoolMembership, UpstreamAccount


class ImportError_(ValueError):
    """The credentials cannot become an account; the message is fit for an operator."""


def parse_auth_json(text: str) -> dict:
    """The tokens of an auth.json file, checked: id, access and refresh tokens as JWT/strings."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportError_(f"auth.json is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, dict):
        raise ImportError_('auth.json has no "tokens" object (is this a ChatGPT login, not an API key?)')
    missing = [name for name in ("id_token", "access_token", "refresh_token") if not tokens.get(name)]
    if missing:
        raise ImportError_(f"auth.json tokens lack {', '.join(missing)}")
    if not all(isinstance(tokens[name], str) for name in ("id_token", "access_token", "refresh_token")):
        raise ImportError_("auth.json tokens must be strings")
    return tokens


def store_account(
    tokens: dict, pool: Pool, *, label: str = "", base_url: str = "", actor: str = "cli"
) -> UpstreamAccount:
    """Create or update the account these tokens belong to and add it to `pool`."""
    try:
        identity = jwt_claims.identity(tokens["id_token"])
    except ValueError as exc:
        raise ImportError_(f"unusable id_token: {exc}") from None
    try:
        expires_at = jwt_claims.expiry(tokens["access_token"])
    except ValueError as exc:
        raise ImportError_(f"unusable access_token: {exc}") from None
    account_id = tokens.get("account_id") or identity["chatgpt_account_id"]
    if not account_id or not isinstance(account_id, str):
        raise ImportError_("no ChatGPT account id in auth.json or the id token")
    with transaction.atomic():
        account = UpstreamAccount.objects.filter(chatgpt_account_id=account_id).first()
        created = account is None
        if created:
            account = UpstreamAccount(chatgpt_account_id=account_id)
        before = audit.snapshot(account) if not created else None
        account.label = label or account.label or _free_label(identity["email"] or account_id, account_id)
        account.email = identity["email"] or account.email
        account.plan_type = identity["plan_type"] or account.plan_type
        account.access_token = tokens["access_token"]
        account.refresh_token = tokens["refresh_token"]
        account.id_token = tokens["id_token"]
        account.token_expires_at = expires_at
        account.status = "active"
        account.consecutive_failures = 0
        if base_url:
            account.base_url = base_url
        try:
            account.save()
        except IntegrityError:  # an explicit label another account already has
            raise ImportError_(f"the label {account.label!r} is taken by another account; choose another") from None
        PoolMembership.objects.get_or_create(pool=pool, account=account)
        audit.record(
            actor, "import_account" if created else "reimport_account", account, before, audit.snapshot(account)
        )
    return account


def _free_label(wanted: str, account_id: str) -> str:
    """`wanted` (an email) unless another account has it, e.g. a second workspace of the same person."""
    if not UpstreamAccount.objects.filter(label=wanted).exclude(chatgpt_account_id=account_id).exists():
        return wanted
    suffix = f" ({account_id})"
    return wanted[: UpstreamAccount._meta.get_field("label").max_length - len(suffix)] + suffix
