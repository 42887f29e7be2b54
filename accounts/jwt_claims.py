"""Reading the claims of ChatGPT's tokens (we never verify them: the issuer does on every use)."""

from datetime import UTC, datetime

import jwt

AUTH_CLAIM = "https://api.openai.com/auth"


def claims(token: str) -> dict:
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ValueError("it is not a JWT") from exc


def expiry(token: str) -> datetime | None:
    exp = claims(token).get("exp")
    if not isinstance(exp, int | float):
        return None
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError("its exp claim is not a usable time") from None


def identity(id_token: str) -> dict:
    """Account id, email, plan and user id from an id token; ValueError when they are not strings."""
    data = claims(id_token)
    auth = data.get(AUTH_CLAIM) or {}
    if not isinstance(auth, dict):
        raise ValueError(f"its {AUTH_CLAIM} claim is not an object")
    found = {
        "chatgpt_account_id": auth.get("chatgpt_account_id", ""),
        "plan_type": auth.get("chatgpt_plan_type", ""),
        "user_id": auth.get("chatgpt_user_id", ""),
        "email": data.get("email", ""),
    }
    if not all(isinstance(value, str) for value in found.values()):
        raise ValueError("its identity claims are not strings")
    return found
