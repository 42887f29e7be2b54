"""One turn over HTTP: admit, choose, forward with failover before the first byte, stream, account."""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone

from accounts.models import PoolApiKey, UpstreamAccount
from accounts.tokens import RefreshFailed, refresh_account_async

from . import db, fair_share, key_policy, limits, loop_db, metrics, migration, pool_quota, routing, turn_reads
from .accounting import Turn, finish, observe_quota
from .auth import check_address, lookup_key, lookup_key_on_loop
from .dbthread import DATABASE_DOWN, note_outage, run_to_end
from .errors import (
    AccountsBusy,
    DatabaseUnavailable,
    Forbidden,
    PoolerError,
    RateLimited,
    Unauthorized,
    UpstreamUnavailable,
    UsageLimitReached,
    error_response,
)
from .relay import coalesced
from .sse import SseWatcher
from .upstream import UpstreamFailure, client_headers, failure_from_response, send_turn, upstream_headers
from .upstream import close as close_upstream  # `close` alone would read as closing the turn

_MAX_ERROR_BODY = 64 * 1024


def new_request_id() -> str:
    return uuid.uuid4().hex


def check_model(key: PoolApiKey, model: str) -> None:
    if not key.allows_model(model):
        raise Forbidden(f"Model {model!r} is not allowed for this key or pool.", param="model")


def _apply_policy(turn: Turn, body: dict | None, earlier_input: list | None) -> None:
    """The key's policy on the turn's body (see key_policy.py), then its model checked."""
    if body is not None:
        turn.rewritten = key_policy.apply(turn.key, turn, body, earlier_input)
    if turn.model:
        check_model(turn.key, turn.model)


def _prepare(
    turn: Turn,
    token: str,
    session: str | None,
    body: dict | None = None,
    earlier_input: list | None = None,
    key: PoolApiKey | None = None,
) -> routing.Plan:
    """Everything before the first byte that reads the database, in one trip to a db thread (every hop to a
    thread waits for a core under load): the key (unless read just now on the loop), its policy applied to the
    `body` (which replaces a forced model before routing), its limits and budgets, the accounts."""
    turn.key = key = key or lookup_key(token)
    check_address(key, turn.client_ip)
    _apply_policy(turn, body, earlier_input)
    # The slot is on the turn before planning can fail, so finish() frees it whatever happens next.
    turn.slot_id = limits.admit(key, turn.request_id, counted=not turn.is_prewarm)
    return _plan_or_wait(turn, session)


def _plan_or_wait(turn: Turn, session: str | None) -> routing.Plan:
    try:
        turn.plan = _plan(turn, session)
    except AccountsBusy:
        turn.plan = routing.Plan(accounts=[])  # the turn waits for a slot (fair_share.py), then is planned anew
    return turn.plan


async def _prepare_on_loop(
    turn: Turn, token: str, session: str | None, body: dict | None, earlier_input: list | None
) -> routing.Plan:
    """_prepare with a plain turn's reads on the event loop (loop_db.py), for a key that admit() has nothing to
    do for; any other key goes on to _prepare on a database thread, as read here. A plan the loop cannot make
    (routing.plan_on_loop) is made on a database thread."""
    key = await lookup_key_on_loop(token)
    if not limits.admits_freely(key):
        return await run_to_end(_prepare, turn, token, session, body, earlier_input, key)
    turn.key = key
    check_address(key, turn.client_ip)
    _apply_policy(turn, body, earlier_input)
    now = timezone.now()
    plan = await routing.plan_on_loop(
        key.pool, turn.model, session, now, compacted=turn.compacted, compaction=turn.compaction
    )
    turn.plan = plan if plan is not None else await run_to_end(_plan_or_wait, turn, session)
    return turn.plan


def _plan(turn: Turn, session: str | None) -> routing.Plan:
    return routing.plan_turn(turn.key.pool, turn.model, session, compacted=turn.compacted, compaction=turn.compaction)


def _recheck(
    turn: Turn, token: str, account_id: int, body: dict, earlier_input: list | None, key: PoolApiKey | None = None
) -> UpstreamAccount | None:
    """A later turn on an open websocket, in one database step: its key as it is now (see _prepare), the key's
    policy on its `body`, the connection's account as it is now, and the key's admission when the account can
    still serve the turn (None when it cannot: planned anew)."""
    turn.key = key or lookup_key(token)
    _apply_policy(turn, body, earlier_input)
    current = routing.current_account(account_id)
    if current is None or current.ineligibility(turn.model, timezone.now()):
        return None
    turn.slot_id = limits.admit(turn.key, turn.request_id, counted=not turn.is_prewarm)
    # No plan reads the pool's snapshot for this turn: read here when stale, for the quota the turn shows.
    routing.pool_snapshot(turn.key.pool)
    return current


