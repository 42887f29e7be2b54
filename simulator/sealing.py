"""Encrypted history bound to the account that produced it, like the backend's `encrypted_content`.

The real backend encrypts reasoning and compaction items with a key of the producing organisation, so
another account cannot read them back. Here the blob is "gAAAA" + base64 of an HMAC-signed payload that
names the account: enough to reproduce `invalid_encrypted_content` when a session moves. A compaction's
blob also carries what the simulated model remembers (its summary and tool outputs), readable only by the
account that sealed it, so a moved session visibly forgets.
"""

import base64
import hashlib
import hmac
import json
import os
import zlib

_SECRET = os.urandom(32)
PREFIX = "gAAAA"


def seal(account_id: str, kind: str, payload: dict | None = None) -> str:
    sealed = {"a": account_id, "k": kind, "n": os.urandom(6).hex()}
    if payload is not None:
        sealed["p"] = payload
    # Compressed: a compaction's memory quotes tool outputs, and the CLI sends the blob back on every turn.
    body = zlib.compress(json.dumps(sealed, separators=(",", ":")).encode())
    mac = hmac.new(_SECRET, body, hashlib.sha256).digest()[:16]
    return PREFIX + base64.urlsafe_b64encode(mac + body).decode()


def _open(blob) -> dict | None:
    """The sealed dict of a blob of this simulator run, or None when it is not one (or was tampered with)."""
    if not isinstance(blob, str) or not blob.startswith(PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(blob[len(PREFIX) :])
        mac, body = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, hmac.new(_SECRET, body, hashlib.sha256).digest()[:16]):
            return None
        sealed = json.loads(zlib.decompress(body))
        return sealed if isinstance(sealed, dict) else None
    except (ValueError, zlib.error):
        return None


def sealed_by(blob) -> str | None:
    """The account that produced `blob`, or None when it is not a blob of this simulator run."""
    sealed = _open(blob)
    return sealed.get("a") if sealed is not None else None


def unseal(blob, account_id: str) -> dict | None:
    """The payload sealed in `blob` ({} when none), only for the account that sealed it; else None."""
    sealed = _open(blob)
    if sealed is None or sealed.get("a") != account_id:
        return None
    payload = sealed.get("p")
    return payload if isinstance(payload, dict) else {}
