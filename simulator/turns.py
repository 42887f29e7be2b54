"""The events of one simulated turn: the Responses stream order the Codex CLI expects, echoing the user."""

import json
import time
import uuid

from . import sealing

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
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            return content
        texts = [
            part.get("text", "")
            for part in content or []
            if isinstance(part, dict) and part.get("type") in ("input_text", "text")
        ]
        if texts:
            return "".join(texts)
    return ""


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


def usage(body_bytes: int, output_text: str, reasoning: bool) -> dict:
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
    body: dict, account_id: str, body_bytes: int, deltas: int, response_id: str, generate: bool = True
) -> list[dict]:
    """All events of a turn, `sequence_number`ed; a prewarm (`generate: false`) has no output items."""
    events: list[dict] = [
        {"type": kind, "response": _response(response_id, body, "in_progress", [], None)}
        for kind in ("response.created", "response.in_progress")
    ]
    output: list[dict] = []
    text = ""
    if generate:
        text = REPLY_PREFIX + last_user_text(body.get("input"))
        if body.get("reasoning") is not None:
            output.append(_reasoning_events(events, body, account_id, len(output)))
        tool = _forced_tool(body)
        if tool is not None:
            output.append(_function_call_events(events, tool, text, deltas, len(output)))
        else:
            text = _formatted(body, text)
            output.append(_message_events(events, text, deltas, len(output)))
    done = _response(
        response_id, body, "completed", output, usage(body_bytes, text, generate and body.get("reasoning") is not None)
    )
    events.append({"type": "response.completed", "response": done})
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


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


def _function_call_events(events: list, tool: dict, text: str, deltas: int, index: int) -> dict:
    item_id, call_id = "fc_" + uuid.uuid4().hex, "call_" + uuid.uuid4().hex[:24]
    arguments = _arguments(tool, text.removeprefix(REPLY_PREFIX))
    item = {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": tool.get("name"),
        "arguments": "",
        "status": "in_progress",
    }
    events.append({"type": "response.output_item.added", "output_index": index, "item": item})
    for piece in _chunks(arguments, min(deltas, 4)):
        events.append(
            {
                "type": "response.function_call_arguments.delta",
                "item_id": item_id,
                "output_index": index,
                "delta": piece,
            }
        )
    events.append(
        {
            "type": "response.function_call_arguments.done",
            "item_id": item_id,
            "output_index": index,
            "arguments": arguments,
        }
    )
    done = {**item, "arguments": arguments, "status": "completed"}
    events.append({"type": "response.output_item.done", "output_index": index, "item": done})
    return done


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
    kept = [
        item
        for item in body.get("input") or []
        if isinstance(item, dict) and item.get("type") == "message" and item.get("role") == "user"
    ]
    return kept + [
        {
            "type": "compaction",
            "id": "cmp_" + uuid.uuid4().hex,
            "encrypted_content": sealing.seal(account_id, "compaction"),
        }
    ]


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
