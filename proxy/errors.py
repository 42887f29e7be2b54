"""The one shape of every error the pooler itself answers: OpenAI's error JSON."""

import time

from django.conf import settings
from django.http import JsonResponse

# The OpenAI SDKs retry 408, 409, 429 and 5xx by themselves and wait at most about a minute for a Retry-After;
# past that they come back after a short backoff, only to be refused again. `x-should-retry` tells them.
_RETRY_WAIT_LIMIT = 60


class PoolerError(Exception):
    """An error meant for the client; raised deep, turned into a response in one place."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        type: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status or self.status
        self.code = code or self.code
        self.type = type or self.type
        self.param = param
        self.retry_after = retry_after
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def should_retry(self) -> bool | None:
        """Whether a client's automatic retry can succeed: a short wait or an upstream that may recover soon yes;
        the client's own mistake or a quota that resets later no; an internal error left to the client."""
        if self.status == 429:
            return self.retry_after is not None and self.retry_after <= _RETRY_WAIT_LIMIT
        if self.status in (502, 503, 504):
            return True
        return False if 400 <= self.status < 500 else None

    def response_headers(self) -> dict:
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, int(self.retry_after)))
        if (retry := self.should_retry()) is not None:
            headers.setdefault("x-should-retry", "true" if retry else "false")
        return headers


class Unauthorized(PoolerError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class Forbidden(PoolerError):
    status, type, code = 403, "permission_error", "model_not_allowed"


class NotFound(PoolerError):
    status, type, code = 404, "invalid_request_error", "not_found"


class PayloadTooLarge(PoolerError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class RateLimited(PoolerError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"


class AccountsBusy(RateLimited):
    """Every account that could serve the turn is at its concurrent-turn cap (a turn waits for a slot first)."""

    code = "pool_at_capacity"


class UsageLimitReached(RateLimited):
    """Every account that could serve is out of quota: the backend's own shape, so the Codex CLI shows
    "You've hit your usage limit" with the reset time instead of retrying."""

    type = code = "usage_limit_reached"

    def body(self) -> dict:
        body = super().body()
        seconds = max(1, int(self.retry_after or 60))
        body["error"].update(resets_in_seconds=seconds, resets_at=int(time.time()) + seconds)
        return body


class DatabaseUnavailable(PoolerError):
    """The database is unreachable: nothing can be admitted or accounted, so the client comes back shortly
    (the Codex CLI and the OpenAI SDKs retry a 503 by themselves)."""

    status, type, code = 503, "server_error", "database_unavailable"

    def __init__(self, message: str = "The pooler's database is unreachable; try again shortly.", **kwargs):
        kwargs.setdefault("retry_after", settings.POOLER_DATABASE_RETRY_AFTER)
        super().__init__(message, **kwargs)


class NoEligibleAccount(PoolerError):
    status, type, code = 503, "server_error", "no_eligible_account"


class UpstreamUnavailable(PoolerError):
    status, type, code = 502, "server_error", "upstream_error"


def error_response(error: PoolerError, request_id: str = "") -> JsonResponse:
    response = JsonResponse(error.body(), status=error.status)
    for name, value in error.response_headers().items():
        response[name] = value
    if request_id:
        response["x-request-id"] = request_id
    return response


def error_json(message: str, status: int, *, code: str | None = None, type: str = "invalid_request_error"):
    return error_response(PoolerError(message, status=status, code=code, type=type))
