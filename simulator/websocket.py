"""`GET /backend-api/codex/responses` as a websocket: a prewarm and many turns per connection.

Each `response.create` text frame is answered with one JSON text frame per event (the SSE `data:` objects),
preceded by a `codex.rate_limits` event; refusals become `{"type": "error", "status": N, ...}` frames.
The CLI chains turns with `previous_response_id` and sends only the new items: the connection keeps each
response's conversation so the model answers the whole of it.
"""

import asyncio
import json
import time
from collections import OrderedDict

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import script, turns
from .backend import note_body
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


class Chains:
    """The conversations of a connection's latest responses (resolved input + output), by response id."""

    def __init__(self, limit: int = 50) -> None:
        self._conversations: OrderedDict[str, list] = OrderedDict()
        self._limit = limit  # a long session keeps only its recent responses, as a bounded cache would

    def __contains__(self, response_id) -> bool:
        return response_id in self._conversations

    def resolve(self, frame: dict) -> list:
        """The whole conversation of a `response.create`: its chain's, then its own input."""
        earlier = self._conversations.get(frame.get("previous_response_id"), [])
        return earlier + script.items_of(frame.get("input"))

    def remember(self, response_id: str, conversation: list) -> None:
        self._conversations[response_id] = conversation
        while len(self._conversations) > self._limit:
            self._conversations.popitem(last=False)


async def _serve(websocket: WebSocket, state: SimState, account: Account) -> None:
    chains = Chains()  # responses of this connection: `previous_response_id` may name them
    inbox: asyncio.Queue = asyncio.Queue()
    reader = asyncio.create_task(_read(websocket, inbox))
    try:
        while (text := await inbox.get()) is not None:
            if not await _answer(websocket, state, account, text, chains, reader):
                return
    finally:
        reader.cancel()


async def _answer(
    websocket: WebSocket, state: SimState, account: Account, text: str, chains: Chains, reader: asyncio.Task
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
    turn = asyncio.create_task(_turn(websocket, state, account, frame, len(text), chains))
    # A client that leaves mid-turn ends the turn at once, even during a scripted delay, as the backend would.
    await asyncio.wait({turn, reader}, return_when=asyncio.FIRST_COMPLETED)
    if not turn.done():
        turn.cancel()
        await asyncio.gather(turn, return_exceptions=True)
        return False
    return turn.result()


async def _turn(
    websocket: WebSocket, state: SimState, account: Account, frame: dict, size: int, chains: Chains
) -> bool:
    """Answer one `response.create`; False when the connection is over (client gone or scripted cut)."""
    generate = frame.get("generate", True) is not False
    kind = "turn" if generate else "prewarm"
    entry = state.log.add(websocket.url.path, kind, "websocket", websocket.headers, account_id=account.account_id)
    note_body(entry, frame)
    now = time.time()
    try:
        admit(account, frame, kind, chains)
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
    account.response_ids.append(response_id)
    conversation = chains.resolve(frame)
    events = turns.turn_events(frame, account.account_id, size, account.deltas, response_id, generate, conversation)
    chains.remember(response_id, conversation + events[-1]["response"]["output"])
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
