"""The compact routes, served by a compaction v2 turn now that the backend's own endpoint is gone.

ChatGPT's backend retired `POST /backend-api/codex/responses/compact` in August 2026 (it answers 404):
history is compacted only by a streamed `/responses` turn whose input ends with a `compaction_trigger`
item, the way Codex CLI 0.169 does it. Older CLIs and OpenAI SDK users still call the compact routes, so
the pooler runs that turn for them and answers in the endpoint's own shape: the user's messages, followed
by the one `compaction` item the turn made (sealed to the account that made it, passed on untouched).
"""

import time
import uuid

from .errors import PoolerError, UpstreamUnavailable
from .migration import COMPACTION_TRIGGER

# What a streamed turn cannot carry (the pooler streams and never stores).
_NOT_FOR_A_TURN = ("stream", "store", "background", "previous_response_id")


def trigger_turn(body: dict) -> dict:
    """The `/responses` turn that compacts `body`'s input."""
    items = body.get("input") or []
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": items}]}]
    if not isinstance(items, list):
        raise PoolerError("`input` must be a string or a list of items.", code="invalid_type", param="input")
    turn = {k: v for k, v in body.items() if k not in _NOT_FOR_A_TURN}
    turn.update(input=[*items, {"type": COMPACTION_TRIGGER}], stream=True, store=False)
    return turn


def compacted_output(turn_body: dict, watcher) -> list[dict]:
    """The user's messages of the compacted input, then the turn's single compaction item."""
    if watcher.terminal != "response.completed":
        raise failed_turn_error(watcher)
    made = [item for item in watcher.items if item.get("type") == "compaction"]
    if len(made) != 1:
        raise UpstreamUnavailable(
            f"The upstream compaction turn returned {len(made)} compaction items instead of one.",
            code="compaction_failed",
        )
    kept = [
        item
        for item in turn_body["input"]
        if isinstance(item, dict) and item.get("role") == "user" and item.get("type", "message") == "message"
    ]
    return [*kept, *made]


def compacted_response(output: list[dict], watcher) -> dict:
    """The OpenAI API's `response.compaction` object (what `client.responses.compact()` parses)."""
    response = watcher.response or {}
    return {
        "id": response.get("id") or f"resp_{uuid.uuid4().hex}",
        "object": "response.compaction",
        "created_at": response.get("created_at") or int(time.time()),
        "output": output,
        "usage": watcher.usage,
    }


def failed_turn_error(watcher) -> PoolerError:
    """The client's error for an upstream turn that ended without completing."""
    error = watcher.error or {}
    message = error.get("message") or "The upstream turn did not complete."
    if error.get("type") == "invalid_request_error" or error.get("code") == "context_length_exceeded":
        return PoolerError(message, code=error.get("code"))
    return UpstreamUnavailable(message, code=error.get("code") or "upstream_error")
