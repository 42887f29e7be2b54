"""A test turn on one account, from the admin: does it answer right now?"""

import httpx
from django.utils import timezone
from httpx_sse import SSEError, connect_sse

from .models import UpstreamAccount
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
    last = None
    try:
        with (
            httpx.Client(timeout=60) as client,
            connect_sse(client, "POST", account.upstream_base_url + "/responses", json=body, headers=headers) as events,
        ):
            if events.response.status_code != 200:
                return f"HTTP {events.response.status_code}"
            for event in events.iter_sse():
                last = event
    except (httpx.HTTPError, SSEError) as exc:
        return f"failed: {type(exc).__name__}"
    if last is not None and last.event == "response.completed":
        return "ok"
    return f"incomplete: {_error_code(last) if last is not None else 'cut'}"


def _error_code(event) -> str:
    """The code of a turn that ended without completing (`response.failed`, an `error` event), or "cut"."""
    try:
        data = event.json()
    except ValueError:
        return "cut"
    if not isinstance(data, dict):
        return "cut"
    error = (data.get("response") or {}).get("error") or data.get("error")
    return str(error.get("code") or error.get("type") or "error") if isinstance(error, dict) else "cut"
