"""Daphne's HTTP connection, answering a request whose header line is too long instead of dropping it.

Twisted reads a request's head line by line, each at most `MAX_LENGTH` (16 KiB) long; past that it closes the
connection without a word (`LineReceiver.lineLengthExceeded`, a documented override point), so a client with,
say, a 20 KB `Authorization` header sees a reset and retries blindly. This channel answers 431 in the OpenAI
error shape first. Daphne builds its connections from `HTTPFactory.protocol`, Twisted's documented attribute
for the channel class; `tests/test_oversized_headers.py` fails when an upgrade stops using it.
"""

import json

from daphne import http_protocol
from twisted.web import http

_BODY = json.dumps(
    {
        "error": {
            "message": f"A request header line is longer than {http.HTTPChannel.MAX_LENGTH} bytes.",
            "type": "invalid_request_error",
            "code": "request_header_too_large",
            "param": None,
        }
    }
).encode()
_ANSWER = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n"
    b"x-should-retry: false\r\n"
    b"Connection: close\r\n\r\n" + _BODY
)


class PoolerChannel(http.HTTPChannel):
    def lineLengthExceeded(self, line):
        self.transport.write(_ANSWER)
        self.loseConnection()


def install() -> None:
    http_protocol.HTTPFactory.protocol = PoolerChannel
