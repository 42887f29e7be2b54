"""Server-sent events: watch a stream go by without altering it, and parse it where we translate it."""

import json
import re
from collections.abc import Iterator

# The watcher parses only these events: the terminal ones, errors (an "error" with a value: every response object
# in an event says "error": null) and rate limits. Every other event passes through untouched and unparsed.
_WATCHED = r'response\.(?:completed|failed|incomplete)|codex\.rate_limits|"error"\s*(?:[,}\]]|:\s*[^\sn])'
watched_in_frame = re.compile(_WATCHED).search  # for websocket text frames, one event each
# The same for a stream's chunks, which can hold a whole turn: bytes.find scans them many times faster than a
# regular expression's alternatives do.
_MARKERS = (b"response.completed", b"response.failed", b"response.incomplete", b"codex.rate_limits")
_ERROR_WITH_VALUE = re.compile(rb'"error"\s*(?:[,}\]]|:\s*[^\sn])').match
_ITEM_DONE = b"response.output_item.done"
TERMINAL = {"response.completed", "response.failed", "response.incomplete"}


def first_watched(data: bytes) -> int:
    """Where the first watched marker in `data` is, or -1."""
    first = min((at for marker in _MARKERS if (at := data.find(marker)) >= 0), default=len(data))
    at = data.find(b'"error"', 0, first)
    while at >= 0:
        if _ERROR_WITH_VALUE(data, at):
            return at
        at = data.find(b'"error"', at + 7, first)
    return first if first < len(data) else -1


class SseParser:
    """Splits a byte stream into events; keeps an incomplete event until its end arrives."""

    def __init__(self):
        self._pending = b""

    @property
    def between_events(self) -> bool:
        """Whether no event has begun without ending yet."""
        return not self._pending

    def blocks(self, chunk: bytes) -> list[bytes]:
        data = self._pending + chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        blocks = data.split(b"\n\n")
        self._pending = blocks.pop()
        return [block for block in blocks if block.strip()]

    def events(self, chunk: bytes) -> Iterator[dict]:
        for block in self.blocks(chunk):
            event = parse_block(block)
            if event is not None:
                yield event


def parse_block(block: bytes) -> dict | None:
    payload = b"\n".join(line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:"))
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class SseWatcher:
    """Fed raw chunks in order; remembers usage, the final response, the terminal event and errors."""

    def __init__(self, keep_items: bool = False):
        self._parser = SseParser()
        self.events = 0
        # The output items as they are done, for answers built from them (only when asked: they cost a parse).
        self.items: list[dict] = []
        self._keep_items = keep_items
        self.usage: dict | None = None
        self.response: dict | None = None
        self.terminal: str | None = None
        self.error: dict | None = None
        self.error_code: str = ""
        self.rate_limits: dict | None = None

    def feed(self, chunk: bytes) -> None:
        if self._parser.between_events and not self._keep_items and b"\r" not in chunk:
            # The whole events before the first watched one are counted, not split (most of a turn's).
            found = first_watched(chunk)
            end = chunk.rfind(b"\n\n", 0, len(chunk) if found < 0 else found)
            if end >= 0:
                self.events += chunk.count(b"\n\n", 0, end + 2)
                chunk = chunk[end + 2 :]
                if not chunk:
                    return
        for block in self._parser.blocks(chunk):
            self.events += 1
            watched = first_watched(block) >= 0
            kept = self._keep_items and _ITEM_DONE in block
            if (watched or kept) and (event := parse_block(block)) is not None:
                observe_event(self, event)
                if kept and event.get("type") == "response.output_item.done" and isinstance(event.get("item"), dict):
                    self.items.append(event["item"])


def observe_event(watcher, event: dict) -> None:
    """Take usage, terminal state, errors and rate limits from one event (SSE data or websocket frame)."""
    kind = event.get("type")
    if kind in TERMINAL:
        watcher.terminal = kind
        response = event.get("response") or {}
        watcher.response = response
        if isinstance(response.get("usage"), dict):
            watcher.usage = response["usage"]
        error = response.get("error")
        if isinstance(error, dict):
            watcher.error, watcher.error_code = error, str(error.get("code") or "")
    elif kind == "error":
        error = event.get("error") if isinstance(event.get("error"), dict) else event
        watcher.error = error
        watcher.error_code = str(error.get("code") or error.get("type") or "error")
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


def encode_event(data: dict, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
