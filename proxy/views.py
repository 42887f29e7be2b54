"""Runtime views for the Codex backend routes: thin orchestration over auth, turns and accounting."""

import asyncio
import functools
import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from accounts import budgets
from accounts.networks import request_address

from . import metrics, migration, pool_quota
from .accounting import Turn
from .auth import authenticate, check_address, require_bearer
from .body import decode_body, parse_json_object, require_model
from .compaction import compacted_output, trigger_turn
from .dbthread import DATABASE_DOWN, note_outage, on_db_thread
from .errors import DatabaseUnavailable, NotFound, PayloadTooLarge, PoolerError, error_response
from .models_list import pool_models
from .routing import sticky_key
from .turns import HttpTurn, Opened, new_request_id

log = logging.getLogger("pooler.views")


def runtime_view(methods: tuple[str, ...], *, turn: bool = False):
    """Async view guard: method check, Pool API key, and every PoolerError as an OpenAI-shaped error.

    A view gets the authenticated key; a `turn` view gets the bearer token instead, which its turn checks in
    the same database step as admission and routing (see turns.begin). Turns are counted in the metrics
    when they are accounted; every other answer (refusals before a turn, model lists) is counted here.
    """

    def decorate(view):
        route = f"{'v1' if view.__module__.endswith('v1_views') else 'codex'}.{view.__name__}"

        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request, *args, **kwargs):
            request_id = new_request_id()
            request.pooler_key = request.pooler_turn = None
            response = await _guarded(view, route, methods, turn, request, request_id, *args, **kwargs)
            if not _turn_accounted(request):
                key = request.pooler_key
                metrics.REQUESTS.labels(route, str(response.status_code), key.pool.name if key else "").inc()
            return response

        wrapper.csrf_exempt = True
        return wrapper

    return decorate


async def _guarded(view, route, methods, turn, request, request_id, *args, **kwargs) -> HttpResponse:
    try:
        if request.method not in methods:
            raise PoolerError(f"Method {request.method} not allowed here.", status=405, code="method_not_allowed")
        if turn:
            return await view(request, require_bearer(request.headers), request_id, *args, **kwargs)
        request.pooler_key = await authenticate(request.headers)
        check_address(request.pooler_key, request_address(request))
        return await view(request, request.pooler_key, request_id, *args, **kwargs)
    except PoolerError as error:
        if error.code == "ip_not_allowed":
            await _account_refusal(request, route, request_id, error)
        return error_response(await _for_caller(request, error), request_id)
    except RequestDataTooBig:
        limit = settings.POOLER_MAX_BODY_BYTES
        error = PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        return error_response(await _for_caller(request, error), request_id)
    except DATABASE_DOWN as error:
        note_outage(error)
        return error_response(DatabaseUnavailable(), request_id)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error in %s (request %s)", request.path, request_id)
        return error_response(
            PoolerError("The pooler hit an internal error.", status=500, code="internal_error", type="server_error"),
            request_id,
        )


async def _account_refusal(request, route: str, request_id: str, error: PoolerError) -> None:
    """A request of a known key refused before it could be a turn still leaves a RequestLog row saying why."""
    request.pooler_turn = Turn(
        request_id=request_id, route=route, key=request.pooler_key, client_ip=request_address(request), is_stream=False
    )
    await request.pooler_turn.settle(error.status, "rejected", error.code)


def _turn_accounted(request) -> bool:
    """Whether the request became a turn of a known key (accounted, and counted in the metrics, as one)."""
    return request.pooler_turn is not None and request.pooler_turn.key is not None


async def _for_caller(request, error: PoolerError) -> PoolerError:
    """A turn view reads its body before its key is checked: a caller without a valid key hears 401, never
    what was wrong with the body."""
    if error.status == 401 or request.pooler_key is not None or _turn_accounted(request):
        return error
    try:
        request.pooler_key = await authenticate(request.headers)
    except PoolerError as refused:
        return refused
    except DATABASE_DOWN as down:
        note_outage(down)
        return DatabaseUnavailable()
    return error


def read_body(request) -> bytes:
    """The request body after its Content-Encoding (too large a body is refused in decode_body).

    Read from the request's stream, which is then closed, rather than `request.body`, which the request
    would keep: a turn's body is let go once the upstream has it, however long the answer streams.
    """
    raw = request.read(settings.POOLER_MAX_BODY_BYTES + 1)
    request.close()
    return decode_body(raw, request.headers.get("content-encoding", ""))


