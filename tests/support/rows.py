"""Waiting for request log rows: a turn is accounted after its answer has ended, so a test waits for its row."""

import time

from accounts.models import RequestLog


def key_rows(key_row, count: int, timeout: float = 10, **filters) -> list[RequestLog]:
    """The key's RequestLog rows matching `filters`, oldest first, once at least `count` are written."""
    query = RequestLog.objects.filter(api_key=key_row, **filters).order_by("created_at", "id")
    deadline = time.monotonic() + timeout
    while True:
        rows = list(query.all())  # a fresh query each time: a QuerySet keeps the rows it read first
        if len(rows) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(rows) >= count, f"expected {count} RequestLog rows of {key_row} {filters or ''}, found {len(rows)}"
    return rows
