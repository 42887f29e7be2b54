"""Bearer secrets shown once: Pool API keys and MCP tokens are stored as a visible prefix and a hash."""

import hashlib
import hmac
import secrets

PREFIX_CHARS = 8


def new_secret(kind: str, lookup: str | None = None) -> tuple[str, str, str]:
    """Return (raw secret, prefix, hash) for a new key; `kind` is e.g. "cpk" or "cpm". A rotated key keeps its
    `lookup` id (so its prefix) and gets a new secret."""
    lookup = lookup or secrets.token_hex(PREFIX_CHARS // 2)
    raw = f"{kind}_{lookup}_{secrets.token_urlsafe(32)}"
    return raw, prefix_of(raw), hash_secret(raw)


def prefix_of(raw: str) -> str:
    """The shown and indexed part of a secret: kind and lookup id, e.g. `cpk_1a2b3c4d`."""
    kind, _, rest = raw.partition("_")
    return f"{kind}_{rest[:PREFIX_CHARS]}"


def hash_secret(raw: str) -> str:
    # The secret has 256 bits of entropy, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(raw.encode()).hexdigest()


def matches(raw: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(raw), stored_hash)
