"""A request whose header line, or whose head as a whole, is larger than the server reads gets a 431 in the OpenAI
error shape."""

import json
import socket

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def raw_request(url: str, head: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_20kb_header_line_gets_a_431_and_the_server_stays_healthy(pooler):
    for path, extra in [("/backend-api/codex/responses", b""), ("/v1/models", b"Upgrade: websocket\r\n")]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
            + extra
            + b"Authorization: Bearer cpk_"
            + b"x" * 20_000
            + b"\r\nContent-Length: 2\r\n\r\n{}"
        )
        answer = raw_request(pooler.url, head)
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
        error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
        assert error["code"] == "request_header_too_large" and error["type"] == "invalid_request_error"
    assert httpx.get(f"{pooler.url}/healthz").status_code == 200
    assert httpx.get(f"{pooler.url}/v1/models", headers={"Authorization": "Bearer cpk_short"}).status_code == 401


def test_header_lines_that_add_up_to_over_16kb_get_a_431(pooler):
    # Each line is short enough; together they pass Twisted's total, which alone would answer a bare 400.
    cookies = b"".join(b"Cookie: c%d=" % i + b"y" * 6_000 + b"\r\n" for i in range(3))
    head = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + cookies + b"Authorization: Bearer cpk_short\r\n\r\n"
    answer = raw_request(pooler.url, head)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "request_header_too_large" and "add up to" in error["message"]
    # A keep-alive connection's next request starts a new count: two heads of 10 KB each are both served.
    with httpx.Client(base_url=pooler.url) as client:
        for _ in range(2):
            answer = client.get(
                "/v1/models", headers={"Authorization": "Bearer cpk_short", "Cookie": "c=" + "z" * 10_000}
            )
            assert answer.status_code == 401
