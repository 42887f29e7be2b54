"""Real-shaped Codex CLI auth.json contents for the demo, the benchmarks and the tests (never real accounts)."""

import time
import uuid

import jwt

_SIGNING_KEY = "codex-pooler-sample-tokens-not-a-secret"


def sample_jwt(claims: dict) -> str:
    return jwt.encode(claims, _SIGNING_KEY, algorithm="HS256")


def sample_auth_json(
    account_id: str | None = None, email: str = "dev@example.com", plan: str = "plus", expires_in: int = 3600
) -> dict:
    """An auth.json like `codex login` writes, with JWTs carrying the claims the pooler reads."""
    account_id = account_id or f"acct-{uuid.uuid4().hex[:10]}"
    now = int(time.time())
    id_token = sample_jwt(
        {
            "email": email,
            "exp": now + expires_in,
            "iat": now,
            "https://api.openai.com/auth": {
                "chatgpt_account_id": account_id,
                "chatgpt_plan_type": plan,
                "chatgpt_user_id": "user-" + account_id,
            },
        }
    )
    access = sample_jwt({"exp": now + expires_in, "iat": now, "sub": account_id, "jti": uuid.uuid4().hex})
    return {
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": id_token,
            "access_token": access,
            "refresh_token": "rt_" + uuid.uuid4().hex,
            "account_id": account_id,
        },
        "last_refresh": "2026-11-24T00:00:00Z",
    }
