"""The narrow OpenAI-compatible /v1 surface, on the same pools, limits, routing and accounting."""

from django.http import HttpResponse, JsonResponse

from . import openai_compat
from .accounting import Turn
from .body import require_model
from .errors import PoolerError, UpstreamUnavailable, error_response
from .models_list import pool_models
from .routing import sticky_key
from .turns import HttpTurn
from .views import _client_ip, read_json, runtime_view


def _failed_turn_error(watcher) -> PoolerError:
    error = watcher.error or {}
    message = error.get("message") or "The upstream turn did not complete."
    if error.get("type") == "invalid_request_error" or error.get("code") == "context_length_exceeded":
        return PoolerError(message, code=error.get("code"))
    return UpstreamUnavailable(message, code=error.get("code") or "upstream_error")


async def _turn(request, key, request_id, route: str, backend_body: dict, path: str = "/responses"):
    turn = Turn(
        request_id=request_id, route=route, key=key, model=require_model(backend_body), client_ip=_client_ip(request)
    )
    proxied = HttpTurn(request, turn, key, path=path)
    opened = await proxied.open(backend_body, sticky_key(request.headers, backend_body), "application/json")
    return proxied, turn, opened


@runtime_view(("POST",))
async def responses(request, key, request_id):
    body = read_json(request)
    backend_body = openai_compat.responses_request(body)
    proxied, turn, opened = await _turn(request, key, request_id, "v1.responses", backend_body)
    if isinstance(opened, HttpResponse):
        return opened
    if body.get("stream"):
        return proxied.stream(opened)
    turn.is_stream = False
    watcher = await proxied.collect(opened)
    if watcher.terminal != "response.completed" or watcher.response is None:
        return error_response(_failed_turn_error(watcher), request_id)
    return JsonResponse(watcher.response, headers={"x-request-id": request_id})


@runtime_view(("POST",))
async def responses_compact(request, key, request_id):
    backend_body = openai_compat.responses_request(read_json(request))
    backend_body.pop("stream", None)
    backend_body.pop("store", None)
    proxied, turn, opened = await _turn(
        request, key, request_id, "v1.responses.compact", backend_body, path="/responses/compact"
    )
    if isinstance(opened, HttpResponse):
        return opened
    turn.is_stream = False
    return await proxied.read_all(opened)


@runtime_view(("POST",))
async def chat_completions(request, key, request_id):
    body = read_json(request)
    backend_body = openai_compat.chat_request(body)
    proxied, turn, opened = await _turn(request, key, request_id, "v1.chat.completions", backend_body)
    if isinstance(opened, HttpResponse):
        return opened
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        translator = openai_compat.ChatStreamTranslator(backend_body["model"], include_usage)
        return proxied.stream(opened, translator=translator)
    turn.is_stream = False
    watcher = await proxied.collect(opened)
    if watcher.terminal not in ("response.completed", "response.incomplete") or watcher.response is None:
        return error_response(_failed_turn_error(watcher), request_id)
    return JsonResponse(
        openai_compat.chat_completion(watcher.response, backend_body["model"]), headers={"x-request-id": request_id}
    )


@runtime_view(("GET",))
async def models(request, key, request_id):
    listing = await pool_models(key, "", request.headers)
    return JsonResponse(openai_compat.models_list(listing), headers={"x-request-id": request_id})
