"""The ChatGPT logins of the Codex CLI, for `manage.py login_account` and the admin: the browser flow
(OAuth PKCE, like `codex login`) and the device-code flow (like `codex login --device-auth`)."""

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from django.conf import settings

SCOPE = "openid profile email offline_access"
# How long a device code lives: the Codex CLI tells the user "expires in 15 minutes" and stops polling then.
DEVICE_CODE_LIFETIME = 15 * 60
# The poll interval when the auth server names none (as the CLI), and what a slow_down adds (RFC 8628 §3.5).
_DEFAULT_INTERVAL = 5
_SLOW_DOWN_STEP = 5
_TIMEOUT = 30


class LoginFailed(Exception):
    """The login did not produce tokens; the message is meant for the operator."""


class LoginDenied(LoginFailed):
    """The user declined the sign-in."""


class LoginExpired(LoginFailed):
    """The code was not approved in time."""


def _auth_url(path: str) -> str:
    return f"{settings.POOLER_AUTH_BASE_URL.rstrip('/')}{path}"


def _post(path: str, **kwargs) -> httpx.Response:
    try:
        return httpx.post(_auth_url(path), timeout=_TIMEOUT, **kwargs)
    except httpx.HTTPError as exc:
        raise LoginFailed(
            f"cannot reach the auth server at {settings.POOLER_AUTH_BASE_URL} ({type(exc).__name__}); "
            "check the network and run login_account again"
        ) from None


def _json_object(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@dataclass
class PkceLogin:
    redirect_uri: str
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(64))
    state: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def authorize_url(self) -> str:
        query = urlencode(
            {
                "response_type": "code",
                "client_id": settings.POOLER_OAUTH_CLIENT_ID,
                "redirect_uri": self.redirect_uri,
                "scope": SCOPE,
                "code_challenge": self.challenge,
                "code_challenge_method": "S256",
                "state": self.state,
                "id_token_add_organizations": "true",
                "codex_cli_simplified_flow": "true",
            }
        )
        return f"{_auth_url('/oauth/authorize')}?{query}"

    def code_from_redirect(self, url: str) -> str:
        """The authorization code of a redirect URL, checked against our state."""
        params = {k: v[0] for k, v in parse_qs(urlsplit(url.strip()).query).items()}
        if "error" in params:
            detail = params.get("error_description") or params["error"]
            raise LoginFailed(f"login was denied: {detail}")
        if params.get("state") != self.state:
            raise LoginFailed("the redirect does not belong to this login (state mismatch); start again")
        if not params.get("code"):
            raise LoginFailed("the redirect URL carries no code")
        return params["code"]

    def exchange(self, code: str) -> dict:
        response = _post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "client_id": settings.POOLER_OAUTH_CLIENT_ID,
                "code_verifier": self.verifier,
            },
        )
        if response.status_code != 200:
            raise LoginFailed(
                "the login code expired or was already used; run login_account again "
                f"(auth server said HTTP {response.status_code})"
            )
        try:
            tokens = response.json()
        except ValueError:
            raise LoginFailed("the auth server's answer is not JSON; try again later") from None
        if not isinstance(tokens, dict) or not all(
            isinstance(tokens.get(k), str) and tokens[k] for k in ("id_token", "access_token", "refresh_token")
        ):
            raise LoginFailed("the auth server answered without the expected tokens")
        return tokens


@dataclass
class DeviceCode:
    """A device-code sign-in under way: the user enters `user_code` at `verification_url`; we poll."""

    device_auth_id: str
    user_code: str
    interval: int

    @property
    def verification_url(self) -> str:
        return _auth_url("/codex/device")


@dataclass
class DevicePoll:
    status: Literal["pending", "slow_down", "approved"]
    tokens: dict | None = None


def request_device_code() -> DeviceCode:
    """Start a device-code sign-in at the auth server."""
    response = _post("/api/accounts/deviceauth/usercode", json={"client_id": settings.POOLER_OAUTH_CLIENT_ID})
    if response.status_code == 404:
        raise LoginFailed("this auth server does not offer device code login; use the browser login (no --device)")
    if response.status_code != 200:
        raise LoginFailed(f"the auth server refused to start a device code login (HTTP {response.status_code})")
    body = _json_object(response)
    user_code = body.get("user_code") or body.get("usercode")
    try:
        # The real server sends the interval as a string ("5"); the CLI reads either.
        interval = int(str(body.get("interval") or _DEFAULT_INTERVAL).strip())
    except ValueError:
        interval = None
    if not isinstance(body.get("device_auth_id"), str) or not isinstance(user_code, str) or interval is None:
        raise LoginFailed("the auth server's device code answer lacks device_auth_id, user_code or interval")
    # Never poll in a tight loop, whatever the server says.
    return DeviceCode(device_auth_id=body["device_auth_id"], user_code=user_code, interval=max(1, interval))


def poll_device_code(code: DeviceCode) -> DevicePoll:
    """Ask once whether the user approved `code`; when they did, exchange the authorization code for tokens.
    A slow_down widens `code.interval`. Raises LoginDenied, LoginExpired or LoginFailed."""
    response = _post(
        "/api/accounts/deviceauth/token", json={"device_auth_id": code.device_auth_id, "user_code": code.user_code}
    )
    body = _json_object(response)
    error = body.get("error") if isinstance(body.get("error"), str) else ""
    # 403 and 404 mean "not approved yet" to the Codex CLI, which polls on; slow_down is RFC 8628's.
    if response.status_code in (403, 404):
        return DevicePoll("pending")
    if response.status_code == 429 or error == "slow_down":
        code.interval += _SLOW_DOWN_STEP
        return DevicePoll("slow_down")
    if error in ("authorization_declined", "access_denied"):
        raise LoginDenied(f"the sign-in with code {code.user_code} was declined; nothing was stored")
    if error in ("expired_token", "device_code_expired") or response.status_code == 410:
        raise LoginExpired(f"the code {code.user_code} expired before it was approved; start the login again")
    if response.status_code != 200:
        detail = f"HTTP {response.status_code}, {error}" if error else f"HTTP {response.status_code}"
        raise LoginFailed(f"the auth server refused the device code login ({detail})")
    if not all(isinstance(body.get(k), str) for k in ("authorization_code", "code_verifier")):
        raise LoginFailed("the auth server approved the code but sent no authorization code")
    # The server made the PKCE pair; the exchange is the browser flow's with the device callback as redirect.
    login = PkceLogin(redirect_uri=_auth_url("/deviceauth/callback"), verifier=body["code_verifier"])
    return DevicePoll("approved", login.exchange(body["authorization_code"]))