async def begin(
    turn: Turn, session: str, token: str, body: dict | None = None, earlier_input: list | None = None
) -> routing.Plan:
    """Authentication of the bearer `token`, the key's policy on `body`, admission and the account choice.

    Every turn reads its key, an open websocket's too: a key revoked, paused, expired or rotated past its grace
    since the connection opened refuses the connection's next turn (one indexed read, in the step the turn
    makes anyway). A refusal of a known key is accounted (no upstream attempt) and raised; a refused token is
    only raised (on a websocket, the connection's key is the turn's, and the consumer accounts it).
    """
    try:
        if loop_db.available():
            return await _prepare_on_loop(turn, token, session, body, earlier_input)
        return await run_to_end(_prepare, turn, token, session, body, earlier_input)
    except Unauthorized:
        raise
    except PoolerError as error:
        if turn.key is None:  # a token refused for another reason (a paused key): nothing to account it to
            raise
        await turn.settle(error.status, "rejected", error.code)
        raise


async def recheck(
    turn: Turn, token: str, account_id: int, body: dict, earlier_input: list | None
) -> UpstreamAccount | None:
    """See _recheck (a refusal of the key, its policy or limits is raised, for the caller to account)."""
    if loop_db.available():
        return await _recheck_on_loop(turn, token, account_id, body, earlier_input)
    return await run_to_end(_recheck, turn, token, account_id, body, earlier_input)


async def _recheck_on_loop(turn: Turn, token: str, account_id: int, body: dict, earlier_input: list | None):
    """_recheck with its reads on the event loop (loop_db.py), for a key that admit() has nothing to do for;
    any other key goes on to _recheck on a database thread, as read here."""
    key = await lookup_key_on_loop(token)
    if not limits.admits_freely(key):
        return await run_to_end(_recheck, turn, token, account_id, body, earlier_input, key)
    turn.key = key
    _apply_policy(turn, body, earlier_input)
    current = (await turn_reads.accounts_on_loop([account_id])).get(account_id)
    if current is None or current.ineligibility(turn.model, timezone.now()):
        return None
    if routing.fresh_snapshot(key.pool) is None:  # read for the quota the turn shows, as _recheck does
        await run_to_end(routing.pool_snapshot, key.pool)
    return current


async def replan(turn: Turn, session: str | None) -> list[UpstreamAccount]:
    """The accounts to try for a turn that waited for a slot ([] while every one is still at its cap)."""
    try:
        turn.plan = await run_to_end(_plan, turn, session)
    except AccountsBusy:
        return []
    return turn.plan.accounts[: settings.POOLER_MAX_ATTEMPTS]


async def claim(turn: Turn, key: PoolApiKey, account: UpstreamAccount) -> bool:
    """Hold one of the account's concurrent turns when it caps them (the slot follows a failover)."""
    if not (account.max_concurrent or turn.slot_account_id):
        return True
    slot_id = await db.claim_account(turn.slot_id, key, turn.request_id, account)
    if slot_id is None:
        return False
    turn.slot_id, turn.slot_account_id = slot_id, account.id
    return True


def refresh_failure(failure: RefreshFailed) -> UpstreamFailure:
    """A dead refresh token means a new login (status 401); an auth server that is down only a cooldown."""
    if failure.dead:
        return UpstreamFailure("auth", 401, failure.reason, "token refresh failed")
    return UpstreamFailure("refresh", message=f"token refresh failed for now: {failure.reason}"[:200])


async def fresh_account(account: UpstreamAccount) -> UpstreamAccount:
    """The account with a usable access token, refreshing it first when it is about to expire."""
    if account.token_needs_refresh(timezone.now()):
        try:
            return await refresh_account_async(account.id)
        except RefreshFailed as failure:
            raise refresh_failure(failure) from None
    return account


