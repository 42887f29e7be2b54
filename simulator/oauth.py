"""The auth server: `/oauth/authorize` (PKCE S256), `/oauth/token` with single-use, rotating refresh tokens, and
the device-code sign-in of `codex login --device-auth` (`/api/accounts/deviceauth/usercode` and `/token`)."""

import asyncio
import base64
import hashlib
import secrets
import time
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from .state import TOKEN_FAULTS, Account, DeviceAuth, SimState

_CODE_LIFETIME = 600
# Letters and digits nobody confuses when typing a code read off another screen.
_USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _error(status: int, error: str, description: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description, "code": code or error}, status_code=status)


def _redirect(redirect_uri: str, **params) -> RedirectResponse:
    separator = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(redirect_uri + separator + urlencode({k: v for k, v in params.items() if v}), 302)


def _login_account(state: SimState, hint: str | None) -> tuple[Account | None, bool]:
    """Who logs in: `login_hint` (account id or email), else the one-shot `/_sim/next_login` setting."""
    if hint:
        return next((a for a in state.accounts.values() if hint in (a.account_id, a.email)), None), False
    scripted, state.next_login = state.next_login, None
    if scripted and scripted.get("deny"):
        return None, True
    return state.accounts.get((scripted or {}).get("account_id", "")), False


async def authorize(request: Request) -> Response:
    state: SimState = request.app.state.sim
    entry = state.log.add(request.url.path, "authorize", "http", request.headers)
    query = request.query_params
    redirect_uri, state_param = query.get("redirect_uri"), query.get("state")
    if not redirect_uri or query.get("response_type", "code") != "code":
        entry.update(status=400, outcome="rejected", error_code="invalid_request")
        return _error(400, "invalid_request", "redirect_uri and response_type=code are required")
    if query.get("code_challenge_method", "S256") != "S256" or not query.get("code_challenge"):
        entry.update(status=302, outcome="rejected", error_code="invalid_request")
        return _redirect(
            redirect_uri, error="invalid_request", error_description="PKCE S256 is required", state=state_param
        )
    account, denied = _login_account(state, query.get("login_hint"))
    if account is None:
        entry.update(status=302, outcome="rejected", error_code="access_denied")
        return _redirect(
            redirect_uri,
            error="access_denied",
            error_description="The user denied the request" if denied else "No such account",
            state=state_param,
        )
    code = "ac_" + secrets.token_urlsafe(24)
    state.auth_codes[code] = {
        "account_id": account.account_id,
        "challenge": query["code_challenge"],
        "redirect_uri": redirect_uri,
        "expires": time.time() + _CODE_LIFETIME,
    }
    entry.update(account_id=account.account_id, status=302, outcome="completed")
    return _redirect(redirect_uri, code=code, state=state_param)


async def _form(request: Request) -> dict:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = await request.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return dict(await request.form())


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def token(request: Request) -> Response:
    state: SimState = request.app.state.sim
    entry = state.log.add(request.url.path, "token", "http", request.headers)
    form = await _form(request)
    grant = form.get("grant_type")
    if grant == "refresh_token":
        refresh_token = str(form.get("refresh_token", ""))
        response = await _scripted(state.account_by_refresh_token(refresh_token)) or _refresh(
            state, refresh_token, entry
        )
    elif grant == "authorization_code":
        code_owner = state.accounts.get(state.auth_codes.get(str(form.get("code", "")), {}).get("account_id", ""))
        response = await _scripted(code_owner) or _exchange_code(state, form, entry)
    else:
        response = _error(400, "unsupported_grant_type", f"grant_type {grant!r} is not supported")
    entry.update(status=response.status_code, outcome="completed" if response.status_code == 200 else "rejected")
    return response


async def _scripted(account: Account | None) -> Response | None:
    """The account's next token fault: `token_slow` waits `delay` seconds and then answers normally;
    `token_malformed` answers `status` (200) with `json` as the body, or with a body that is not JSON."""
    fault = account.take_fault(TOKEN_FAULTS) if account is not None else None
    if fault is None:
        return None
    if fault["kind"] == "token_slow":
        await asyncio.sleep(float(fault.get("first_byte_delay", 1)))
        return None
    status = int(fault.get("status", 200))
    if "json" in fault:
        return JSONResponse(fault["json"], status_code=status)
    return Response("<html><body>Something went wrong.</body></html>", status_code=status, media_type="text/html")


