"""Daphne's HTTP connection, answering a request whose head is too large instead of dropping it.

Twisted reads a request's head line by line. A line over `MAX_LENGTH` (16 KiB) closes the connection without a
word (`LineReceiver.lineLengthExceeded`, a documented override point), and a head whose lines add up to more
than `totalHeadersSize` (16 KiB) gets a bare 400 from a private method; either way a client with, say, a 20 KB
`Authorization` header or a pile of large cookies cannot tell what went wrong. This channel answers 431 in the
OpenAI error shape first: it counts the head's bytes in `lineReceived` (LineReceiver's public callback) as
Twisted does, so its own limit is reached first. Daphne builds its connections from `HTTPFactory.protocol`,
Twisted's documented attribute for the channel class; `tests/test_oversized_headers.py` fails when an upgrade
stops using it.
"""

import json

from daphne import http_protocol
from twisted.web import http


def _answer(message: str) -> bytes:
    body = json.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "code": "request_header_too_large",
                "param": None,
            }
        }
    ).encode()
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"x-should-retry: false\r\n"
        b"Connection: close\r\n\r\n" + body
    )


_LINE_TOO_LONG = _answer(f"A request header line is longer than {http.HTTPChannel.MAX_LENGTH} bytes.")
_HEAD_TOO_LARGE = _answer(f"The request's header lines add up to more than {http.HTTPChannel.totalHeadersSize} bytes.")


class PoolerChannel(http.HTTPChannel):
    _head_bytes = 0  # of the request being read; the blank line that ends a head starts the next count

    def lineLengthExceeded(self, line):
        self._refuse(_LINE_TOO_LONG)

    def lineReceived(self, line):
        self._head_bytes = self._head_bytes + len(line) if line else 0
        if self._head_bytes > self.totalHeadersSize:
            return self._refuse(_HEAD_TOO_LARGE)
        return super().lineReceived(line)

    def _refuse(self, answer: bytes) -> None:
        self.transport.write(answer)
        self.loseConnection()


def install() -> None:
    http_protocol.HTTPFactory.protocol = PoolerChannel
