"""The /v1 surface with the official openai SDK against real Daphne and the simulator."""

import json
import time

import httpx
import openai
import pytest

from proxy import openai_compat
from proxy.sse import SseWatcher, encode_event
from tests.factories import make_account, make_key, make_pool
from tests.support.rows import key_rows

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sdk(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    key_row, key = make_key(pool)
    client = openai.OpenAI(base_url=f"{pooler.url}/v1", api_key=key, max_retries=0, timeout=30)
    client.key_row = key_row
    return client


def test_models_list(sdk):
    models = [m.id for m in sdk.models.list()]
    assert "gpt-5.2" in models


def test_responses_create_with_and_without_stream(sdk):
    response = sdk.responses.create(model="gpt-5.2", input="hi there", instructions="be brief")
    assert response.output_text == "echo: hi there"
    assert response.store is False  # the backend echoes what it was sent: nothing stored
    assert response.usage.total_tokens > 0
    stream = sdk.responses.create(model="gpt-5.2", input="streamed", stream=True)
    deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "echo: streamed"
    rows = key_rows(sdk.key_row, 2)
    assert [r.route for r in rows] == ["v1.responses", "v1.responses"]
    assert [r.is_stream for r in rows] == [False, True] and all(r.total_tokens > 0 for r in rows)


def test_chat_completions_with_and_without_stream(sdk):
    completion = sdk.chat.completions.create(
        model="gpt-5.2", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    )
    assert completion.choices[0].message.content == "echo: hello"
    assert completion.choices[0].finish_reason == "stop" and completion.usage.total_tokens > 0
    chunks = list(
        sdk.chat.completions.create(
            model="gpt-5.2",
            messages=[{"role": "user", "content": "chunks"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: chunks"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    rows = key_rows(sdk.key_row, 2)
    assert all(r.route == "v1.chat.completions" and r.outcome == "ok" for r in rows)


def test_chat_tool_call_round_trip(sdk, simulator):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    first = sdk.chat.completions.create(
        model="gpt-5.2", tools=tools, tool_choice="required", messages=[{"role": "user", "content": "weather in Oslo?"}]
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    json.loads(call.function.arguments)
    second = sdk.chat.completions.create(
        model="gpt-5.2",
        tools=tools,
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )
    # The simulator answers a tool result by echoing it: the function_call_output reached the backend.
    assert second.choices[0].message.content == "echo: sunny" and second.choices[0].finish_reason == "stop"
    rows = key_rows(sdk.key_row, 2)
    assert all(r.route == "v1.chat.completions" and r.status_code == 200 and r.outcome == "ok" for r in rows)
    assert all(r.total_tokens > 0 for r in rows)


def test_chat_json_schema_response_format(sdk):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    completion = sdk.chat.completions.create(
        model="gpt-5.2",
        messages=[{"role": "user", "content": "answer in json"}],
        response_format={"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}},
    )
    assert json.loads(completion.choices[0].message.content) == {"answer": "echo: answer in json"}
    [row] = key_rows(sdk.key_row, 1)
    assert row.route == "v1.chat.completions" and row.status_code == 200 and row.outcome == "ok"
    assert row.model == "gpt-5.2" and row.total_tokens > 0


def test_instructions_become_a_developer_message_and_nothing_is_stored():
    turn = openai_compat.responses_request(
        {"model": "gpt-5.2", "input": "hi", "instructions": "be brief", "stream": False, "store": False}
    )
    assert [(item["role"], item["content"][0]["text"]) for item in turn["input"]] == [
        ("developer", "be brief"),
        ("user", "hi"),
    ]
    assert turn["store"] is False and turn["stream"] is True and "instructions" not in turn


def test_unsupported_parameters_are_named(sdk):
    with pytest.raises(openai.BadRequestError) as error:
        sdk.chat.completions.create(model="gpt-5.2", messages=[{"role": "user", "content": "x"}], n=2, temperature=0.2)
    assert "n" in error.value.message and "temperature" in error.value.message


def test_key_limits_apply_and_the_sdk_sees_429(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    _, key = make_key(pool, rpm=1)
    client = openai.OpenAI(base_url=f"{pooler.url}/v1", api_key=key, max_retries=0, timeout=30)
    client.chat.completions.create(model="gpt-5.2", messages=[{"role": "user", "content": "one"}])
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model="gpt-5.2", messages=[{"role": "user", "content": "two"}])
    assert int(error.value.response.headers["retry-after"]) >= 1
    assert error.value.code == "key_rpm_limit"
    assert error.value.response.headers["x-should-retry"] == "true"  # the key's minute window: worth the wait


def test_wrong_key_is_an_authentication_error(pooler):
    client = openai.OpenAI(base_url=f"{pooler.url}/v1", api_key="cpk_wrong_key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


CHAT = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "x"}]}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
# (route, what the client sent on top of a valid request, the param the 400 must name)
BAD_REQUESTS = [
    ("chat", {"stream": True, "stream_options": "x"}, "stream_options"),
    ("chat", {"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ("chat", {"stream": "false"}, "stream"),
    ("chat", {"stream": 1}, "stream"),
    (
        "chat",
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": ["call_1"]}]},
        "messages[1].tool_calls[0]",
    ),
    (
        "chat",
        {"messages": [{"role": "assistant", "tool_calls": [{**CALL, "function": "f"}]}]},
        "messages[0].tool_calls[0].function",
    ),
    ("chat", {"messages": [{"role": "tool", "tool_call_id": "call_1", "content": 42}]}, "messages[0].content"),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]}, "messages[0].content[0].text"),
    ("chat", {"tools": [{"type": "function", "function": "f"}]}, "tools[0].function"),
    ("chat", {"tools": [TOOL], "tool_choice": {"type": "function", "function": "f"}}, "tool_choice.function"),
    ("chat", {"response_format": {"type": "json_schema", "json_schema": "reply"}}, "response_format.json_schema"),
    ("chat", {"max_tokens": 0}, "max_tokens"),
    ("chat", {"max_tokens": 1.5}, "max_tokens"),
    ("chat", {"max_completion_tokens": "100"}, "max_completion_tokens"),
    ("chat", {"reasoning_effort": 3}, "reasoning_effort"),
    ("chat", {"parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ("chat", {"n": True}, "n"),
    ("responses", {"stream": "false"}, "stream"),
    ("responses", {"instructions": ["be brief"]}, "instructions"),
    ("responses", {"input": 5}, "input"),
    ("responses", {"max_output_tokens": 0}, "max_output_tokens"),
    ("responses", {"metadata": "tag"}, "metadata"),
]
# Parameters that would change the answer's meaning: refused by name, never dropped.
MEANINGFUL = [
    ("chat", {"store": True}, "store"),
    ("chat", {"service_tier": "flex"}, "service_tier"),
    ("chat", {"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ("responses", {"store": True}, "store"),
    ("responses", {"service_tier": "priority"}, "service_tier"),
    ("responses", {"previous_response_id": "resp_1"}, "previous_response_id"),
]


def post_v1(pooler, key: str, route: str, extra: dict) -> httpx.Response:
    if route == "chat":
        path, body = "/v1/chat/completions", {**CHAT, **extra}
    else:
        path, body = "/v1/responses", {"model": "gpt-5.2", "input": "x", **extra}
    return httpx.post(f"{pooler.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_wrong_types_and_meaningful_parameters_are_400s_naming_the_param(pooler, simulator):
    pool = make_pool()
    make_account(pool, simulator)
    _, key = make_key(pool)
    simulator.clear_requests()
    for route, extra, param in BAD_REQUESTS + MEANINGFUL:
        response = post_v1(pooler, key, route, extra)
        assert response.status_code == 400, (route, extra, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param, (extra, error)
        assert param.split("[")[0].split(".")[0] in error["message"]
    # Refused before any upstream was opened: the backend saw nothing, the key holds no slot.
    assert simulator.requests(kind="turn") == []
    assert post_v1(pooler, key, "chat", {"stream": False, "store": False, "service_tier": "auto"}).status_code == 200
    assert post_v1(pooler, key, "responses", {"metadata": {"team": "a"}, "service_tier": "default"}).status_code == 200


def test_an_incomplete_turn_is_an_answer_not_a_failure():
    # The simulator never stops early, so the backend's own events are fed to the watcher the views use.
    watcher = SseWatcher()
    incomplete = {
        "id": "resp_1",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "echo: cut sh"}]}],
    }
    watcher.feed(encode_event({"type": "response.created", "response": {"id": "resp_1"}}))
    watcher.feed(encode_event({"type": "response.incomplete", "response": incomplete}))
    response = openai_compat.final_response(watcher)
    assert response["status"] == "incomplete" and response["incomplete_details"]["reason"] == "max_output_tokens"
    assert openai_compat.chat_completion(response, "gpt-5.2")["choices"][0]["finish_reason"] == "length"
    failed = SseWatcher()
    failed.feed(encode_event({"type": "response.failed", "response": {"status": "failed", "error": {"code": "x"}}}))
    assert openai_compat.final_response(failed) is None


def test_the_sdk_does_not_hammer_an_exhausted_pool(pooler, simulator):
    pool = make_pool()
    spent = make_account(pool, simulator, sim_fields={"primary_used_percent": 100.0})
    key_row, key = make_key(pool)
    client = openai.OpenAI(base_url=f"{pooler.url}/v1", api_key=key, max_retries=2, timeout=30)
    started = time.monotonic()
    for _ in range(2):  # the first reaches the account and learns the reset; the second is refused at once
        with pytest.raises(openai.RateLimitError) as error:
            client.chat.completions.create(model="gpt-5.2", messages=[{"role": "user", "content": "hi"}])
        assert error.value.code == "usage_limit_reached"
        assert error.value.response.headers["x-should-retry"] == "false"
        assert int(error.value.response.headers["retry-after"]) > 60
    # No retry: one request per call reached the pooler, one attempt ever reached the account.
    assert len(key_rows(key_row, 2)) == 2
    assert len(simulator.requests(kind="turn", account_id=spent.chatgpt_account_id)) == 1
    assert time.monotonic() - started < 5


def test_client_mistakes_say_not_to_retry_and_an_empty_pool_says_retry(sdk, pooler):
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model="gpt-5.2", messages=[{"role": "user", "content": "x"}], n=2)
    assert bad.value.response.headers["x-should-retry"] == "false"
    wrong = openai.OpenAI(base_url=f"{pooler.url}/v1", api_key="cpk_wrong_key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        wrong.models.list()
    assert denied.value.response.headers["x-should-retry"] == "false"
    empty = make_key(make_pool())[1]  # a pool with no account: the 503 may clear when one comes back
    with pytest.raises(openai.InternalServerError) as unavailable:
        openai.OpenAI(base_url=f"{pooler.url}/v1", api_key=empty, max_retries=0).chat.completions.create(
            model="gpt-5.2", messages=[{"role": "user", "content": "x"}]
        )
    assert unavailable.value.status_code == 503 and unavailable.value.response.headers["x-should-retry"] == "true"
