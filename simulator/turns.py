"""The events of one simulated turn: the Responses stream order the Codex CLI expects.

The model echoes the user, plays a script (see `script.py`), or answers a `compaction_trigger` with one
sealed compaction item.
"""

import json
import time
import uuid

from . import script, sealing

REPLY_PREFIX = "echo: "


def last_user_text(input_items) -> str:
    """The text a turn answers: the last user message, or the output of a tool call that ends the input."""
    if isinstance(input_items, str):
        return input_items
    items = input_items if isinstance(input_items, list) else []
    if items and isinstance(items[-1], dict) and items[-1].get("type") == "function_call_output":
        output = items[-1].get("output")
        return output if isinstance(output, str) else json.dumps(output)
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user" and (text := script.message_text(item)):
            return text
    return ""


def ends_with_compaction_trigger(input_items) -> bool:
    """CLI 0.169.0 asks for a compaction (v2) with an ordinary turn whose last input item is this trigger."""
    items = script.items_of(input_items)
    return bool(items) and items[-1].get("type") == "compaction_trigger"


def input_types(input_items) -> list[str]:
    """The shape of an input, for the request log: `message:<role>` or the item's type, never its text."""
    return [
        f"message:{item.get('role')}" if item.get("type", "message") == "message" else str(item.get("type"))
        for item in script.items_of(input_items)
    ]


def foreign_encrypted_content(input_items, account_id: str) -> str | None:
    """The first reasoning/compaction blob in the input that this account did not produce."""
    for item in input_items if isinstance(input_items, list) else []:
        if isinstance(item, dict) and item.get("type") in ("reasoning", "compaction", "compaction_summary"):
            blob = item.get("encrypted_content")
            if blob and sealing.sealed_by(blob) != account_id:
                return blob
    return None


