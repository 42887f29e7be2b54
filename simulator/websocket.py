"""`GET /backend-api/codex/responses` as a websocket: a prewarm and many turns per connection.

Each `response.create` text frame is answered with one JSON text frame per event (the SSE `data:` objects),
preceded by a `codex.rate_limits` event; refusals become `{"type": "error", "status": N, ...}` frames.
"""

import asyncio
import json
import time

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import turns
from .backend import tool_names
from .gate import Refusal, admit, authenticate, rate_limit_headers
from .pacing import paced
from .state import HANG_UP, NO_RATE_LIMITS, STREAM_FAULTS, Account, SimState


async def responses_websocket(websocket: WebSocket) -> None:
    state: SimState = websocket.app.state.sim
    entry = state.log.add(websocket.url.path, "connect", "websocket", websocket.headers)
    try:
        account = authenticate(state, websocket.headers)
    except Refusal as refusal:
        entry.update(status=refusal.status, outcome="rejected", error_code=refusal.code)
        await websocket.send_denial_response(JSONResponse(refusal.body(), status_code=refusal.status))
        return
    entry.update(account_id=account.account_id, status=101, outcome="completed")
    await websocket.accept(
        headers=[(k.encode(), v.encode()) for k, v in rate_limit_headers(account, time.time()).items()]
    )
    state.stats.websocket_opened()
    try:
        await _serve(websocket, state, account)
    finally:
        state.stats.websocket_closed()


async def _read(websocket: WebSocket, inbox: asyncio.Queue) -> None:
    """Client frames into `inbox`, then None once the client has gone."""
    try:
        while True:
            await inbox.put(await websocket.receive_text())
    except (WebSocketDisconnect, RuntimeError):
        await inbox.put(None)


async def _serve(websocket: WebSocket, state: SimState, account: Account) -> None:
    known_ids: set[str] = set()  # responses of this connection: `previous_response_id` may name them
    inbox: asyncio.Queue = asyncio.Queue()
    reader = asyncio.create_task(_read(websocket, inbox))
    try:
        while (text := await inbox.get()) is not None:
            if not await _answer(websocket, state, account, text, known_ids, reader):
                return
    finally:
        reader.cancel()


async def _answer(
    websocket: WebSocket, state: SimState, account: Account, text: str, known_ids: set[str], reader: asyncio.Task
) -> bool:
    """Answer one client frame; False when the connection is over."""
    try:
        frame = json.loads(text)
    except ValueError:
        frame = None
    if not isinstance(frame, dict) or frame.get("type") != "response.create":
        if isinstance(frame, dict) and str(frame.get("type", "")).startswith("response."):
            return True  # e.g. `response.processed` acknowledgements: nothing to answer
        await websocket.send_text(
            json.dumps(
                {
                    "type": "error",
                    "status": 400,
                    "error": {
                        "type": "invalid_request_error",
                        "code": "invalid_frame",
                        "message": "Expected response.create.",
                    },
                }
            )
        )
        return True
    turn = asyncio.create_task(_turn(websocket, state, account, frame, len(text), known_ids))
    # A client that leaves mid-turn ends the turn at once, even during a scripted delay, as the backend would.
    await asyncio.wait({turn, reader}, return_when=asyncio.FIRST_COMPLETED)
    if not turn.done():
        turn.cancel()
        await asyncio.gather(turn, return_exceptions=True)
        return False
    return turn.result()


async def _turn(
    websocket: WebSocket, state: SimState, account: Account, frame: dict, size: int, known_ids: set[str]
) -> bool:
    """Answer one `response.create`; False when the connection is over (client gone or scripted cut)."""
    generate = frame.get("generate", True) is not False
    kind = "turn" if generate else "prewarm"
    entry = state.log.add(
        websocket.url.path,
        kind,
        "websocket",
        websocket.headers,
        account_id=account.account_id,
        model=frame.get("model"),
        prompt_cache_key=frame.get("prompt_cache_key"),
        previous_response_id=frame.get("previous_response_id"),
        tool_names=tool_names(frame),
    )
    now = time.time()
    try:
        admit(account, frame, kind, known_ids)
    except Refusal as refusal:
        entry.update(status=refusal.status, outcome="rejected", error_code=refusal.code)
        await websocket.send_text(
            json.dumps(
                {
                    "type": "error",
                    "status": refusal.status,
                    **refusal.body(),
                    "headers": {**rate_limit_headers(account, now), **refusal.headers},
                }
            )
        )
        return True
    response_id = turns.new_response_id()
    known_ids.add(response_id)
    account.response_ids.append(response_id)
    events = turns.turn_events(frame, account.account_id, size, account.deltas, response_id, generate)
    if account.take_fault({NO_RATE_LIMITS}) is None:
        events.insert(0, turns.rate_limits_event(account, now))
    fault = account.take_fault(STREAM_FAULTS) if generate else None
    hang_up = account.take_fault({HANG_UP})
    entry["status"] = 200
    if not await _send_events(websocket, state, events, fault, entry):
        return False
    if hang_up:
        # As the backend does with an idle (or too old) connection: closed cleanly between turns.
        await websocket.close(code=1000)
        return False
    return True


async def _send_events(
    websocket: WebSocket, state: SimState, events: list[dict], fault: dict | None, entry: dict
) -> bool:
    stream = paced(events, fault, entry, state.stats)
    try:
        async for event in stream:
            await websocket.send_text(json.dumps(event, separators=(",", ":")))
    except (WebSocketDisconnect, OSError, RuntimeError):
        return False
    finally:
        await stream.aclose()
    if entry["outcome"] == "cut":
        await websocket.close(code=1011)
        return False
    return True
