"""Bad input on every route gets a clean 4xx in the OpenAI error shape: never a 500, never a traceback."""

import gzip
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import make_account, make_key, make_pool
from tests.support.pooler import PoolerServer

pytestmark = pytest.mark.django_db(transaction=True)

POST_ROUTES = [
    "/backend-api/codex/responses",
    "/backend-api/codex/responses/compact",
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/responses/compact",
]
MAX_BODY = 65536

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
# Objects shaped like requests, with wrong types in the places the pooler reads.
request_like = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values,
        "input": json_values,
        "messages": json_values,
        "stream": json_values,
        "tools": json_values,
        "instructions": json_values,
        "response_format": json_values,
        "prompt_cache_key": json_values,
        "temperature": json_values,
        "n": json_values,
    },
)
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    request_like.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=100, max_value=5000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.just(b'{"model": "\xff\xfe"}'),
)
header_values = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)


@pytest.fixture(scope="module")
def small_cap_pooler(django_db_setup, django_db_blocker):
    server = PoolerServer(extra_env={"POOLER_MAX_BODY_BYTES": str(MAX_BODY)})
    yield server
    server.close()


def assert_clean_error(response: httpx.Response):
    assert response.status_code != 500, response.text
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "code", "param"} and error["message"]


def test_fuzzed_bodies_and_headers_get_clean_errors(small_cap_pooler):
    pool = make_pool()  # no accounts: a valid request ends in a clean 503, never reaching anything upstream
    _, raw_key = make_key(pool)
    client = httpx.Client(base_url=small_cap_pooler.url, timeout=10)

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        route=st.sampled_from(POST_ROUTES),
        body=raw_bodies,
        session=header_values,
        encoding=st.sampled_from(["", "zstd", "gzip", "br", "identity"]),
    )
    def check(route, body, session, encoding):
        headers = {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json", "session-id": session}
        if encoding:
            headers["Content-Encoding"] = encoding
        assert_clean_error(client.post(route, content=body, headers=headers))

    check()
    assert client.get("/healthz").status_code == 200


V1_FIELDS = [
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "response_format",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "reasoning_effort",
    "parallel_tool_calls",
    "store",
    "service_tier",
    "metadata",
    "user",
    "instructions",
]
v1_extras = st.dictionaries(st.sampled_from(V1_FIELDS), json_values, max_size=3)
message_lists = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "tool", "system"])},
        optional={"content": json_values, "tool_calls": json_values, "tool_call_id": json_values},
    ),
    min_size=1,
    max_size=3,
)


def test_fuzzed_v1_fields_on_a_serving_pool_are_answered_or_refused_cleanly(small_cap_pooler, simulator):
    # With an account that serves, a bad field found only after the upstream opened would be a 500.
    pool = make_pool()
    make_account(pool, simulator)
    _, raw_key = make_key(pool)
    client = httpx.Client(base_url=small_cap_pooler.url, timeout=30, headers={"Authorization": f"Bearer {raw_key}"})

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(chat=st.booleans(), extras=v1_extras, messages=st.none() | message_lists)
    def check(chat, extras, messages):
        if chat:
            body = {"model": "gpt-5.2", "messages": messages or [{"role": "user", "content": "hi"}], **extras}
        else:
            body = {"model": "gpt-5.2", "input": "hi", **extras}
        path = "/v1/chat/completions" if chat else "/v1/responses"
        response = client.post(path, content=json.dumps(body).encode())  # Infinity too, as a lax client sends it
        assert response.status_code in (200, 400), response.text
        assert_clean_error(response)

    check()


def test_oversized_and_compressed_bombs_get_413(small_cap_pooler):
    pool = make_pool()
    _, raw_key = make_key(pool)
    headers = {"Authorization": f"Bearer {raw_key}"}
    big = json.dumps({"model": "m", "input": "x" * (MAX_BODY + 10)}).encode()
    response = httpx.post(f"{small_cap_pooler.url}/backend-api/codex/responses", content=big, headers=headers)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    bomb = gzip.compress(b"{" + b" " * (MAX_BODY * 20) + b"}")
    response = httpx.post(
        f"{small_cap_pooler.url}/v1/responses", content=bomb, headers={**headers, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 413


def test_oversized_mcp_bodies_get_413(small_cap_pooler):
    from django.contrib.auth import get_user_model

    from tests.factories import make_mcp_token

    _, token = make_mcp_token(get_user_model().objects.create_user("ops"))
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"pad": "x" * MAX_BODY}}
    declared = httpx.post(f"{small_cap_pooler.url}/mcp", json=call, headers=headers)
    # Without a Content-Length (chunked), the cap is found while reading.
    chunked = httpx.post(f"{small_cap_pooler.url}/mcp", content=iter([json.dumps(call).encode()]), headers=headers)
    for response in (declared, chunked):
        assert response.status_code == 413
        assert_clean_error(response)
        assert response.json()["error"]["code"] == "request_too_large"


def test_bad_keys_get_401_everywhere(small_cap_pooler):
    for route in POST_ROUTES:
        for value in ["", "Bearer", "Bearer nope", "Basic abc", "Bearer cpk_00000000_x", "Bearer cpm_1_2"]:
            response = httpx.post(small_cap_pooler.url + route, content=b"{}", headers={"Authorization": value})
            assert response.status_code == 401
            assert_clean_error(response)


def test_oversized_websocket_frame_closes_cleanly(small_cap_pooler):
    from websockets.sync.client import connect

    pool = make_pool()
    _, raw_key = make_key(pool)
    url = small_cap_pooler.url.replace("http", "ws") + "/backend-api/codex/responses"
    with connect(url, additional_headers={"Authorization": f"Bearer {raw_key}"}, max_size=None) as ws:
        try:
            ws.send("x" * (2 * 1024 * 1024))
            reply = ws.recv(timeout=10)
            assert json.loads(reply)["type"] == "error"
        except Exception as exc:  # noqa: BLE001 - a close by the server is an acceptable answer too
            assert "close" in type(exc).__name__.lower() or "Closed" in type(exc).__name__
    assert httpx.get(f"{small_cap_pooler.url}/healthz").status_code == 200
