"""Daphne's HTTP request, made lean for answers that stream for minutes.

- It lets go of the client's body once the application has it. Daphne (through Twisted) kept each request's
  body until the response ended: in memory, or in a temporary file above 100 KB. A Codex turn's body carries
  the whole conversation, so every open stream held its client's body (40 of the ~110 KiB an open stream
  held in `make bench`, or an open temporary file). The application gets the body in its ASGI http.request
  messages, and nothing reads Twisted's copy after Daphne has queued them.
- Twisted does not parse form bodies into `request.args`, which Daphne never reads: an email-package parse
  of every POST's Content-Type, which also left two new classes a request for the cyclic garbage collector.
"""

from daphne import http_protocol


class LeanRequest(http_protocol.WebRequest):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)

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
    http_protocol.WebRequest = LeanRequest
