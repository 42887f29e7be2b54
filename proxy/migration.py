"""Moving a Codex session to another account without breaking it.

History the CLI sends back carries items only the account that made them can read: reasoning items'
`encrypted_content`, compaction items, and (on websockets) `previous_response_id` chains. When a turn goes
to an account other than the session's owner, those are removed so the new account accepts the turn.
"""

# Backend error codes that mean "this history belongs to another account": strip and replay once.
ACCOUNT_BOUND_ERRORS = {"invalid_encrypted_content", "previous_response_not_found"}
_BOUND_ITEM_TYPES = {"reasoning", "compaction", "compaction_summary"}


def _is_account_bound(item) -> bool:
    return isinstance(item, dict) and item.get("type") in _BOUND_ITEM_TYPES and bool(item.get("encrypted_content"))


def strip_account_bound(body: dict, before: int | None = None) -> dict:
    """A copy of a turn's body that any account accepts: no foreign encrypted items, no response chain.

    With `before`, only the bound items among the first `before` input items go (the rest are the
    current account's own, made after the session moved to it).
    """
    stripped = {k: v for k, v in body.items() if k != "previous_response_id"}
    items = body.get("input")
    if isinstance(items, list):
        end = len(items) if before is None else before
        stripped["input"] = [item for i, item in enumerate(items) if i >= end or not _is_account_bound(item)]
    return stripped


def input_count(body: dict) -> int:
    items = body.get("input")
    return len(items) if isinstance(items, list) else 0


def has_account_bound(body: dict) -> bool:
    items = body.get("input")
    return bool(body.get("previous_response_id")) or (
        isinstance(items, list) and any(_is_account_bound(item) for item in items)
    )
