"""Watching an SSE stream go by: find the events that carry usage and the end of a turn, alter nothing."""

import json

# Only these events are parsed; every other event passes through untouched and unparsed.
_WATCHED = (b"response.completed", b"response.failed", b"response.incomplete", b'"error"', b"codex.rate_limits")
TERMINAL = {"response.completed", "response.failed", "response.incomplete"}


class SseWatcher:
    """Fed raw chunks in order; remembers usage, the terminal event and errors."""

    def __init__(self):
        self._pending = b""
        self.events = 0
        self.usage: dict | None = None
        self.terminal: str | None = None
        self.error_code: str = ""
        self.rate_limits: dict | None = None

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk
        blocks = data.replace(b"\r\n", b"\n").split(b"\n\n")
        self._pending = blocks.pop()
        for block in blocks:
            if block.strip():
                self.events += 1
                if any(marker in block for marker in _WATCHED):
                    self._inspect(block)

    def _inspect(self, block: bytes) -> None:
        payload = b"".join(line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:"))
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if isinstance(event, dict):
            observe_event(self, event)


def observe_event(watcher, event: dict) -> None:
    """Take usage, terminal state, errors and rate limits from one event (SSE data or websocket frame)."""
    kind = event.get("type")
    if kind in TERMINAL:
        watcher.terminal = kind
        response = event.get("response") or {}
        if isinstance(response.get("usage"), dict):
            watcher.usage = response["usage"]
        error = response.get("error")
        if isinstance(error, dict):
            watcher.error_code = str(error.get("code") or "")
    elif kind == "error":
        error = event.get("error") or {}
        watcher.error_code = str(error.get("code") or error.get("type") or "error") if isinstance(error, dict) else "error"
    elif kind == "codex.rate_limits":
        watcher.rate_limits = event


def usage_counts(usage: dict | None) -> dict:
    """RequestLog token fields from a Responses usage object."""
    usage = usage or {}

    def number(value) -> int:
        return value if isinstance(value, int) and value >= 0 else 0

    return {
        "input_tokens": number(usage.get("input_tokens")),
        "cached_tokens": number((usage.get("input_tokens_details") or {}).get("cached_tokens")),
        "output_tokens": number(usage.get("output_tokens")),
        "reasoning_tokens": number((usage.get("output_tokens_details") or {}).get("reasoning_tokens")),
        "total_tokens": number(usage.get("total_tokens")),
    }