async def _send(
    account: UpstreamAccount, method: str, path: str, headers, content: bytes, content_type: str | None
) -> httpx.Response:
    headers = {**upstream_headers(headers, account, content_type=content_type), "content-length": str(len(content))}
    try:
        # Response headers count toward the first-byte wait: a backend that hangs before them is skipped too.
        async with asyncio.timeout(settings.POOLER_FIRST_BYTE_TIMEOUT):
            return await send_turn(method, account.upstream_base_url + path, headers, _sent_once(content))
    except (httpx.TimeoutException, TimeoutError):
        raise UpstreamFailure("timeout", message="upstream timed out before answering") from None
    except httpx.HTTPError as exc:
        raise UpstreamFailure("connect", message=f"{type(exc).__name__}: {exc}"[:200]) from None


async def _sent_once(content: bytes) -> AsyncIterator[bytes]:
    """The body as a stream: once written it is no longer held by the request, which lives as long as the
    answer streams (bytes given as content would be)."""
    yield content


async def open_upstream(
    account: UpstreamAccount, method: str, path: str, headers, content: bytes, content_type: str | None = None
) -> tuple[UpstreamAccount, httpx.Response, bytes]:
    """Send a request and wait for its first body chunk; every failure before that is an UpstreamFailure."""
    account = await fresh_account(account)
    response = await _send(account, method, path, headers, content, content_type)
    if response.status_code == 401:
        # An unexpired token can still be revoked: refresh once and replay once before giving up on it.
        await close_upstream(response)
        try:
            account = await refresh_account_async(account.id, seen_access_token=account.access_token)
        except RefreshFailed as failure:
            raise refresh_failure(failure) from None
        response = await _send(account, method, path, headers, content, content_type)
    if response.status_code >= 400:
        body = b""
        try:
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > _MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass
        finally:
            await close_upstream(response)
        raise failure_from_response(response.status_code, response.headers, body)
    chunks = response.aiter_raw()
    try:
        async with asyncio.timeout(settings.POOLER_FIRST_BYTE_TIMEOUT):
            first = await anext(chunks)
    except (TimeoutError, httpx.TimeoutException):
        await close_upstream(response)
        raise UpstreamFailure("timeout", message="no first byte in time") from None
    except (StopAsyncIteration, httpx.HTTPError):
        await close_upstream(response)
        raise UpstreamFailure("closed", message="upstream closed before the first byte") from None
    except asyncio.CancelledError:
        await close_upstream(response)  # the client left while we waited: close the upstream too
        raise
    return account, Opened(response, first, chunks)


@dataclass
class Opened:
    """An upstream answer that has sent its first chunk; `rest` yields the chunks after it."""

    response: httpx.Response
    first: bytes
    rest: AsyncIterator[bytes]


def final_error(failures: list[UpstreamFailure]) -> PoolerError:
    """What the client hears when every attempt failed before the first byte."""
    if failures and all(f.status == 429 for f in failures):
        waits = [f.retry_after for f in failures if f.retry_after]
        retry_after = int(min(waits)) + 1 if waits else 30
        if any(f.usage_limit for f in failures):
            return UsageLimitReached(
                "You've hit the usage limit of every account in this pool.", retry_after=retry_after
            )
        return RateLimited("Every account in the pool is rate limited.", retry_after=retry_after)
    if failures and failures[-1].kind == "timeout":
        return UpstreamUnavailable("The upstream did not answer in time.", status=504, code="upstream_timeout")
    return UpstreamUnavailable("No upstream account could serve this request.", code="upstream_error")


