"""A test turn on one account, from the admin: does it answer right now?"""

import json

import httpx

from accounts.models import UpstreamAccount

from .sse import SseWatcher

_PROBE_MODEL = "gpt-5.1-codex-mini"


def send_test_turn(account: UpstreamAccount, model: str = _PROBE_MODEL) -> str:
    """Send a one-word turn; returns a short verdict (status and outcome), never the reply text."""
    body = {
        "model": model,
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
