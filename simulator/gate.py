"""Who may ask and whether a request is served: bearer checks, quota, scripted refusals, history binding.

Shared by the HTTP routes and the websocket, so both transports refuse the same way (a status and a body
over HTTP, the same as an `{"type": "error", "status": N}` frame on a websocket).
"""

import time

from .state import REFUSING_FAULTS, Account, SimState
from .turns import foreign_encrypted_content


class Refusal(Exception):
    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        type_: str = "invalid_request_error",
        headers: dict | None = None,
        **extra,
    ):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}
        self.error = {"message": message, "type": type_, "param": extra.pop("param", None), "code": code, **extra}

    def body(self) -> dict:
        return {"error": self.error}


def bearer(headers) -> str:
    value = headers.get("authorization", "")
    return value[7:].strip() if value[:7].lower() == "bearer " else ""


def authenticate(state: SimState, headers) -> Account:
    """The account whose CURRENT, unexpired access token is the bearer (and matches chatgpt-account-id)."""
    token = bearer(headers)
    if not token:
        raise Refusal(401, None, "Missing bearer or basic authentication in header.")
    account = state.account_by_token(token)
    if account is None:
        if state.former_owner(token) is not None:
            raise Refusal(
                401, "token_invalidated", "Your authentication token has been invalidated. Please try signing in again."
            )
        raise Refusal(401, "token_invalid", "Could not parse your authentication token. Please try signing in again.")
    if account.token_expired(time.time()):
        raise Refusal(401, "token_expired", "Provided authentication token is expired. Please try signing in again.")
    claimed = headers.get("chatgpt-account-id")
    if claimed and claimed != account.account_id:
        raise Refusal(401, "account_mismatch", "The chatgpt-account-id header does not match the token.")
    return account


def rate_limit_headers(account: Account, now: float) -> dict:
    headers = {}
    for name, window in (("primary", account.primary), ("secondary", account.secondary)):
        window.roll(now)
        headers |= {
            f"x-codex-{name}-used-percent": f"{window.used_percent:g}",
            f"x-codex-{name}-window-minutes": str(window.minutes),
            f"x-codex-{name}-reset-after-seconds": str(window.reset_after(now)),
            f"x-codex-{name}-reset-at": str(int(window.reset_at)),
        }
    headers |= {
        "x-codex-credits-has-credits": "false",
        "x-codex-credits-unlimited": "false",
        "x-codex-credits-balance": "0",
    }
    return headers


_STATUS_MESSAGES = {
    500: ("server_error", "An error occurred while processing your request."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "The server is overloaded or not ready yet."),
}


def _scripted_refusal(account: Account, fault: dict, now: float) -> Refusal:
    if fault["kind"] == "expire_token":
        account.access_expires_at = now
        return Refusal(401, "token_expired", "Provided authentication token is expired. Please try signing in again.")
    if fault["kind"] == "rate_limit":
        retry_after = int(fault.get("retry_after", 2))
        return Refusal(
            429,
            "rate_limit_exceeded",
            fault.get("message", "Rate limit reached. Please try again later."),
            type_="rate_limit_exceeded",
            headers={"retry-after": str(retry_after)},
        )
    status = int(fault.get("status", 500))
    code, message = _STATUS_MESSAGES.get(status, ("server_error", "An error occurred."))
    return Refusal(status, code, fault.get("message", message), type_="server_error")


def admit(account: Account, body: dict, kind: str, known_response_ids=()) -> None:
    """Raise a Refusal when this turn/prewarm/compaction must not be served, else count it against quota."""
    now = time.time()
    fault = account.take_fault(REFUSING_FAULTS)
    if fault is not None:
        raise _scripted_refusal(account, fault, now)
    spent = account.exhausted_window(now)
    if spent is not None:
        raise Refusal(
            429,
            "usage_limit_reached",
            "The usage limit has been reached",
            type_="usage_limit_reached",
            plan_type=account.plan_type,
            resets_at=int(spent.reset_at),
            resets_in_seconds=spent.reset_after(now),
        )
    model = body.get("model")
    if account.models and model not in account.models:
        raise Refusal(
            400,
            "model_not_supported",
            f"The '{model}' model is not supported when using Codex with a ChatGPT account.",
            param="model",
        )
    previous = body.get("previous_response_id")
    if previous and previous not in known_response_ids and previous not in account.response_ids:
        raise Refusal(
            400,
            "previous_response_not_found",
            f"Previous response with id '{previous}' not found.",
            param="previous_response_id",
        )
    if account.verify_encrypted_content:
        blob = foreign_encrypted_content(body.get("input"), account.account_id)
        if blob is not None:
            raise Refusal(
                400, "invalid_encrypted_content", f"The encrypted content {blob[:12]}… could not be verified."
            )
    if kind != "prewarm":
        account.spend_turn()
