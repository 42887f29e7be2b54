"""Codex-shaped request bodies and SSE reading for tests."""

import json
import uuid


def turn_body(text: str = "hello", model: str = "gpt-5.2", **extra) -> dict:
    """A body like the Codex CLI's: developer prompt as a message, include encrypted reasoning."""
    return {
        "model": model,
        "stream": True,
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be brief"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        ],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "low"},
        "prompt_cache_key": extra.pop("session", None) or str(uuid.uuid4()),
        **extra,
    }


def session_headers(key: str, session: str | None = None) -> dict:
    session = session or str(uuid.uuid4())
    return {
        "Authorization": f"Bearer {key}",
        "session-id": session,
        "thread-id": session,
        "originator": "codex_exec",
        "Accept": "text/event-stream",
    }


def sse_events(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        data = "".join(line[5:].strip() for line in block.splitlines() if line.startswith("data:"))
        if data and data != "[DONE]":
            events.append(json.loads(data))
    return events


def reply_text(events: list[dict]) -> str:
    return "".join(e.get("delta", "") for e in events if e.get("type") == "response.output_text.delta")
