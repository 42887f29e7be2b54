"""Codex-shaped request bodies and SSE reading for tests."""

import asyncio
import json
import uuid

import httpx


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


async def post_turns(turns: list[tuple[str, str, str | None]]) -> list[int]:
    """POST every (codex base URL, key, session or None) turn at once; their statuses, in order."""
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=len(turns) + 10)) as client:

        async def one(url: str, key: str, session: str | None) -> int:
            headers = session_headers(key, session)
            response = await client.post(f"{url}/responses", json=turn_body(session=session), headers=headers)
            return response.status_code

        return await asyncio.gather(*(one(*turn) for turn in turns))
