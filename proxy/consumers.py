"""The backend websocket: one upstream websocket per client connection, frames relayed both ways.

Each `response.create` is a turn with the same admission, routing, failover and accounting as the
HTTP route. The account is chosen on the first turn and kept for the connection. A turn that fails
before its first upstream event may move the connection to another account: the turn is then re-sent
with the full history the client would send over HTTP, minus what only the old account can read.
A chain the pooler cannot rebuild is refused as the backend would (`previous_response_not_found`), on which
the Codex CLI re-sends the full request.
"""

import asyncio
import contextlib
import json
import logging
import time

import websockets
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone
from websockets.protocol import State

from accounts.networks import client_address
from accounts.quota import from_headers, from_usage_payload
from accounts.tokens import RefreshFailed, refresh_account_async

from . import db, fair_share, metrics, migration, pool_quota, routing
from .accounting import Turn, finish
from .auth import authenticate, bearer_token, check_address
from .body import require_model
from .dbthread import DATABASE_DOWN, note_outage
from .errors import AccountsBusy, DatabaseUnavailable, PoolerError
from .sse import observe_event, watched_in_frame
from .turns import begin, claim, final_error, fresh_account, new_request_id, recheck, refresh_failure, replan
from .upstream import UpstreamFailure, client_headers, failure_from_response, upstream_headers

log = logging.getLogger("pooler.websocket")


def _ws_url(account) -> str:
    base = account.upstream_base_url
    scheme, _, rest = base.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/responses"


async def _refreshed(account):
    """The account with a new access token, after the backend refused the one it has."""
    try:
        return await refresh_account_async(account.id, seen_access_token=account.access_token)
    except RefreshFailed as failure:
        raise refresh_failure(failure) from None


def _whole(frame: dict, full_input: list) -> dict:
    """The frame as a fresh upstream needs it: the whole history, no chain."""
    return {**{k: v for k, v in frame.items() if k != "previous_response_id"}, "input": full_input}


def _stripped(turn: Turn, whole: dict) -> dict:
    """The frame without another account's history; a newly dropped compaction is the turn's lost context."""
    turn.context_lost = migration.loses_context(whole, turn.plan.foreign_items)
    return migration.strip_account_bound(whole)


def error_frame(error: PoolerError) -> str:
    """The backend's error frame: the CLI reads `status` and `headers` as an HTTP answer's (Retry-After)."""
    frame = {"type": "error", "status": error.status, **error.body()}
    if error.retry_after is not None:
        frame["headers"] = {"retry-after": error.response_headers()["Retry-After"]}
    return json.dumps(frame)


class _TurnState:
    """What the relay sees of one turn: usage, terminal event, errors, the final response."""

    def __init__(self, turn: Turn, full_input: list):
        self.turn, self.full_input = turn, full_input
        self.usage = self.response = self.terminal = self.error = self.rate_limits = None
        self.error_code = ""


class ResponsesConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.headers = {k.decode("latin1").lower(): v.decode("latin1") for k, v in self.scope["headers"]}
        self.upstream = self.account = self.plan = self.turn_task = None
        self.handshake_quota: dict = {}
        # The conversation as the client would send it over HTTP, kept in memory only, to re-send it whole
        # when the connection moves to another account (previous_response_id does not travel).
        self.history: list = []
        self.history_account_id: int | None = None
        self.last_response_id: str | None = None
        self.counted = False
        self.prewarm_move = None
        self.client_ip = client_address((self.scope.get("client") or [None])[0], self.headers.get("x-forwarded-for"))
        try:
            self.key = await authenticate(self.headers)
            self.token = bearer_token(self.headers)  # each turn reads its key anew (turns.begin)
            await self._check_address()
            # Read now, so the rate-limit events of this connection's turns are rewritten without a wait.
            await pool_quota.current(self.key.pool)
        except DATABASE_DOWN as down:
            # Refused before accept, like a wrong key: the Codex CLI falls back to HTTP, which answers 503.
            note_outage(down)
            await self.close()
            return
        except PoolerError as error:
            # Refused before accept: the server answers the upgrade with an HTTP denial (403 under Daphne);
            # the Codex CLI then falls back to HTTP, where the same key gets a clear 401 message.
            log.info("websocket refused: %s", error.message)
            await self.close()
            return
        # No quota headers on the handshake: the CLI reads a websocket's rate limits from its events only.
        await self.accept()
        self.counted = True
        metrics.OPEN_WEBSOCKETS.inc()

    async def _check_address(self) -> None:
        """Refuse a caller outside the key's networks, with a RequestLog row saying why."""
        try:
            check_address(self.key, self.client_ip)
        except PoolerError as error:
            turn = Turn(
                request_id=new_request_id(),
                route="codex.responses",
                key=self.key,
                transport="websocket",
                client_ip=self.client_ip,
            )
            await turn.settle(error.status, "rejected", error.code)
            raise

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
                with contextlib.suppress(websockets.ConnectionClosed):  # gone between turns: the next reopens it
                    await self.upstream.send(text_data)
            return
        # Each turn runs in a task, so a disconnect is seen (and cancels it) while it waits on the upstream.
        self.turn_task = asyncio.create_task(self._turn(text_data, frame, after=self.turn_task))

    def _full_input(self, frame: dict) -> list:
        items = frame.get("input") if isinstance(frame.get("input"), list) else []
        if frame.get("previous_response_id") and self._knows_chain(frame):
            return self.history + items
        return items

    def _knows_chain(self, frame: dict) -> bool:
        """Whether the pooler can rebuild the conversation behind the frame's `previous_response_id`."""
        previous = frame.get("previous_response_id")
        return not previous or previous == self.last_response_id

    @staticmethod
    def _chain_not_found(frame: dict) -> UpstreamFailure:
        """The backend's own refusal of a chain a fresh upstream cannot know. Sending only the new input would
        silently drop the conversation; this answer makes the Codex CLI retry with the full request instead."""
        error = PoolerError(
            f"Previous response with id '{frame['previous_response_id']}' not found.",
            code="previous_response_not_found",
            param="previous_response_id",
        )
        return UpstreamFailure("chain", error.status, error.code, error.message, body=error_frame(error).encode())

    def _frame_for(self, turn: Turn, account, text: str, frame: dict, full_input: list, fresh_connection: bool) -> str:
        """The client's frame as it must reach `account`: untouched on the connection that knows the chain."""
        moved = self.history_account_id is not None and self.history_account_id != account.id
        if fresh_connection and moved:
            return json.dumps(_stripped(turn, _whole(frame, full_input)))
        whole = _whole(frame, full_input) if fresh_connection else frame
        own = turn.plan.owner is not None and turn.plan.owner.id == account.id
        # A session that moved here earlier still carries the old account's items at its start: those of them
        # this frame sends (a chain, e.g. from the prewarm that moved it, already holds the ones before).
        before = turn.plan.foreign_items - (len(full_input) - migration.input_count(whole))
        if own and before > 0:
            stripped = migration.strip_account_bound(whole, before=before)
            if whole.get("previous_response_id"):
                stripped["previous_response_id"] = whole["previous_response_id"]
            return json.dumps(stripped)
        return json.dumps(whole) if fresh_connection else text

    async def _admit_turn(self, turn: Turn, session: str | None, frame: dict) -> list:
        """The key's policy on the `frame` (changed in place), admission for this turn; the candidate accounts
        (the connection's own account when it has one)."""
        require_model({"model": turn.model})
        # A chained turn's input is only its end: the history it continues counts toward the key's input cap.
        earlier = self.history if frame.get("previous_response_id") and self._knows_chain(frame) else None
        # A compaction is planned like a new turn: it may be better made on another account (routing.py).
        if self.account is None or turn.compaction:
            plan = await begin(turn, session, self.token, body=frame, earlier_input=earlier)
            return plan.accounts[: settings.POOLER_MAX_ATTEMPTS]
        if await recheck(turn, self.token, self.account.id, frame, earlier) is None:
            # Paused, out of quota or needing a login since the last turn: chosen again, like a new turn.
            plan = await begin(turn, session, self.token)
            return plan.accounts[: settings.POOLER_MAX_ATTEMPTS]
        turn.plan = routing.Plan(
            accounts=[self.account],
            session_hash=self.plan.session_hash if self.plan else None,
            pinned_until=self.plan.pinned_until if self.plan else None,
            owner=self.account,
            # A session compacted on this connection is held from now on where the pool holds compacted ones.
            hold=bool(self.plan and self.plan.hold)
            or (turn.compacted and routing.holds(self.key.pool.session_migration, compacted=True)),
            foreign_items=self.plan.foreign_items if self.plan else 0,
        )
        return [self.account]

    async def _turn(self, text: str, frame: dict, after: asyncio.Task | None) -> None:
        """One turn, accounted however it ends: served, refused, failed, cut short by a disconnect, or crashed."""
        if after is not None:
            # One turn at a time on a connection, as the backend requires; a disconnect cancels both.
            await asyncio.gather(after, return_exceptions=True)
        model = frame.get("model")
        full_input = self._full_input(frame)
        whole = {"input": full_input}
        turn = Turn(
            request_id=new_request_id(),
            route="codex.responses",
            key=self.key,
            transport="websocket",
            model=model if isinstance(model, str) else "",
            is_prewarm=frame.get("generate") is False,
            client_ip=self.client_ip,
            input_items=len(full_input),
            compaction=migration.is_compaction_turn(whole),
            compacted=migration.compactions(whole) > 0,
        )
        try:
            await self._serve_turn(turn, text, frame, full_input)
        except asyncio.CancelledError:
            # The client left (even before the first upstream event): close the upstream, free the slot.
            await self._close_upstream()
            if not turn.finished:
                await turn.settle(499, "client_closed")
            raise
        except DATABASE_DOWN as down:
            note_outage(down)
            if not turn.finished:
                error = DatabaseUnavailable()
                await self.send(text_data=error_frame(error))
                await turn.settle(error.status, "database_unavailable", error.code)
        except Exception:
            log.exception("websocket turn %s failed", turn.request_id)
            # The upstream is in an unknown state: the next turn opens a fresh one (with the full history).
            await self._close_upstream()
            if not turn.finished:
                error = PoolerError(
                    "The pooler hit an internal error.", status=500, code="internal_error", type="server_error"
                )
                await self.send(text_data=error_frame(error))
                await turn.settle(error.status, "internal_error", error.code)

    async def _serve_turn(self, turn: Turn, text: str, frame: dict, full_input: list) -> None:
        session = routing.sticky_key(self.headers, frame)
        try:
            candidates = await self._admit_turn(turn, session, frame)
        except PoolerError as error:
            await self.send(text_data=error_frame(error))
            if not turn.finished:
                await turn.settle(error.status, "rejected", error.code)
            return
        if turn.rewritten:
            text = json.dumps(frame)  # the key's policy changed the frame: sent as changed
        if self.history_account_id is None and turn.plan.owner is not None:
            self.history_account_id = turn.plan.owner.id  # a resumed session: its history is the owner's
        state = _TurnState(turn, full_input)
        failures: list[UpstreamFailure] = []
        tried: set[int] = set()
        index = 0
        queue = fair_share.Queue(turn)
        try:
            while True:
                while index < len(candidates) and len(tried) < settings.POOLER_MAX_ATTEMPTS:
                    account, index = candidates[index], index + 1
                    tried.add(account.id)
                    if not await claim(turn, self.key, account):
                        if not queue.waiting:
                            turn.attempt(account, "at_capacity")
                        continue
                    await queue.leave()
                    try:
                        first = await self._attempt(turn, account, text, frame, state.full_input)
                    except UpstreamFailure as failure:
                        turn.attempt(account, failure.summary(), failure.status)
                        if failure.client_fault:
                            await self._pass_through(turn, account, failure)
                            return
                        await db.mark_failure(account, failure)
                        failures.append(failure)
                        await self._close_upstream()
                        if turn.plan.hold and turn.plan.owner and turn.plan.owner.id == account.id:
                            error = await db.held_error(account, failure.code or failure.kind)
                            return await self._refuse(turn, error)
                        if index >= len(candidates):
                            candidates += await self._more_candidates(turn, session, tried)
                        continue
                    await self._started(state, account, first, failures)
                    return
                # Every account at its cap: wait for a slot (fair_share.py), then the pool's accounts anew.
                if failures or not await queue.wait():
                    break
                try:
                    candidates, index, tried = await replan(turn, session), 0, set()
                except PoolerError as error:
                    return await self._refuse(turn, error)
        finally:
            await queue.leave()
        await self._refuse(turn, final_error(failures) if failures else queue.refusal())

    async def _more_candidates(self, turn: Turn, session: str | None, tried: set[int]) -> list:
        """After the connection's account failed a later turn: the pool's other eligible accounts."""
        try:
            plan = await db.plan_turn(
                self.key.pool, turn.model, session, compacted=turn.compacted, compaction=turn.compaction
            )
        except PoolerError:
            return []
        return [a for a in plan.accounts if a.id not in tried]

    async def _started(self, state: _TurnState, account, first: str, failures: list) -> None:
        turn = state.turn
        turn.attempt(account, "ok", 200)
        turn.account, turn.status_code, turn.first_byte_at = account, 200, time.monotonic()
        turn.note_migration(account, failures)
        # A move made by the prewarm is the session's move: show it on the first real turn too.
        if turn.is_prewarm and turn.migrated_from:
            self.prewarm_move = (turn.migrated_from, turn.migration_reason, turn.context_lost)
        elif not turn.is_prewarm and self.prewarm_move:
            if turn.migrated_from is None:
                turn.migrated_from, turn.migration_reason, lost = self.prewarm_move
                turn.context_lost = turn.context_lost or lost
            self.prewarm_move = None
        if self.plan is None:
            self.plan = turn.plan
        await self.send(text_data=self._relayed(state, first))
        if state.terminal:
            await self._end_turn(state, "ok" if state.terminal == "response.completed" else "upstream_error")
        else:
            await self._relay(state)

    # The client hears before the turn's row is written: its answer must not wait on the write, nor be lost
    # with it if the write fails.
    async def _pass_through(self, turn: Turn, account, failure: UpstreamFailure) -> None:
        """A 4xx that is the client's fault reaches the client as the backend sent it; no penalty."""
        await self.send(text_data=self._with_pool_quota(failure.body.decode(errors="replace")))
        await turn.settle(failure.status, "client_error", failure.code, account)

    def _with_pool_quota(self, text: str) -> str:
        """An upstream error frame whose `headers` (read by the CLI as an HTTP answer's) say the pool's quota
        rather than the account's, as every answer does."""
        try:
            frame = json.loads(text)
        except ValueError:
            return text
        if not isinstance(frame, dict) or not isinstance(frame.get("headers"), dict):
            return text
        view = pool_quota.latest(self.key.pool)
        frame["headers"] = client_headers(frame["headers"], view.headers() if view is not None else {})
        return json.dumps(frame)

    async def _refuse(self, turn: Turn, error: PoolerError) -> None:
        await self.send(text_data=error_frame(error))
        # No upstream failed a turn refused after its wait for a slot, as on the HTTP route.
        outcome = "rejected" if error.code == AccountsBusy.code else "upstream_error"
        await turn.settle(error.status, outcome, error.code)

    async def _attempt(
        self, turn: Turn, account, text: str, frame: dict, full_input: list, *, again: bool = True
    ) -> str:
        """Send the turn on this account's upstream websocket and wait for its first event.

        A connection the account lost (closed between turns, token refused) is reopened once (`again`) on the
        same account, with the full history: losing a connection is not a reason to move the session."""
        reused = self.upstream is not None and self.account.id == account.id and self.upstream.state is State.OPEN
        if not reused and not self._knows_chain(frame):
            raise self._chain_not_found(frame)
        if not reused:
            await self._close_upstream()
            await self._connect(account)
        outgoing = self._frame_for(turn, account, text, frame, full_input, fresh_connection=not reused)
        try:
            first = await self._send_and_wait(outgoing)
        except UpstreamFailure as failure:
            if again and reused and failure.kind == "closed":
                # Closed as the turn went out (an idle close not seen yet): once more on a fresh connection.
                return await self._reopen(turn, account, text, frame, full_input)
            raise
        failure = self._error_in(first)
        if failure and failure.code in migration.ACCOUNT_BOUND_ERRORS and self._knows_chain(frame):
            # The account cannot read this history (a pin that expired, a chain it never saw): send it whole
            # and stripped, once.
            turn.found_foreign = len(full_input)
            first = await self._send_and_wait(json.dumps(_stripped(turn, _whole(frame, full_input))))
            failure = self._error_in(first)
        if failure and failure.status == 401 and again:
            # The token expired or was revoked while connected: refresh it and reconnect, like the HTTP route.
            return await self._reopen(turn, await _refreshed(self.account), text, frame, full_input)
        if failure:
            raise failure
        return first

    async def _reopen(self, turn: Turn, account, text: str, frame: dict, full_input: list) -> str:
        await self._close_upstream()
        return await self._attempt(turn, account, text, frame, full_input, again=False)

    async def _send_and_wait(self, text: str) -> str:
        try:
            await self.upstream.send(text)
            first = await asyncio.wait_for(self.upstream.recv(), settings.POOLER_FIRST_BYTE_TIMEOUT)
        except TimeoutError:
            raise UpstreamFailure("timeout", message="no first event in time") from None
        except websockets.ConnectionClosed:
            raise UpstreamFailure("closed", message="upstream websocket closed before the first event") from None
        return first if isinstance(first, str) else first.decode(errors="replace")

    @staticmethod
    def _error_in(first: str) -> UpstreamFailure | None:
        """An error frame that answers a turn before any event: the backend's refusal of the turn."""
        if '"error"' not in first:
            return None
        try:
            event = json.loads(first)
        except ValueError:
            return None
        if isinstance(event, dict) and event.get("type") == "error" and isinstance(event.get("status"), int):
            return failure_from_response(event["status"], event.get("headers") or {}, first.encode())
        return None

    async def _connect(self, account) -> None:
        account = await fresh_account(account)
        for attempt in range(2):
            try:
                self.upstream = await websockets.connect(
                    _ws_url(account),
                    additional_headers=upstream_headers(self.headers, account),
                    open_timeout=settings.POOLER_CONNECT_TIMEOUT,
                    max_size=settings.POOLER_MAX_BODY_BYTES,
                    ping_interval=20,
                    ping_timeout=60,
                    user_agent_header=None,
                    # Uncompressed, as the HTTP route asks for (accept-encoding: identity): a deflate context
                    # pair held ~50 KiB per open connection here, and costs CPU on every relayed frame.
                    compression=None,
                )
            except websockets.InvalidStatus as exc:
                status, body = exc.response.status_code, exc.response.body or b""
                if status == 401 and attempt == 0:
                    account = await _refreshed(account)
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
                await self.send(text_data=self._relayed(state, text))
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

    def _relayed(self, state: _TurnState, text: str) -> str:
        """An upstream frame as the client gets it, once the turn's accounting has seen it: as it came, but for
        `codex.rate_limits`, which says the pool's quota instead of the account's (the account's own figures
        are kept for its snapshot, see _end_turn)."""
        if watched_in_frame(text) is None:
            return text  # a delta or other event the turn's accounting does not read: passed on unparsed
        try:
            event = json.loads(text)
        except ValueError:
            return text
        if not isinstance(event, dict):
            return text
        observe_event(state, event)
        if event.get("type") == "codex.rate_limits" and (view := pool_quota.latest(self.key.pool)) is not None:
            return json.dumps(view.rate_limits_event(event), separators=(",", ":"))
        return text

    async def _end_turn(self, state: _TurnState, outcome: str) -> None:
        turn = state.turn
        if outcome == "ok" and isinstance(state.response, dict):
            output = state.response.get("output")
            self.history = state.full_input + (output if isinstance(output, list) else [])
            self.history_account_id = turn.account.id if turn.account else None
            self.last_response_id = state.response.get("id")
        if turn.finished:
            return
        turn.outcome, turn.usage = outcome, state.usage
        turn.error_code = state.error_code or turn.error_code
        # The handshake's headers are as old as the upstream connection: only its first turn may use them.
        # Later turns carry codex.rate_limits events, and must not undo a newer snapshot (e.g. a usage limit).
        turn.quota, self.handshake_quota = self.handshake_quota, {}
        if state.rate_limits:
            turn.quota.update(from_usage_payload(state.rate_limits, timezone.now()))
        await finish(turn)

    async def _close_upstream(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            await upstream.close()

    async def disconnect(self, code):
        if self.counted:
            self.counted = False
            metrics.OPEN_WEBSOCKETS.dec()
        if self.turn_task is not None:
            self.turn_task.cancel()  # the turn accounts itself as client_closed and closes its upstream
            await asyncio.gather(self.turn_task, return_exceptions=True)
        await self._close_upstream()
