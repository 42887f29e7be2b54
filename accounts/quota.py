"""Quota snapshots: from x-codex-* response headers, codex.rate_limits events and wham/usage."""

from datetime import UTC, datetime, timedelta


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _reset_time(reset_at, reset_after, now: datetime) -> datetime | None:
    try:
        if (at := _number(reset_at)) is not None:
            return datetime.fromtimestamp(at, UTC)
        if (after := _number(reset_after)) is not None:
            return now + timedelta(seconds=after)
    except (OverflowError, OSError, ValueError):
        pass  # a reset time no calendar holds: better no snapshot than a failed turn
    return None


def _window(prefix: str, used, minutes, reset_at, reset_after, now: datetime) -> dict:
    fields = {}
    if (percent := _number(used)) is not None:
        fields[f"{prefix}_used_percent"] = percent
    if (window := _number(minutes)) is not None:
        fields[f"{prefix}_window_minutes"] = int(window)
    if (reset := _reset_time(reset_at, reset_after, now)) is not None:
        fields[f"{prefix}_resets_at"] = reset
    return fields


def from_headers(headers, now: datetime) -> dict:
    """UpstreamAccount quota fields found in the backend's x-codex-* headers (empty when none)."""
    fields = {}
    for prefix in ("primary", "secondary"):
        base = f"x-codex-{prefix}-"
        fields.update(
            _window(
                prefix,
                headers.get(base + "used-percent"),
                headers.get(base + "window-minutes"),
                headers.get(base + "reset-at"),
                headers.get(base + "reset-after-seconds"),
                now,
            )
        )
    return fields


def from_usage_payload(payload: dict, now: datetime) -> dict:
    """Quota fields from wham/usage or a codex.rate_limits event (both carry windows)."""
    limits = payload.get("rate_limit") or payload.get("rate_limits") or payload
    fields = {}
    for prefix in ("primary", "secondary"):
        window = limits.get(f"{prefix}_window") or limits.get(prefix) or {}
        if not isinstance(window, dict):
            continue
        seconds = _number(window.get("limit_window_seconds"))
        minutes = window.get("window_minutes", seconds / 60 if seconds else None)
        reset_at = window.get("reset_at", window.get("resets_at"))
        reset_after = window.get("reset_after_seconds", window.get("resets_in_seconds"))
        fields.update(_window(prefix, window.get("used_percent"), minutes, reset_at, reset_after, now))
    return fields
