"""Encrypted history bound to the account that produced it, like the backend's `encrypted_content`.

The real backend encrypts reasoning and compaction items with a key of the producing organisation, so
another account cannot read them back. Here the blob is "gAAAA" + base64 of an HMAC-signed payload that
names the account: enough to reproduce `invalid_encrypted_content` when a session moves.
"""

import base64
import hashlib
import hmac
import json
import os

_SECRET = os.urandom(32)
PREFIX = "gAAAA"


def seal(account_id: str, kind: str) -> str:
    payload = json.dumps({"a": account_id, "k": kind, "n": os.urandom(6).hex()}, separators=(",", ":")).encode()
    mac = hmac.new(_SECRET, payload, hashlib.sha256).digest()[:16]
    return PREFIX + base64.urlsafe_b64encode(mac + payload).decode()


def sealed_by(blob: str) -> str | None:
    """The account that produced `blob`, or None when it is not a blob of this simulator run."""
    if not isinstance(blob, str) or not blob.startswith(PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(blob[len(PREFIX) :])
        mac, payload = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, hmac.new(_SECRET, payload, hashlib.sha256).digest()[:16]):
            return None
        return json.loads(payload)["a"]
    except (ValueError, KeyError, TypeError):
        return None
