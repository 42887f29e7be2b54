"""The Codex backend's HTTP routes: SSE turns, compaction, models, realtime calls and wham/usage."""

import asyncio
import gzip
import json
import time
import uuid

import zstandard
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import turns
from .gate import Refusal, admit, authenticate, bearer, rate_limit_headers
from .models import models_response
from .pacing import paced
from .state import STREAM_FAULTS, Account, SimState


def _state(request: Request) -> SimState:
    return request.app.state.sim


async def read_json(request: Request) -> tuple[dict, int]:
    raw = await request.body()
    encoding = request.headers.get("content-encoding", "").lower()
    try:
        if encoding == "zstd":
            raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        elif encoding == "gzip":
            raw = gzip.decompress(raw)
        body = json.loads(raw)
    except (ValueError, zstandard.ZstdError, OSError):
        raise Refusal(400, "invalid_json", "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise Refusal(400, "invalid_json", "The body must be a JSON object.")
    return body, len(raw)


def refusal_response(refusal: Refusal, account: Account | None, entry: dict) -> JSONResponse:
    entry.update(status=refusal.status, outcome="rejected", error_code=refusal.code)
    headers = rate_limit_headers(account, time.time()) if account is not None else {}
    return JSONResponse(refusal.body(), status_code=refusal.status, headers={**headers, **refusal.headers})


def tool_names(body: dict) -> list[str]:
    """Names of the tools a turn offers the model (metadata, e.g. to see which MCP tools a client found)."""
    return [str(t.get("name") or t.get("type")) for t in body.get("tools") or [] if isinstance(t, dict)]


def note_body(entry: dict, body: dict) -> None:
    """What the log keeps of a turn's body: metadata, never text."""
    entry.update(
        model=body.get("model"),
        prompt_cache_key=body.get("prompt_cache_key"),
        previous_response_id=body.get("previous_response_id"),
        tool_names=tool_names(body),
        # How much account-bound history a turn carried (a count, never the content).
        encrypted_items=sum(1 for i in body.get("input") or [] if isinstance(i, dict) and i.get("encrypted_content")),
        input_types=turns.input_types(body.get("input")),
        compaction_trigger=turns.ends_with_compaction_trigger(body.get("input")),
        reasoning_effort=(body.get("reasoning") or {}).get("effort")
        if isinstance(body.get("reasoning"), dict)
        else None,
        service_tier=body.get("service_tier"),
        max_output_tokens=body.get("max_output_tokens"),
    )


async def responses(request: Request) -> Response:
    state = _state(request)
    entry = state.log.add(request.url.path, "turn", "http", request.headers)
    account = None
    try:
        account = authenticate(state, request.headers)
        entry["account_id"] = account.account_id
        body, size = await read_json(request)
        note_body(entry, body)
        admit(account, body, "turn")
    except Refusal as refusal:
        return refusal_response(refusal, account, entry)
    response_id = turns.new_response_id()
    account.response_ids.append(response_id)
    events = turns.turn_events(body, account.account_id, size, account.deltas, response_id)
    fault = account.take_fault(STREAM_FAULTS)
    entry["status"] = 200
    return EventStream(
        _sse(state, events, fault, entry),
        headers={
            **rate_limit_headers(account, time.time()),
            "cache-control": "no-cache",
            "x-request-id": uuid.uuid4().hex,
            "openai-model": str(body.get("model")),
        },
    )


class EventStream:
    """An SSE response that stops producing as soon as the client goes away (so the log can say so)."""

    def __init__(self, chunks, headers: dict):
        self.chunks = chunks
        self.headers = [(b"content-type", b"text/event-stream")] + [
            (k.encode(), v.encode()) for k, v in headers.items()
        ]

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        producer = asyncio.ensure_future(self._produce(send))
        watcher = asyncio.ensure_future(self._client_gone(receive))
        try:
            await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (producer, watcher):
                task.cancel()
            await asyncio.gather(producer, watcher, return_exceptions=True)
            await self.chunks.aclose()

    async def _produce(self, send) -> None:
        try:
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we were writing
            return

    @staticmethod
    async def _client_gone(receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


async def _sse(state: SimState, events: list[dict], fault: dict | None, entry: dict):
    async for event in paced(events, fault, entry, state.stats):
        yield f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


async def compact(request: Request) -> Response:
    """The legacy compaction endpoint: retired upstream (404) unless `/_sim/config` brings it back."""
    state = _state(request)
    entry = state.log.add(request.url.path, "compact", "http", request.headers)
    if not state.config["compact_endpoint"]:
        caller = state.account_by_token(bearer(request.headers))  # named in the log, so tests can filter by it
        entry.update(account_id=caller.account_id if caller else None, status=404, outcome="rejected")
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    account = None
    try:
        account = authenticate(state, request.headers)
        entry["account_id"] = account.account_id
        body, _ = await read_json(request)
        note_body(entry, body)
        admit(account, body, "compact")
    except Refusal as refusal:
        return refusal_response(refusal, account, entry)
    entry.update(status=200, outcome="completed")
    return JSONResponse(
        {"output": turns.compacted_output(body, account.account_id)}, headers=rate_limit_headers(account, time.time())
    )


async def models(request: Request) -> Response:
    state = _state(request)
    entry = state.log.add(request.url.path, "models", "http", request.headers)
    try:
        account = authenticate(state, request.headers)
    except Refusal as refusal:
        return refusal_response(refusal, None, entry)
    entry.update(account_id=account.account_id, status=200, outcome="completed")
    return JSONResponse(models_response(account.models), headers={"etag": f'W/"{hash(tuple(account.models))}"'})


async def realtime_call(request: Request) -> Response:
    state = _state(request)
    entry = state.log.add(request.url.path, "realtime", "http", request.headers)
    try:
        account = authenticate(state, request.headers)
    except Refusal as refusal:
        return refusal_response(refusal, None, entry)
    entry["account_id"] = account.account_id
    offer = (await request.body()).decode(errors="replace")
    if not offer.startswith("v=0"):
        return refusal_response(Refusal(400, "invalid_offer", "The body must be an SDP offer."), account, entry)
    call_id = "rtc_" + uuid.uuid4().hex
    answer = (
        f"v=0\r\no=- {int(time.time())} 2 IN IP4 127.0.0.1\r\ns=codex-simulator\r\nt=0 0\r\na=sim-call:{call_id}\r\n"
    )
    entry.update(status=201, outcome="completed")
    return Response(
        answer, status_code=201, media_type="application/sdp", headers={"location": f"/v1/realtime/calls/{call_id}"}
    )


async def wham_usage(request: Request) -> Response:
    state = _state(request)
    entry = state.log.add(request.url.path, "usage", "http", request.headers)
    try:
        account = authenticate(state, request.headers)
    except Refusal as refusal:
        return refusal_response(refusal, None, entry)
    entry.update(account_id=account.account_id, status=200, outcome="completed")
    if account.take_fault({"usage_malformed"}) is not None:
        return JSONResponse(["not", "a", "usage", "object"])
    now = time.time()
    spent = account.exhausted_window(now) is not None
    windows = {
        f"{name}_window": {
            "used_percent": w.used_percent,
            "limit_window_seconds": w.minutes * 60,
            "reset_after_seconds": w.reset_after(now),
            "reset_at": int(w.reset_at),
        }
        for name, w in (("primary", account.primary), ("secondary", account.secondary))
    }
    return JSONResponse(
        {
            "user_id": f"user-{account.account_id}",
            "account_id": account.account_id,
            "email": account.email,
            "plan_type": account.plan_type,
            "rate_limit": {"allowed": not spent, "limit_reached": spent, **windows},
            "credits": {"has_credits": False, "unlimited": False, "balance": "0"},
        }
    )