def _refresh(state: SimState, refresh_token: str, entry: dict) -> Response:
    account = state.account_by_refresh_token(refresh_token)
    if account is None:
        former = state.former_owner(refresh_token)
        if former is not None:
            entry.update(account_id=former.account_id, error_code="refresh_token_reused")
            return _error(
                401,
                "invalid_grant",
                "Your refresh token has already been used to generate a new access token. Please try signing in again.",
                "refresh_token_reused",
            )
        entry["error_code"] = "invalid_grant"
        return _error(401, "invalid_grant", "Invalid refresh token.")
    entry["account_id"] = account.account_id
    if account.take_fault({"refresh_invalid_grant"}) is not None:
        entry["error_code"] = "refresh_token_invalidated"
        return _error(
            401,
            "invalid_grant",
            "Your refresh token has been invalidated. Please try signing in again.",
            "refresh_token_invalidated",
        )
    account.rotate_tokens()
    state.index_tokens(account)
    return JSONResponse(account.token_response())


def _exchange_code(state: SimState, form: dict, entry: dict) -> Response:
    grant = state.auth_codes.pop(str(form.get("code", "")), None)  # codes are single-use
    if grant is None or grant["expires"] < time.time():
        entry["error_code"] = "invalid_grant"
        return _error(400, "invalid_grant", "The authorization code is invalid or expired.")
    entry["account_id"] = grant["account_id"]
    if form.get("redirect_uri") and form["redirect_uri"] != grant["redirect_uri"]:
        entry["error_code"] = "invalid_grant"
        return _error(400, "invalid_grant", "redirect_uri does not match the authorization request.")
    if _s256(str(form.get("code_verifier", ""))) != grant["challenge"]:
        entry["error_code"] = "invalid_grant"
        return _error(400, "invalid_grant", "code_verifier does not match the code_challenge.")
    account = state.accounts.get(grant["account_id"])
    if account is None:
        return _error(400, "invalid_grant", "The account no longer exists.")
    account.rotate_tokens(refreshed=False)
    state.index_tokens(account)
    return JSONResponse(account.token_response())


def _user_code() -> str:
    chars = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9))
    return f"{chars[:4]}-{chars[4:]}"


async def device_usercode(request: Request) -> Response:
    """Start a device-code sign-in: `{"client_id"}` → `device_auth_id`, `user_code` and `interval` (a string)."""
    state: SimState = request.app.state.sim
    entry = state.log.add(request.url.path, "device_usercode", "http", request.headers)
    if not (await _form(request)).get("client_id"):
        entry.update(status=400, outcome="rejected", error_code="invalid_request")
        return _error(400, "invalid_request", "client_id is required")
    auth = DeviceAuth(
        device_auth_id="deviceauth_" + secrets.token_urlsafe(18),
        user_code=_user_code(),
        issuer=str(request.base_url).rstrip("/"),
        expires_at=time.time() + state.device["expires_in"],
    )
    state.device_auths[auth.user_code] = auth
    entry.update(status=200, outcome="completed")
    return JSONResponse(
        {"device_auth_id": auth.device_auth_id, "user_code": auth.user_code, "interval": str(state.device["interval"])}
    )


# The answers to a poll before the code is handed out: (HTTP status, error, description). The CLI keeps polling
# on 403 (and 404) and gives up on anything else; slow_down is RFC 8628's, which the CLI does not know.
_DEVICE_REFUSALS = {
    "slow_down": (429, "slow_down", "Polling too fast: wait 5 seconds longer between polls."),
    "pending": (403, "authorization_pending", "The user has not entered and approved the code yet."),
    "denied": (401, "authorization_declined", "The user declined the sign-in."),
    "expired": (400, "expired_token", "The device code expired; start again."),
}


async def device_token(request: Request) -> Response:
    """Poll a device-code sign-in (`{"device_auth_id", "user_code"}`); once approved it answers, a single time,
    an authorization code with the PKCE pair to exchange it with at `/oauth/token`."""
    state: SimState = request.app.state.sim
    entry = state.log.add(request.url.path, "device_token", "http", request.headers)
    form = await _form(request)
    auth = state.device_auths.get(str(form.get("user_code", "")))
    if auth is None or auth.device_auth_id != form.get("device_auth_id"):
        entry.update(status=400, outcome="rejected", error_code="invalid_request")
        return _error(400, "invalid_request", "Unknown device_auth_id or user_code.")
    entry["account_id"] = auth.account_id
    status = auth.status_at(time.time())
    if auth.slow_downs:
        auth.slow_downs -= 1
        status = "slow_down"
    if status != "approved":
        http_status, error, description = _DEVICE_REFUSALS[status]
        entry.update(status=http_status, outcome="rejected", error_code=error)
        return _error(http_status, error, description)
    verifier = secrets.token_urlsafe(48)
    code = "ac_" + secrets.token_urlsafe(24)
    state.auth_codes[code] = {
        "account_id": auth.account_id,
        "challenge": _s256(verifier),
        "redirect_uri": f"{auth.issuer}/deviceauth/callback",
        "expires": time.time() + _CODE_LIFETIME,
    }
    del state.device_auths[auth.user_code]  # handed out once; a later poll is for an unknown code
    entry.update(status=200, outcome="completed")
    return JSONResponse({"authorization_code": code, "code_challenge": _s256(verifier), "code_verifier": verifier})
