"""The ChatGPT OAuth PKCE login of the Codex CLI, for `manage.py login_account`."""

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from django.conf import settings

SCOPE = "openid profile email offline_access"


class LoginFailed(Exception):
    """The login did not produce tokens; the message is meant for the operator."""


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
        return f"{settings.POOLER_AUTH_BASE_URL.rstrip('/')}/oauth/authorize?{query}"

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
        try:
            response = httpx.post(
                f"{settings.POOLER_AUTH_BASE_URL.rstrip('/')}/oauth/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.redirect_uri,
                    "client_id": settings.POOLER_OAUTH_CLIENT_ID,
                    "code_verifier": self.verifier,
                },
                timeout=30,
            )
        except httpx.HTTPError as exc:
            raise LoginFailed(f"cannot reach the auth server: {type(exc).__name__}") from None
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