class HttpTurn:
    """Runs one proxied request with failover; used by the backend routes and the /v1 surface."""

    def __init__(self, request, turn: Turn, token: str, *, path: str, method: str = "POST", raw: bytes | None = None):
        self.request, self.turn, self.token, self.path, self.method = request, turn, token, path, method
        self.raw = raw

    async def open(
        self, body: dict | bytes, session: str | None, content_type: str | None = None
    ) -> "Opened | HttpResponse":
        """The upstream response with its first chunk, or a finished error response for the client.

        A JSON `body` is made valid for each account it is tried on: a session moved away from its owner
        loses the history only the owner can read (see migration.py).
        """
        turn = self.turn
        try:
            plan = await begin(turn, session, self.token, body if isinstance(body, dict) else None)
            if turn.rewritten:
                self.raw = None  # the key's policy changed the body: it is sent as changed
            return await self._failover(plan, body, content_type, session)
        except PoolerError as error:
            return error_response(error, turn.request_id)
        except DATABASE_DOWN as down:
            # Refused before any upstream call; the row (if the key is known) waits in the backlog.
            note_outage(down)
            error = DatabaseUnavailable()
            if turn.key is not None:
                await turn.settle(error.status, "database_unavailable", error.code)
            return error_response(error, turn.request_id)
        except asyncio.CancelledError:
            # The client went away before the first byte: account the turn (and free its slot) all the same.
            if turn.key is not None:
                await turn.settle(499, "client_closed")
            raise
        except Exception:
            if turn.key is not None:
                await turn.settle(500, "internal_error", "internal_error")
            raise

    async def _failover(self, plan: routing.Plan, body: dict | bytes, content_type: str | None, session: str | None):
        """Try the plan's accounts in order until one sends a first byte (see `open`); while every one is at its
        cap, wait for a slot (fair_share.py) and plan again."""
        turn = self.turn
        failures: list[UpstreamFailure] = []
        queue = fair_share.Queue(turn)
        accounts = plan.accounts[: settings.POOLER_MAX_ATTEMPTS]
        try:
            while True:
                for account in accounts:
                    moved = turn.plan.owner is not None and turn.plan.owner.id != account.id
                    if not await claim(turn, turn.key, account):
                        if not queue.waiting:
                            turn.attempt(account, "at_capacity")
                        continue
                    await queue.leave()
                    try:
                        account, opened = await self._try(account, body, content_type, strip=moved)
                    except UpstreamFailure as failure:
                        turn.attempt(account, failure.summary(), failure.status)
                        if failure.client_fault:
                            return await self._pass_through(account, failure)
                        await db.mark_failure(account, failure)
                        failures.append(failure)
                        if turn.plan.hold and not moved:
                            error = await db.held_error(account, failure.code or failure.kind)
                            return await self._refuse(error, failures)
                        continue
                    self.raw = None  # the upstream has it
                    turn.attempt(account, "ok", opened.response.status_code)
                    turn.account, turn.status_code = account, opened.response.status_code
                    turn.first_byte_at = time.monotonic()
                    turn.note_migration(account, failures)
                    observe_quota(turn, opened.response.headers)
                    turn.plan.accounts = []  # the candidates not needed are not held while the answer streams
                    return opened
                if failures or not await queue.wait():
                    break
                try:
                    accounts = await replan(turn, session)
                except PoolerError as error:  # no longer only busy (accounts cooling down meanwhile)
                    return await self._refuse(error, failures)
        finally:
            await queue.leave()
        error = final_error(failures) if failures else queue.refusal()
        return await self._refuse(error, failures)

    async def _try(self, account: UpstreamAccount, body: dict | bytes, content_type: str | None, *, strip: bool):
        """One account: send the body (stripped of foreign history when moved); replay once stripped when the
        account says the history is not its own (a session whose pin expired, or moved by another route)."""
        if isinstance(body, bytes):
            return await open_upstream(account, self.method, self.path, self.request.headers, body, content_type)
        self.turn.input_items = migration.input_count(body)
        bound = migration.has_account_bound(body)
        if strip and bound:
            content = self._stripped(body)
        elif bound and self.turn.plan.foreign_items and self.turn.plan.owner.id == account.id:
            # A session that moved here earlier still carries the old account's items at its start (the
            # context it lost was accounted when it moved).
            content = encode(migration.strip_account_bound(body, before=self.turn.plan.foreign_items))
        else:
            content = self.raw if self.raw is not None else encode(body)
        try:
            return await open_upstream(account, self.method, self.path, self.request.headers, content, content_type)
        except UpstreamFailure as failure:
            if strip or not bound or failure.code not in migration.ACCOUNT_BOUND_ERRORS:
                raise
            self.turn.attempt(account, failure.summary(), failure.status)
            self.turn.found_foreign = self.turn.input_items
            content = self._stripped(body)
            return await open_upstream(account, self.method, self.path, self.request.headers, content, content_type)

    def _stripped(self, body: dict) -> bytes:
        """The body without another account's history; a newly dropped compaction is the turn's lost context."""
        self.turn.context_lost = migration.loses_context(body, self.turn.plan.foreign_items)
        return encode(migration.strip_account_bound(body))

    async def _refuse(self, error: PoolerError, failures: list[UpstreamFailure]) -> HttpResponse:
        turn = self.turn
        # Without failures, nothing upstream was tried: every account was at its cap (or left the plan).
        await turn.settle(error.status, "upstream_error" if failures else "rejected", error.code)
        return error_response(error, turn.request_id)

    async def _pass_through(self, account: UpstreamAccount, failure: UpstreamFailure) -> HttpResponse:
        """A 4xx that is the client's fault goes back as the backend said it, with no penalty."""
        turn = self.turn
        await turn.settle(failure.status, "client_error", failure.code, account)
        response = HttpResponse(
            failure.body,
            status=failure.status,
            content_type=(failure.headers or {}).get("content-type", "application/json"),
        )
        response["x-request-id"] = turn.request_id
        response["x-should-retry"] = "false"  # the same request would fail the same way
        return response

    def quota_headers(self) -> dict[str, str]:
        """The pool's quota for the client, in place of the serving account's (its plan just read the snapshot)."""
        view = pool_quota.latest(self.turn.key.pool)
        return view.headers() if view is not None else {}

    def stream(self, opened: Opened, translator=None) -> StreamingHttpResponse:
        """Relay the upstream body chunk by chunk as it arrives (through `translator` for /v1 chat)."""
        response = opened.response
        content_type = response.headers.get("content-type", "text/event-stream")
        out = StreamingHttpResponse(
            self.relay(opened, translator), status=response.status_code, content_type=content_type
        )
        for name, value in client_headers(response.headers, self.quota_headers()).items():
            if name.lower() != "content-type":
                out[name] = value
        out["x-request-id"] = self.turn.request_id
        out["Cache-Control"] = "no-cache"
        out["X-Accel-Buffering"] = "no"
        return out

    async def relay(self, opened: Opened, translator=None) -> AsyncIterator[bytes]:
        response, first = opened.response, opened.first
        turn, watcher = self.turn, SseWatcher()
        turn.outcome = "client_closed"  # until the stream is seen to the end
        metrics.OPEN_STREAMS.inc()
        try:
            watcher.feed(first)
            if out := translator.feed(first) if translator else first:
                yield out
            async for chunk in coalesced(opened.rest):
                watcher.feed(chunk)
                if out := translator.feed(chunk) if translator else chunk:
                    yield out
            turn.outcome = _stream_outcome(watcher)
            if translator:
                yield translator.finish(watcher)
        except httpx.HTTPError:
            # After the first byte nothing is retried: the client sees the cut and retries by itself.
            turn.outcome = "upstream_cut"
        finally:
            metrics.OPEN_STREAMS.dec()
            turn.usage, turn.error_code = watcher.usage, watcher.error_code or turn.error_code
            await close_upstream(response)
            await finish(turn)

    async def collect(self, opened: Opened, keep_items: bool = False) -> SseWatcher:
        """Read a whole stream (for clients that asked for one JSON answer) and account it."""
        response, first = opened.response, opened.first
        turn, watcher = self.turn, SseWatcher(keep_items)
        try:
            watcher.feed(first)
            async for chunk in opened.rest:
                watcher.feed(chunk)
            turn.outcome = _stream_outcome(watcher)
        except httpx.HTTPError:
            turn.outcome = "upstream_cut"
        finally:
            turn.usage, turn.error_code = watcher.usage, watcher.error_code or turn.error_code
            await close_upstream(response)
            await finish(turn)
        return watcher

    async def read_all(self, opened: Opened) -> HttpResponse:
        """A non-streamed answer (compact, realtime calls): read it whole, pass it back as it is."""
        response, first = opened.response, opened.first
        turn, body = self.turn, bytearray(first)
        try:
            async for chunk in opened.rest:
                body += chunk
            turn.outcome = "ok"
        except httpx.HTTPError:
            turn.outcome, turn.status_code = "upstream_cut", 502
            await finish(turn)
            return error_response(UpstreamUnavailable("The upstream connection broke."), turn.request_id)
        finally:
            await close_upstream(response)
        await finish(turn)
        out = HttpResponse(
            bytes(body),
            status=response.status_code,
            content_type=response.headers.get("content-type", "application/json"),
        )
        for name, value in client_headers(response.headers, self.quota_headers()).items():
            if name.lower() != "content-type":
                out[name] = value
        out["x-request-id"] = turn.request_id
        return out


def _stream_outcome(watcher: SseWatcher) -> str:
    if watcher.terminal == "response.completed":
        return "ok"
    if watcher.terminal == "response.incomplete":
        return "incomplete"  # an answer all the same (e.g. cut at max_output_tokens)
    if watcher.terminal or watcher.error_code:
        return "upstream_error"
    return "upstream_cut"


def encode(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
