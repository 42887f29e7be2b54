"""One JSON log line per turn: ids, pool, key prefix, account, status, timings; never a secret or prompt."""

import json
import time

import httpx
import pytest

from tests.codex_turns import session_headers, turn_body
from tests.factories import make_account, make_key, make_pool

pytestmark = pytest.mark.django_db(transaction=True)


def json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    return lines


def test_each_turn_writes_one_json_line_without_secrets(pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator)
    key_row, key = make_key(pool)
    marker = "json-log-marker-prompt"
    response = httpx.post(
        f"{pooler.codex_base_url}/responses", json=turn_body(marker), headers=session_headers(key), timeout=30
    )
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + 5
    while not (found := [x for x in json_lines(pooler.log()) if x.get("request_id") == request_id]):
        assert time.monotonic() < deadline, "no JSON line for the turn"
        time.sleep(0.05)
    (line,) = found
    assert line["pool"] == pool.name and line["key_prefix"] == key_row.prefix and line["account"] == account.label
    assert line["status"] == 200 and line["outcome"] == "ok" and line["duration_ms"] >= line["ttft_ms"] >= 0
    log = pooler.log()
    for secret in (key, account.access_token, account.refresh_token, marker):
        assert secret not in log
