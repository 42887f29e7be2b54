"""Daphne's HTTP request, made to let go of the client's body once the application has it.

Daphne (through Twisted) keeps each request's body until the response ends: in memory, or in a temporary
file above 100 KB. A gateway's answers stream for minutes and a Codex turn's body carries the whole
conversation, so every open stream held its client's body: 40 of the ~110 KiB an open stream holds in
`make bench`, or an open temporary file. The application gets the body in its ASGI http.request messages,
and nothing reads Twisted's copy after Daphne has queued them.
"""

from daphne import http_protocol


class BodyReleasingRequest(http_protocol.WebRequest):
    def process(self):
        processed = super().process()  # returns once the body is queued for the application
        processed.addBoth(self._release_body)
        return processed

    def _release_body(self, result):
        if self.content is not None:
            self.content.close()
            self.content = None  # what Twisted's own cleanup expects of a request without a body
        return result


def install() -> None:
    """Daphne builds each request from this module attribute (HTTPFactory.buildProtocol)."""
    http_protocol.WebRequest = BodyReleasingRequest