def _chunks(text: str, count: int) -> list[str]:
    """Exactly `count` pieces of `text` (benchmarks ask for many events: past its length, some are empty)."""
    count = max(1, count)
    size, extra = divmod(len(text), count)
    pieces, start = [], 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def usage(body_bytes: int, output_text: str, reasoning: bool, input_tokens: int | None = None) -> dict:
    """Token counts guessed from sizes, unless a script says how many input tokens to report."""
    if input_tokens is None:
        input_tokens = max(1, body_bytes // 4)
    reasoning_tokens = 16 if reasoning else 0
    output_tokens = max(1, len(output_text) // 4) + reasoning_tokens
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": input_tokens // 2},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


def _response(response_id: str, body: dict, status: str, output: list, usage_: dict | None) -> dict:
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": body.get("model"),
        "output": output,
        "usage": usage_,
        "error": None,
        "incomplete_details": None,
        "previous_response_id": body.get("previous_response_id"),
        "parallel_tool_calls": body.get("parallel_tool_calls", False),
        "store": body.get("store", False),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [],
        "reasoning": body.get("reasoning"),
    }


def new_response_id() -> str:
    return "resp_" + uuid.uuid4().hex


def turn_events(
    body: dict,
    account_id: str,
    body_bytes: int,
    deltas: int,
    response_id: str,
    generate: bool = True,
    conversation: list | None = None,
) -> list[dict]:
    """All events of a turn, `sequence_number`ed; a prewarm (`generate: false`) has no output items.

    `conversation` is the whole conversation when the body's input is only its end (a websocket chain).
    """
    if conversation is None:
        conversation = script.items_of(body.get("input"))
    events: list[dict] = [
        {"type": kind, "response": _response(response_id, body, "in_progress", [], None)}
        for kind in ("response.created", "response.in_progress")
    ]
    output: list[dict] = []
    text, input_tokens, reasoning = "", None, False
    if generate and ends_with_compaction_trigger(body.get("input")):
        # The CLI accepts exactly one output item here: no reasoning.
        output.append(_compaction_events(events, conversation, account_id))
    elif generate:
        reasoning = body.get("reasoning") is not None
        if reasoning:
            output.append(_reasoning_events(events, body, account_id, len(output)))
        plan = script.of_conversation(conversation)
        if plan is None:
            text = _echo(events, body, deltas, output)
        else:
            text, input_tokens = _play(events, plan, conversation, account_id, deltas, output)
    done = _response(response_id, body, "completed", output, usage(body_bytes, text, reasoning, input_tokens))
    events.append({"type": "response.completed", "response": done})
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


def _echo(events: list, body: dict, deltas: int, output: list) -> str:
    """The echo of the user's text: a message, or a call of the tool the turn forces."""
    text = REPLY_PREFIX + last_user_text(body.get("input"))
    tool = _forced_tool(body)
    if tool is not None:
        arguments = _arguments(tool, text.removeprefix(REPLY_PREFIX))
        output.append(_tool_call_events(events, "function_call", tool.get("name"), arguments, deltas, len(output)))
        return text
    text = _formatted(body, text)
    output.append(_message_events(events, text, deltas, len(output)))
    return text


def _play(
    events: list, plan: script.Script, conversation: list, account_id: str, deltas: int, output: list
) -> tuple[str, int | None]:
    """One response of a script: its next tool step, or the final message (and its token count) once done."""
    step = script.next_step(plan, conversation, account_id)
    if step is None:
        text = script.final_text(plan, conversation, account_id)
        output.append(_message_events(events, text, deltas, len(output)))
        return text, plan.tokens
    if step.tool == "exec_command":
        arguments = json.dumps({"cmd": step.text})
        output.append(_tool_call_events(events, "function_call", step.tool, arguments, deltas, len(output)))
    else:
        output.append(_tool_call_events(events, "custom_tool_call", step.tool, step.text, deltas, len(output)))
    return step.text, None


def _forced_tool(body: dict) -> dict | None:
    """The function tool a turn must call (`tool_choice` required or named), unless a tool result just came."""
    items = body.get("input") if isinstance(body.get("input"), list) else []
    if items and isinstance(items[-1], dict) and items[-1].get("type") == "function_call_output":
        return None
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    return tools[0] if choice == "required" and tools else None


def _arguments(tool: dict, text: str) -> str:
    """Arguments that fit the tool's JSON schema: every string property gets the user's text."""
    properties = (tool.get("parameters") or {}).get("properties") or {}
    return json.dumps(
        {name: text if (spec or {}).get("type", "string") == "string" else None for name, spec in properties.items()}
    )


def _formatted(body: dict, text: str) -> str:
    """The reply in the requested text format: a JSON object when a json_schema or json_object is asked for."""
    fmt = ((body.get("text") or {}).get("format")) or {}
    if fmt.get("type") == "json_schema":
        properties = (fmt.get("schema") or {}).get("properties") or {"reply": {}}
        return json.dumps({name: text for name in properties})
    if fmt.get("type") == "json_object":
        return json.dumps({"reply": text})
    return text


# Per kind of tool call: its item id prefix, the field holding its text, the prefix of its delta/done events.
_CALL_SHAPES = {
    "function_call": ("fc_", "arguments", "response.function_call_arguments"),
    "custom_tool_call": ("ctc_", "input", "response.custom_tool_call_input"),
}


def _tool_call_events(events: list, type_: str, name: str, text: str, deltas: int, index: int) -> dict:
    """A call of a function (`text`: JSON arguments) or of a custom tool like the CLI's `apply_patch` (free text)."""
    id_prefix, field_name, event_prefix = _CALL_SHAPES[type_]
    item_id = id_prefix + uuid.uuid4().hex
    item = {
        "type": type_,
        "id": item_id,
        "call_id": "call_" + uuid.uuid4().hex[:24],
        "name": name,
        field_name: "",
        "status": "in_progress",
    }
    events.append({"type": "response.output_item.added", "output_index": index, "item": item})
    common = {"item_id": item_id, "output_index": index}
    for piece in _chunks(text, min(deltas, 4)):
        events.append({"type": f"{event_prefix}.delta", **common, "delta": piece})
    events.append({"type": f"{event_prefix}.done", **common, field_name: text})
    done = {**item, field_name: text, "status": "completed"}
    events.append({"type": "response.output_item.done", "output_index": index, "item": done})
    return done


def _compaction_events(events: list, conversation: list, account_id: str) -> dict:
    """The one item of a compaction (v2): the conversation's memory, sealed to this account."""
    item = _compaction_item(conversation, account_id)
    events.append({"type": "response.output_item.added", "output_index": 0, "item": item})
    events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
    return item


def _compaction_item(conversation: list, account_id: str) -> dict:
    memory = script.compaction_memory(conversation, account_id)
    return {
        "id": "cmp_" + uuid.uuid4().hex,
        "type": "compaction",
        "encrypted_content": sealing.seal(account_id, "compaction", memory),
    }


def _reasoning_events(events: list, body: dict, account_id: str, index: int) -> dict:
    item_id = "rs_" + uuid.uuid4().hex
    summary_wanted = (body.get("reasoning") or {}).get("summary") not in (None, "none")
    summary = [{"type": "summary_text", "text": "**Echoing**\n\nRepeating the user's message."}] * summary_wanted
    item = {"type": "reasoning", "id": item_id, "summary": []}
    if "reasoning.encrypted_content" in (body.get("include") or []):
        item["encrypted_content"] = sealing.seal(account_id, "reasoning")
    events.append({"type": "response.output_item.added", "output_index": index, "item": item})
    for part_index, part in enumerate(summary):
        common = {"item_id": item_id, "output_index": index, "summary_index": part_index}
        events += [
            {"type": "response.reasoning_summary_part.added", **common, "part": {**part, "text": ""}},
            {"type": "response.reasoning_summary_text.delta", **common, "delta": part["text"]},
            {"type": "response.reasoning_summary_text.done", **common, "text": part["text"]},
            {"type": "response.reasoning_summary_part.done", **common, "part": part},
        ]
    done = {**item, "summary": summary}
    events.append({"type": "response.output_item.done", "output_index": index, "item": done})
    return done


def _message_events(events: list, text: str, deltas: int, index: int) -> dict:
    item_id = "msg_" + uuid.uuid4().hex
    common = {"item_id": item_id, "output_index": index, "content_index": 0}
    events.append(
        {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {"type": "message", "id": item_id, "role": "assistant", "status": "in_progress", "content": []},
        }
    )
    events.append(
        {
            "type": "response.content_part.added",
            **common,
            "part": {"type": "output_text", "text": "", "annotations": []},
        }
    )
    for piece in _chunks(text, deltas):
        events.append({"type": "response.output_text.delta", **common, "delta": piece, "logprobs": []})
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    events.append({"type": "response.output_text.done", **common, "text": text, "logprobs": []})
    events.append({"type": "response.content_part.done", **common, "part": part})
    item = {"type": "message", "id": item_id, "role": "assistant", "status": "completed", "content": [part]}
    events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    return item


def compacted_output(body: dict, account_id: str) -> list[dict]:
    """The compacted history: the user's messages kept, everything else folded into one compaction item."""
    items = script.items_of(body.get("input"))
    kept = [item for item in items if item.get("type") == "message" and item.get("role") == "user"]
    return kept + [_compaction_item(items, account_id)]


def rate_limits_event(account, now: float) -> dict:
    """The `codex.rate_limits` event the websocket sends before a turn's events (shape the CLI parses)."""
    return {
        "type": "codex.rate_limits",
        "plan_type": account.plan_type,
        "metered_limit_name": "codex",
        "rate_limits": {
            name: {
                "used_percent": w.used_percent,
                "window_minutes": w.minutes,
                "reset_at": int(w.reset_at),
                "reset_after_seconds": w.reset_after(now),
            }
            for name, w in (("primary", account.primary), ("secondary", account.secondary))
        },
        "credits": {"has_credits": False, "unlimited": False, "balance": "0"},
    }
