"""The control API under `/_sim/`: register and script accounts, read the request log and stream stats."""

import time
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import tokens
from .state import DEFAULT_CONFIG, DEVICE_DEFAULTS, Account, SimState, Window, normalize_fault

_SIMPLE_FIELDS = {
    "email": str,
    "plan_type": str,
    "percent_per_turn": float,
    "deltas": int,
    "verify_encrypted_content": bool,
    "access_token": str,
    "refresh_token": str,
}


def _state(request: Request) -> SimState:
    return request.app.state.sim


def _bad(message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": "bad_control"}}, status_code=400
    )


def _apply(account: Account, fields: dict, now: float) -> None:
    """Set the given fields on `account`; raises ValueError naming an unknown or malformed one."""
    for name, value in fields.items():
        if name in _SIMPLE_FIELDS:
            setattr(account, name, _SIMPLE_FIELDS[name](value))
        elif name == "models":
            account.models = [str(slug) for slug in value]
        elif name == "access_token_expires_in":
            account.access_token_expires_in = int(value)
            account.access_expires_at = now + int(value)
        elif name == "expire_access_token":
            if value:
                account.access_expires_at = now
        elif name == "faults":
            account.faults = [normalize_fault(dict(f)) for f in value]
        elif name.startswith(("primary_", "secondary_")):
            window_name, _, key = name.partition("_")
            if not _apply_window(getattr(account, window_name), key, value, now):
                raise ValueError(f"unknown field {name!r}")
        elif name != "account_id":
            raise ValueError(f"unknown field {name!r}")


def _apply_window(window: Window, key: str, value, now: float) -> bool:
    if key == "used_percent":
        window.used_percent = float(value)
    elif key == "window_minutes":
        window.minutes = int(value)
    elif key == "reset_after_seconds":
        window.reset_at = now + float(value)
    elif key == "reset_at":
        window.reset_at = float(value)
    else:
        return False
    return True


async def _json(request: Request) -> dict:
    try:
        data = await request.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


async def register_account(request: Request) -> Response:
    """Register (or replace) an account; missing ids and tokens are generated."""
    state = _state(request)
    try:
        fields = await _json(request)
        now = time.time()
        account_id = str(fields.get("account_id") or f"acct-sim-{uuid.uuid4().hex[:12]}")
        plan_type = str(fields.get("plan_type", "plus"))
        access = fields.get("access_token") or tokens.access_token(account_id, plan_type, 3600)
        account = Account(
            account_id=account_id,
            access_token=access,
            refresh_token=fields.get("refresh_token") or tokens.refresh_token(),
            email=str(fields.get("email") or f"{account_id}@example.com"),
        )
        account.access_expires_at = tokens.expiry_of(access)
        for window in (account.primary, account.secondary):
            window.reset_at = now + window.minutes * 60
        _apply(account, {k: v for k, v in fields.items() if k not in ("access_token", "refresh_token")}, now)
    except (ValueError, TypeError) as exc:
        return _bad(str(exc))
    account.id_token = tokens.id_token(account.account_id, account.plan_type, account.email)
    state.accounts[account.account_id] = account
    state.index_tokens(account)
    return JSONResponse(account.describe(now), status_code=201)


async def account_detail(request: Request) -> Response:
    state = _state(request)
    account = state.accounts.get(request.path_params["account_id"])
    if account is None:
        return JSONResponse({"error": {"message": "no such account", "code": "not_found"}}, status_code=404)
    now = time.time()
    if request.method == "PATCH":
        try:
            _apply(account, await _json(request), now)
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        state.index_tokens(account)
    elif request.method == "DELETE":
        del state.accounts[account.account_id]
        return Response(status_code=204)
    return JSONResponse(account.describe(now))


async def request_log(request: Request) -> Response:
    state = _state(request)
    if request.method == "DELETE":
        state.log.clear()
        return Response(status_code=204)
    return JSONResponse(state.log.matching(dict(request.query_params)))


async def config(request: Request) -> Response:
    """The backend-wide switches: `GET`, or `PATCH` some of them (booleans; unknown names are refused)."""
    state = _state(request)
    if request.method == "PATCH":
        try:
            fields = await _json(request)
        except ValueError as exc:
            return _bad(str(exc))
        for name, value in fields.items():
            if name not in DEFAULT_CONFIG:
                return _bad(f"unknown field {name!r}")
            if not isinstance(value, bool):
                return _bad(f"{name!r} must be true or false")
        state.config.update(fields)
    return JSONResponse(state.config)


async def stats(request: Request) -> Response:
    return JSONResponse(_state(request).stats.as_dict())


async def reset_stats(request: Request) -> Response:
    state = _state(request)
    # Streams still open stay counted, so the maximum starts from what is open now.
    open_streams, open_websockets = state.stats.open_streams, state.stats.open_websockets
    state.stats.reset()
    state.stats.open_streams = state.stats.max_open_streams = open_streams
    state.stats.open_websockets = state.stats.max_open_websockets = open_websockets
    return JSONResponse(state.stats.as_dict())


async def reset(request: Request) -> Response:
    _state(request).reset()
    return Response(status_code=204)


async def next_login(request: Request) -> Response:
    """Script who logs in at the next `/oauth/authorize` without `login_hint`: `{"account_id"}` or `{"deny": true}`."""
    try:
        _state(request).next_login = await _json(request)
    except ValueError as exc:
        return _bad(str(exc))
    return JSONResponse(_state(request).next_login)


async def device(request: Request) -> Response:
    """The device-code sign-ins: `GET` the settings and every code; `PATCH {"interval", "expires_in"}` (seconds)
    for the codes issued from then on."""
    state = _state(request)
    if request.method == "PATCH":
        try:
            fields = await _json(request)
            for name, value in fields.items():
                if name not in DEVICE_DEFAULTS:
                    raise ValueError(f"unknown field {name!r}")
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{name!r} must be a whole number of seconds")
        except ValueError as exc:
            return _bad(str(exc))
        state.device.update(fields)
    now = time.time()
    return JSONResponse({**state.device, "codes": [auth.describe(now) for auth in state.device_auths.values()]})


_DEVICE_ACTIONS = ("approve", "deny", "expire", "slow_down")


async def device_action(request: Request) -> Response:
    """What the user does at the device page, by user code: `approve` (as `account_id`), `deny`, `expire`; or
    `slow_down`: the next `count` (1) polls answer slow_down."""
    state = _state(request)
    action = request.path_params["action"]
    if action not in _DEVICE_ACTIONS:
        return _bad(f"unknown action {action!r}; one of {', '.join(_DEVICE_ACTIONS)}")
    try:
        fields = await _json(request)
    except ValueError as exc:
        return _bad(str(exc))
    auth = state.device_auths.get(str(fields.get("user_code", "")))
    if auth is None:
        return JSONResponse({"error": {"message": "no such user code", "code": "not_found"}}, status_code=404)
    now = time.time()
    if action == "slow_down":
        count = fields.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            return _bad("'count' must be a positive whole number")
        auth.slow_downs += count
        return JSONResponse(auth.describe(now))
    if auth.status_at(now) != "pending":
        return _bad(f"the code is {auth.status_at(now)}, not pending")
    if action == "approve":
        if str(fields.get("account_id")) not in state.accounts:
            return _bad("approve needs the account_id of a registered account")
        auth.account_id = str(fields["account_id"])
        auth.status = "approved"
    elif action == "deny":
        auth.status = "denied"
    else:
        auth.expires_at = now
    return JSONResponse(auth.describe(now))
