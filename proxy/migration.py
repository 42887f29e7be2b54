"""Moving a Codex session to another account without breaking it.

History the CLI sends back carries items only the account that made them can read: reasoning items'
`encrypted_content`, compaction items, and (on websockets) `previous_response_id` chains. When a turn goes
to an account other than the session's owner, those are removed so the new account accepts the turn.

Reasoning is a loss the model does not notice (its messages and tool results stay). A compaction item is
different: after a compaction it is the only carrier of everything before it. So each compaction item that
must go is replaced by a notice to the model, at the same place, saying that this context stayed behind:
the model can ask the user instead of pretending to remember. The notice's text never changes, so the
prompt cache of the turns after a move keeps hitting.
"""

# Backend error codes that mean "this history belongs to another account": strip and replay once.
ACCOUNT_BOUND_ERRORS = {"invalid_encrypted_content", "previous_response_not_found"}
_BOUND_ITEM_TYPES = {"reasoning", "compaction", "compaction_summary"}
_COMPACTION_TYPES = {"compaction", "compaction_summary"}
COMPACTION_TRIGGER = "compaction_trigger"

CONTEXT_LOST_NOTICE = (
    "Note from the Codex Pooler gateway: this conversation was compacted while another ChatGPT account served "
    "it, and that compacted history is sealed to that account. The session has moved to a new account, so "
    "everything the compaction summarised (your earlier replies, tool calls and their results, and your "
    "reasoning) is not available to you. The user's earlier messages above are intact. Do not pretend to "
    "remember what happened before this point: say that the earlier context was lost, and ask the user, or "
    "look at the workspace again, for anything you need."
)
NOTICE_ITEM = {
    "type": "message",
    "role": "developer",
    "content": [{"type": "input_text", "text": CONTEXT_LOST_NOTICE}],
}


def _is_account_bound(item) -> bool:
    return isinstance(item, dict) and item.get("type") in _BOUND_ITEM_TYPES and bool(item.get("encrypted_content"))


def _is_compaction(item) -> bool:
    return _is_account_bound(item) and item.get("type") in _COMPACTION_TYPES


def _items(body: dict) -> list:
    items = body.get("input")
    return items if isinstance(items, list) else []


def strip_account_bound(body: dict, before: int | None = None) -> dict:
    """A copy of a turn's body that any account accepts: no foreign encrypted items, no response chain, and
    a notice to the model in place of each compaction item.

    With `before`, only the bound items among the first `before` input items go (the rest are the
    current account's own, made after the session moved to it).
    """
    stripped = {k: v for k, v in body.items() if k != "previous_response_id"}
    if isinstance(body.get("input"), list):
        end = len(body["input"]) if before is None else before
        kept = []
        for i, item in enumerate(body["input"]):
            if i >= end or not _is_account_bound(item):
                kept.append(item)
            elif _is_compaction(item):
                kept.append(NOTICE_ITEM)
        stripped["input"] = kept
    return stripped


def compactions(body: dict, before: int | None = None) -> int:
    """How many compaction items (sealed to their account) the first `before` input items hold."""
    items = _items(body)
    return sum(1 for item in items[: len(items) if before is None else before] if _is_compaction(item))


def loses_context(body: dict, known_foreign: int) -> bool:
    """Whether stripping `body` drops a compaction that was not already lost: one past the `known_foreign`
    leading items, which another account made and whose loss was accounted when the session left it."""
    return compactions(body) > compactions(body, before=known_foreign)


def is_compaction_turn(body: dict) -> bool:
    """A compaction v2 turn: the Codex CLI ends the history with a `compaction_trigger` item."""
    items = _items(body)
    return bool(items) and isinstance(items[-1], dict) and items[-1].get("type") == COMPACTION_TRIGGER


def input_count(body: dict) -> int:
    return len(_items(body))


def has_account_bound(body: dict) -> bool:
    return bool(body.get("previous_response_id")) or any(_is_account_bound(item) for item in _items(body))
