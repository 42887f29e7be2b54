"""The narrow OpenAI-compatible /v1 surface, on the same pools, limits, routing and accounting."""

from django.http import HttpResponse, JsonResponse
from django.utils import timezone

from accounts import budgets

from . import openai_compat
from .compaction import compacted_response, failed_turn_error
from .dbthread import on_db_thread
from .errors import error_response
from .models_list import pool_models
from .views import compact_turn, read_json, runtime_view, start_turn


@runtime_view(("POST",), turn=True)
async def responses(request, token, request_id):
    body = read_json(request)
    backend_body = openai_compat.responses_request(body)
    stream = bool(body.get("stream"))
    proxied, opened = await start_turn(
        request, token, request_id, route="v1.responses", path="/responses", body=backend_body, stream=stream
    )
    if isinstance(opened, HttpResponse):
        return opened
    if stream:
        return proxied.stream(opened)
    watcher = await proxied.collect(opened)
    if (response := openai_compat.final_response(watcher)) is None:
        return error_response(failed_turn_error(watcher), request_id)
    return JsonResponse(response, headers={"x-request-id": request_id})


@runtime_view(("POST",), turn=True)
async def responses_compact(request, token, request_id):
    """POST /v1/responses/compact: the API's `response.compaction` object."""
    body = openai_compat.responses_request(read_json(request))
    return await compact_turn(
        request, token, request_id, route="v1.responses.compact", body=body, answer=compacted_response
    )


@runtime_view(("POST",), turn=True)
async def chat_completions(request, token, request_id):
    body = read_json(request)
    backend_body = openai_compat.chat_request(body)
    stream = bool(body.get("stream"))
    proxied, opened = await start_turn(
        request, token, request_id, route="v1.chat.completions", path="/responses", body=backend_body, stream=stream
    )
    if isinstance(opened, HttpResponse):
        return opened
    if stream:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        translator = openai_compat.ChatStreamTranslator(backend_body["model"], include_usage)
        return proxied.stream(opened, translator=translator)
    watcher = await proxied.collect(opened)
    if (response := openai_compat.final_response(watcher)) is None:
        return error_response(failed_turn_error(watcher), request_id)
    return JsonResponse(
        openai_compat.chat_completion(response, backend_body["model"]), headers={"x-request-id": request_id}
    )


@runtime_view(("GET",))
async def models(request, key, request_id):
    listing = await pool_models(key, "", request.headers)
    return JsonResponse(openai_compat.models_list(listing), headers={"x-request-id": request_id})


@runtime_view(("GET",))
async def usage(request, key, request_id):
    """GET /v1/usage: the calling key's budgets, each with what is used, what is left and when it resets."""
    windows = await on_db_thread(budgets.report)(key, timezone.now())
    return JsonResponse(
        {"object": "usage", "key": key.prefix, "budgets": windows}, headers={"x-request-id": request_id}
    )
