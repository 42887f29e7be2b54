"""Reading the claims of ChatGPT's tokens (we never verify them: the issuer does on every use)."""

from datetime import UTC, datetime

import jwt

AUTH_CLAIM = "https://api.openai.com/auth"


def claims(token: str) -> dict:
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ValueError("not a JWT") from exc


def expiry(token: str) -> datetime | None:
    exp = claims(token).get("exp")
    return datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None


def identity(id_token: str) -> dict:
    """Account id, email, plan and user id from an id token."""
    data = claims(id_token)
    auth = data.get(AUTH_CLAIM) or {}
    return {
        "chatgpt_account_id": auth.get("chatgpt_account_id", ""),
        "plan_type": auth.get("chatgpt_plan_type", ""),
        "user_id": auth.get("chatgpt_user_id", ""),
        "email": data.get("email", ""),
    }
