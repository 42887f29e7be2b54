"""The life of a Pool API key, the same from the admin, manage.py and MCP: pause, resume, rotate; each audited."""

from datetime import timedelta

from django.utils import timezone

from . import audit
from .models import PoolApiKey


class KeyNotFound(LookupError):
    pass


def by_prefix(prefix: str) -> PoolApiKey:
    """A key by its shown prefix (`cpk_1a2b3c4d`, a trailing ellipsis ignored)."""
    key = PoolApiKey.objects.select_related("pool").filter(prefix=prefix.strip().rstrip("….")).first()
    if key is None:
        raise KeyNotFound(f"no Pool API key with prefix {prefix!r}")
    return key


def _changed(key: PoolApiKey, actor: str, action: str, change) -> PoolApiKey:
    before = audit.snapshot(key)
    result = change()
    key.save()
    audit.record(actor, action, key, before, audit.snapshot(key))
    return result


def pause(key: PoolApiKey, actor: str) -> PoolApiKey:
    """Refuse the key's turns (403 key_paused) until it is resumed; nothing else about it changes."""
    if key.paused_at is None:
        _changed(key, actor, "pause_api_key", lambda: setattr(key, "paused_at", timezone.now()))
    return key


def resume(key: PoolApiKey, actor: str) -> PoolApiKey:
    if key.paused_at is not None:
        _changed(key, actor, "resume_api_key", lambda: setattr(key, "paused_at", None))
    return key


def rotate(key: PoolApiKey, actor: str, grace_seconds: int = 0) -> str:
    """A new secret for the key (returned raw, to show once); the old one works `grace_seconds` more."""
    if grace_seconds < 0:
        raise ValueError("the grace period cannot be negative")
    return _changed(key, actor, "rotate_api_key", lambda: key.rotate(timedelta(seconds=grace_seconds), timezone.now()))


def state(key: PoolApiKey, now) -> str:
    """revoked, expired, paused or active."""
    return key.refusal(now) or "active"
