"""Real-shaped ChatGPT JWTs (HS256 with a per-run secret) and reading `exp` from registered tokens."""

import os
import time
import uuid

import jwt

_SECRET = os.urandom(32).hex()
_AUTH_CLAIM = "https://api.openai.com/auth"


def _auth_claim(account_id: str, plan_type: str) -> dict:
    return {"chatgpt_account_id": account_id, "chatgpt_plan_type": plan_type, "chatgpt_user_id": f"user-{account_id}"}


def access_token(account_id: str, plan_type: str, expires_in: int) -> str:
    now = int(time.time())
    return jwt.encode(
        {
            "iss": "https://auth.openai.com",
            "aud": ["https://api.openai.com/v1"],
            "sub": f"user-{account_id}",
            "iat": now,
            "exp": now + expires_in,
            "jti": uuid.uuid4().hex,
            _AUTH_CLAIM: _auth_claim(account_id, plan_type),
        },
        _SECRET,
        algorithm="HS256",
    )


def id_token(account_id: str, plan_type: str, email: str, expires_in: int = 3600) -> str:
    now = int(time.time())
    return jwt.encode(
        {
            "iss": "https://auth.openai.com",
            "aud": "app_EMoamEEZ73f0CkXaXp7hrann",
            "sub": f"user-{account_id}",
            "iat": now,
            "exp": now + expires_in,
            "email": email,
            "email_verified": True,
            _AUTH_CLAIM: _auth_claim(account_id, plan_type),
        },
        _SECRET,
        algorithm="HS256",
    )


def refresh_token() -> str:
    return "rt_sim_" + uuid.uuid4().hex


def expiry_of(token: str) -> float | None:
    """The `exp` of a JWT-shaped token (signature not checked: tests mint their own), else None."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return float(exp) if isinstance(exp, int | float) else None
