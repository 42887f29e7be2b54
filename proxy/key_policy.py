"""What a key may ask for, applied to a turn's body before it goes upstream (HTTP, /v1 and the websocket alike).

The forced model replaces the turn's model before routing (the RequestLog keeps the one asked for); an effort
above the key's cap is lowered to it or refused; the service tier is forced or refused; `max_output_tokens` is
lowered to the key's cap; an input estimated above the key's cap is refused with 400 before any upstream call.
A key without any of these costs nothing here.
"""

import json

from accounts.models import REASONING_EFFORTS, OverCap, PoolApiKey

from .accounting import Turn
from .errors import PoolerError

# The effort a turn gets when it names none (the backend's default_reasoning_level).
_DEFAULT_EFFORT = "medium"
# The request's input is estimated at one token per this many bytes of JSON (what the simulator reports, and
# close to the real tokenizer for English text and code).
BYTES_PER_TOKEN = 4


def has_policy(key: PoolApiKey) -> bool:
    return bool(
        key.forced_model
        or key.max_reasoning_effort
        or key.forced_service_tier
        or key.allowed_service_tiers
        or key.max_input_tokens
        or key.max_output_tokens
    )


def estimated_input_tokens(body: dict, earlier_input: list | None = None) -> int:
    """Bytes of the body's JSON (with the history a websocket chain leaves out) divided by four."""
    size = len(json.dumps(body, separators=(",", ":")))
    if earlier_input:
        size += len(json.dumps(earlier_input, separators=(",", ":")))
    return size // BYTES_PER_TOKEN


def apply(key: PoolApiKey, turn: Turn, body: dict, earlier_input: list | None = None) -> bool:
    """Make `body` what `key` allows (in place), or raise a 400 PoolerError; whether the body changed.

    `earlier_input`: the history a websocket turn continues from (counted in its input, not sent again).
    """
    if not has_policy(key):
        return False
    changed = False
    if key.forced_model and body.get("model") != key.forced_model:
        turn.requested_model = turn.model
        body["model"] = turn.model = key.forced_model
        changed = True
    changed |= _cap_effort(key, body)
    changed |= _service_tier(key, body)
    asked = body.get("max_output_tokens")
    if key.max_output_tokens and isinstance(asked, int) and asked > key.max_output_tokens:
        body["max_output_tokens"] = key.max_output_tokens
        changed = True
    if key.max_input_tokens:
        estimate = estimated_input_tokens(body, earlier_input)
        if estimate > key.max_input_tokens:
            raise PoolerError(
                f"This request's input is about {estimate} tokens; this key allows at most {key.max_input_tokens} "
                "per request. Compact or shorten the conversation.",
                code="input_too_large",
                param="input",
            )
    return changed


def _cap_effort(key: PoolApiKey, body: dict) -> bool:
    cap = key.max_reasoning_effort
    if not cap:
        return False
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    asked = reasoning.get("effort") or _DEFAULT_EFFORT
    rank = REASONING_EFFORTS.index(asked) if asked in REASONING_EFFORTS else len(REASONING_EFFORTS)
    if rank <= REASONING_EFFORTS.index(cap):
        return False
    if key.reasoning_effort_over_cap == OverCap.REFUSE and reasoning.get("effort"):
        raise PoolerError(
            f"Reasoning effort {asked!r} is above this key's cap ({cap!r}).",
            code="reasoning_effort_not_allowed",
            param="reasoning.effort",
        )
    # A turn that names no effort would get the model's default: lowered like any other.
    body["reasoning"] = {**reasoning, "effort": cap}
    return True


def _service_tier(key: PoolApiKey, body: dict) -> bool:
    asked = body.get("service_tier")
    if key.allowed_service_tiers and asked is not None and asked not in key.allowed_service_tiers:
        raise PoolerError(
            f"Service tier {asked!r} is not allowed for this key; allowed: {', '.join(key.allowed_service_tiers)}.",
            code="service_tier_not_allowed",
            param="service_tier",
        )
    if key.forced_service_tier and asked != key.forced_service_tier:
        body["service_tier"] = key.forced_service_tier
        return True
    return False
