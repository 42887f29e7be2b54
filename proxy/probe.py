"""A test turn on one account, from the admin: does it answer right now?"""

import json

import httpx
from django.utils import timezone

from accounts.models import UpstreamAccount

from .sse import SseWatcher
from .tokens import refresh_account

_PROBE_MODEL = "gpt-5.1-codex-mini"  # small and cheap: a probe should not eat quota


def _probe_model(account: UpstreamAccount) -> str:
    """The model a test turn asks for: the small default unless the account lists models without it."""
    if not account.model_slugs or _PROBE_MODEL in account.model_slugs:
        return _PROBE_MODEL
    return account.model_slugs[0]


def send_test_turn(account: UpstreamAccount, actor: str = "pooler") -> str:
    """Send a one-word turn; returns a short verdict (status and outcome), never the reply text.

    A token about to expire is refreshed first (as a real turn would), so the verdict is about the account,
    not about a token the worker was going to replace anyway; raises RefreshFailed when that fails.
    """
    if account.token_needs_refresh(timezone.now()):
        account = refresh_account(account.pk, actor=actor)
    body = {
        "model": _probe_model(account),
        "stream": True,
        "store": False,
        "instructions": "",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ping"}]}],
    }
    headers = {
        "authorization": f"Bearer {account.access_token}",
        "chatgpt-account-id": account.chatgpt_account_id,
        "content-type": "application/json",
        "accept": "text/event-stream",
        "originator": "codex_pooler",
    }
    watcher = SseWatcher()
    try:
        with httpx.stream(
            "POST", account.upstream_base_url + "/responses", content=json.dumps(body), headers=headers, timeout=60
        ) as response:
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            for chunk in response.iter_raw():
                watcher.feed(chunk)
    except httpx.HTTPError as exc:
        return f"failed: {type(exc).__name__}"
    return "ok" if watcher.terminal == "response.completed" else f"incomplete: {watcher.error_code or 'cut'}"
