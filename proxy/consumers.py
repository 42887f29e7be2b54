"""The backend websocket: one upstream websocket per client connection, frames relayed both ways.

Each `response.create` is a turn with the same admission, routing, failover and accounting as the
HTTP route. The account is chosen on the first turn and kept for the connection; a turn that fails
before its first upstream event may move the connection to another account.
"""

import asyncio
import json
import logging
import time

import websockets
from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from . import limits, metrics, routing
from .accounting import Turn, finish, mark_failure
from .auth import authenticate
from .errors import PoolerError, UpstreamUnavailable
from .quota import from_headers, from_usage_payload
from .sse import TERMINAL, observe_event
from .tokens import RefreshFailed, refresh_account_async
from .turns import begin, check_model, final_error, fresh_account, new_request_id
from .upstream import UpstreamFailure, failure_from_response, upstream_headers

log = logging.getLogger("pooler.websocket")
_admit = sync_to_async(limits.admit)
_mark_failure = sync_to_async(mark_failure)


def _ws_url(account) -> str:
    base = account.upstream_base_url
    return ("wss://" + base[8:] if base.startswith("https://") else "ws://" + base.removeprefix("http://")) + "/responses"


def error_frame(error: PoolerError) -> str:
    return json.dumps({"type": "error", "status": error.status, **error.body()})


class _TurnState:
    """Per-turn bookkeeping the relay task and the accounting share."""

    def __init__(self, turn: Turn):
        self.turn = turn
        self.usage = self.response = self.terminal = self.error = self.rate_limits = None
        self.error_code = ""


class ResponsesConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.headers = {k.decode("latin1").lower(): v.decode("latin1") for k, v in self.scope["headers"]}
        self.upstream = None
        self.account = None
        self.plan = None
        self.handshake_quota = {}
        self.relay_task: asyncio.Task | None = None
        self.current: _TurnState | None = None
        try:
            self.key = await authenticate(self.headers)
        except PoolerError as error:
            # Refused before accept: the server answers the upgrade with an HTTP denial (403 under Daphne);
            # the Codex CLI then falls back to HTTP, where the same key gets a clear 401 message.
            log.info("websocket refused: %s", error.message)
            await self.close()
            return
        client = self.scope.get("client") or [None]
        self.client_ip = client[0]
        await self.accept()
        self.counted = True
        metrics.OPEN_WEBSOCKETS.inc()

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is None:
            return await self.send(text_data=error_frame(PoolerError("Binary frames are not supported.")))
        try:
            frame = json.loads(text_data)
        except ValueError:
            return await self.send(text_data=error_frame(PoolerError("Frame is not valid JSON.", code="invalid_json")))
        if not isinstance(frame, dict) or frame.get("type") != "response.create":
            # Other client frames (e.g. cancellations) belong to the upstream conversation: pass them on.
            if self.upstream is not None:
                await self.upstream.send(text_data)
            return
        if self.relay_task and not self.relay_task.done():
            await self.relay_task  # one turn at a time on a connection, as the backend requires
        await self._turn(text_data, frame)

    async def _turn(self, text: str, frame: dict) -> None:
        model = frame.get("model")
        turn = Turn(request_id=new_request_id(), route="codex.responses", key=self.key, transport="websocket",
                    model=model if isinstance(model, str) else "", is_prewarm=frame.get("generate") is False,
                    client_ip=self.client_ip)
        session = routing.sticky_key(self.headers, frame)
        try:
            if not turn.model:
                raise PoolerError("Missing required parameter: 'model'.", code="missing_required_parameter",
                                  param="model")
            if self.account is None:
                plan = await begin(turn, self.key, session)
                candidates = plan.accounts[: settings.POOLER_MAX_ATTEMPTS]
            else:
                check_model(self.key, turn.model)
                turn.slot_id = await _admit(self.key, turn.request_id)
                turn.plan = self.plan
                candidates = [self.account]
        except PoolerError as error:
            if not turn.finished:
                turn.status_code, turn.outcome, turn.error_code = error.status, "rejected", error.code or ""
                await finish(turn)
            await self.send(text_data=error_frame(error))
            return
        state = _TurnState(turn)
        failures: list[UpstreamFailure] = []
        for account in candidates:
            try:
                first = await self._attempt(account, text)
            except UpstreamFailure as failure:
                turn.attempt(account, failure.summary(), failure.status)
                if failure.client_fault:
                    turn.account, turn.status_code, turn.outcome = account, failure.status, "client_error"
                    turn.error_code = failure.code
                    await finish(turn)
                    await self.send(text_data=failure.body.decode(errors="replace"))
                    return
                await _mark_failure(account, failure)
                failures.append(failure)
                await self._close_upstream()
                continue
            turn.attempt(self.account, "ok", 200)
            turn.account, turn.status_code, turn.first_byte_at = self.account, 200, time.monotonic()
            if turn.plan is not None:
                self.plan = turn.plan
            else:
                turn.plan = self.plan
            self.current = state
            self._observe(state, first)
            await self.send(text_data=first)
            if state.terminal:
                await self._end_turn(state, "ok" if state.terminal == "response.completed" else "upstream_error")
            else:
                self.relay_task = asyncio.create_task(self._relay(state))
            return
        error = final_error(failures) if failures else UpstreamUnavailable("No upstream account could be tried.")
        turn.status_code, turn.outcome, turn.error_code = error.status, "upstream_error", error.code or ""
        await finish(turn)
        await self.send(text_data=error_frame(error))

    async def _attempt(self, account, text: str) -> str:
        """Send the turn on this account's upstream websocket and wait for its first event."""
        if self.upstream is None or self.account.id != account.id:
            await self._close_upstream()
            await self._connect(account)
        try:
            await self.upstream.send(text)
            first = await asyncio.wait_for(self.upstream.recv(), settings.POOLER_FIRST_BYTE_TIMEOUT)
        except TimeoutError:
            raise UpstreamFailure("timeout", message="no first event in time") from None
        except websockets.ConnectionClosed:
            raise UpstreamFailure("closed", message="upstream websocket closed before the first event") from None
        if isinstance(first, bytes):
            first = first.decode(errors="replace")
        try:
            event = json.loads(first)
        except ValueError:
            return first
        if isinstance(event, dict) and event.get("type") == "error" and isinstance(event.get("status"), int):
            raise failure_from_response(event["status"], event.get("headers") or {}, first.encode())
        return first

    async def _connect(self, account) -> None:
        account = await fresh_account(account)
        for attempt in range(2):
            try:
                self.upstream = await websockets.connect(
                    _ws_url(account), additional_headers=upstream_headers(self.headers, account),
                    open_timeout=settings.POOLER_CONNECT_TIMEOUT, max_size=settings.POOLER_MAX_BODY_BYTES,
                    ping_interval=20, ping_timeout=60, user_agent_header=None,
                )
            except websockets.InvalidStatus as exc:
                status, body = exc.response.status_code, exc.response.body or b""
                if status == 401 and attempt == 0:
                    try:
                        account = await refresh_account_async(account.id, seen_access_token=account.access_token)
                    except RefreshFailed as failure:
                        raise UpstreamFailure("auth", 401, failure.reason, "token refresh failed") from None
                    continue
                raise failure_from_response(status, exc.response.headers, body) from None
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                raise UpstreamFailure("connect", message=type(exc).__name__) from None
            self.account = account
            self.handshake_quota = from_headers(self.upstream.response.headers, timezone.now())
            return

    async def _relay(self, state: _TurnState) -> None:
        """Upstream → client, frame by frame, until the turn's terminal event."""
        outcome = "upstream_cut"
        try:
            async for message in self.upstream:
                text = message if isinstance(message, str) else message.decode(errors="replace")
                self._observe(state, text)
                await self.send(text_data=text)
                if state.terminal or state.error_code:
                    outcome = "ok" if state.terminal == "response.completed" else "upstream_error"
                    break
        except websockets.ConnectionClosed:
            pass
        except asyncio.CancelledError:
            outcome = "client_closed"
            raise
        finally:
            await self._end_turn(state, outcome)
            if outcome == "upstream_cut":
                # The upstream went away mid-turn: close the client too, so the CLI reconnects and retries.
                await self._close_upstream()
                await self.close(code=1011)

    def _observe(self, state: _TurnState, text: str) -> None:
        if '"type"' not in text:
            return
        try:
            event = json.loads(text)
        except ValueError:
            return
        if isinstance(event, dict):
            observe_event(state, event)
            if event.get("type") in TERMINAL:
                state.terminal = event["type"]

    async def _end_turn(self, state: _TurnState, outcome: str) -> None:
        turn = state.turn
        if turn.finished:
            return
        turn.outcome, turn.usage = outcome, state.usage
        turn.error_code = state.error_code or turn.error_code
        turn.quota = dict(self.handshake_quota)
        if state.rate_limits:
            turn.quota.update(from_usage_payload(state.rate_limits, timezone.now()))
        await finish(turn)
        if self.current is state:
            self.current = None

    async def _close_upstream(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            await upstream.close()

    async def disconnect(self, code):
        if getattr(self, "counted", False):
            self.counted = False
            metrics.OPEN_WEBSOCKETS.dec()
        if self.relay_task and not self.relay_task.done():
            self.relay_task.cancel()
            try:
                await self.relay_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the turn is accounted in _relay
                pass
        await self._close_upstream()