def read_json(request) -> dict:
    return parse_json_object(read_body(request))


async def start_turn(
    request,
    token: str,
    request_id,
    *,
    route: str,
    path: str,
    body: dict | bytes,
    stream: bool = True,
    content_type: str = "application/json",
    raw: bytes | None = None,
) -> tuple[HttpTurn, Opened | HttpResponse]:
    """Account, admit, route and open one proxied request (both the backend routes and /v1 use this).

    `raw` is the client's JSON `body` as it came, sent on unchanged unless history must be stripped from it.
    """
    json_body = body if isinstance(body, dict) else {}
    turn = Turn(
        request_id=request_id,
        route=route,
        model=require_model(json_body) if json_body else "",
        client_ip=request_address(request),
        is_stream=stream,
        compaction=migration.is_compaction_turn(json_body),
        compacted=migration.compactions(json_body) > 0,
    )
    proxied = HttpTurn(request, turn, token, path=path, raw=raw)
    request.pooler_turn = turn  # counted in the metrics when the turn is accounted
    return proxied, await proxied.open(body, sticky_key(request.headers, json_body), content_type)


@runtime_view(("POST",), turn=True)
async def responses(request, token, request_id):
    """POST /backend-api/codex/responses: one streamed Codex turn."""
    raw = read_body(request)
    body = parse_json_object(raw)
    proxied, opened = await start_turn(
        request,
        token,
        request_id,
        route="codex.responses",
        path="/responses",
        body=body,
        raw=raw,
        stream=body.get("stream") is not False,
    )
    return opened if isinstance(opened, HttpResponse) else proxied.stream(opened)


async def compact_turn(request, token, request_id, *, route: str, body: dict, answer) -> HttpResponse:
    """Both compact routes: a compaction v2 turn on `body`, answered as `answer(output, watcher)` shapes it
    (the backend's own compact endpoint is gone, see compaction.py)."""
    turn_body = trigger_turn(body)
    proxied, opened = await start_turn(
        request, token, request_id, route=route, path="/responses", body=turn_body, stream=False
    )
    if isinstance(opened, HttpResponse):
        return opened
    watcher = await proxied.collect(opened, keep_items=True)
    try:
        output = compacted_output(turn_body, watcher)
    except PoolerError as error:
        return error_response(error, request_id)
    return JsonResponse(answer(output, watcher), headers={"x-request-id": request_id})


@runtime_view(("POST",), turn=True)
async def compact(request, token, request_id):
    """POST /backend-api/codex/responses/compact: the compacted history, `{"output": [...]}`."""
    body = parse_json_object(read_body(request))
    return await compact_turn(
        request, token, request_id, route="codex.compact", body=body, answer=lambda output, _: {"output": output}
    )


@runtime_view(("GET",))
async def models(request, key, request_id):
    """GET /backend-api/codex/models: the pool's models, filtered by what the pool and key allow."""
    listing = await pool_models(key, request.GET.get("client_version", ""), request.headers)
    return JsonResponse({"models": listing}, headers={"x-request-id": request_id})


@runtime_view(("POST",), turn=True)
async def realtime_calls(request, token, request_id):
    """POST /backend-api/codex/realtime/calls: SDP offer in, SDP answer out, nothing translated."""
    query = f"?{request.GET.urlencode()}" if request.GET else ""
    proxied, opened = await start_turn(
        request,
        token,
        request_id,
        route="codex.realtime_calls",
        path="/realtime/calls" + query,
        body=request.body,
        stream=False,
        content_type=request.headers.get("content-type", "application/sdp"),
    )
    return opened if isinstance(opened, HttpResponse) else await proxied.read_all(opened)


@runtime_view(("GET",))
async def wham_usage(request, key, request_id):
    """GET /backend-api/wham/usage: the pool's quota windows in the backend's shape, as the key's turns show them,
    and the key's own budgets (`key_budgets`, as GET /v1/usage answers them)."""
    view = await pool_quota.current(key.pool)
    windows = await on_db_thread(budgets.report)(key, timezone.now())
    return JsonResponse({**view.usage(), "key_budgets": windows}, headers={"x-request-id": request_id})


@csrf_exempt
async def unknown_route(request):
    metrics.REQUESTS.labels("unknown", "404", "").inc()
    return error_response(NotFound(f"Unknown route {request.method} {request.path}"))
