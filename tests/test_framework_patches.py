"""Where the pooler leans on Daphne's, Twisted's or Django's internals, these tests fail on the upgrade that
breaks it, instead of the pooler quietly losing what the patch bought (see pooler/asgi.py)."""

import os
import tempfile
from pathlib import Path

import httpx
import pytest
from daphne import http_protocol

import pooler.asgi  # noqa: F401  (installs the pooler's classes into Daphne)
from pooler.daphne_channel import PoolerChannel
from pooler.daphne_request import LeanRequest
from tests.codex_turns import session_headers, turn_body
from tests.factories import make_account, make_key, make_pool
from tests.test_runtime_handler import get_response

pytestmark = pytest.mark.django_db(transaction=True)


def test_daphne_builds_its_connections_and_requests_from_the_poolers_classes():
    # Both are read from module attributes when a connection is made (HTTPFactory.protocol, http_protocol.WebRequest).
    channel = http_protocol.HTTPFactory(server=None).buildProtocol(("127.0.0.1", 50000))
    assert type(channel) is PoolerChannel and channel.requestFactory is LeanRequest


def test_an_open_stream_keeps_no_copy_of_its_request_body(pooler, simulator):
    pool = make_pool()
    account = make_account(pool, simulator, sim_fields={"percent_per_turn": 0.0})
    simulator.patch_account(account.chatgpt_account_id, faults=[{"kind": "slow", "event_delay": 0.05, "count": 1}])
    _, key = make_key(pool)
    # Over 100 KB, Twisted keeps a body in a temporary file until the response ends, unless LeanRequest lets go.
    body = turn_body("x" * 300_000)
    url = f"{pooler.codex_base_url}/responses"
    with httpx.stream("POST", url, json=body, headers=session_headers(key), timeout=60) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        next(chunks)  # streaming: the application has had the body for a while
        held = []
        for fd in Path(f"/proc/{pooler.process.pid}/fd").iterdir():
            try:
                held.append(os.readlink(fd))
            except FileNotFoundError:
                continue
        # An unlinked temporary file (the checkout itself may live under the temporary directory too).
        spooled = [t for t in held if t.startswith(tempfile.gettempdir()) and t.endswith(" (deleted)")]
        assert not spooled, held
        for _ in chunks:
            pass


async def test_the_runtime_routes_run_without_django_middleware():
    # settings.RUNTIME_MIDDLEWARE is empty: the security middleware's headers show that the admin's handler
    # has its middleware and the runtime handler (made under override_settings) none.
    runtime = await get_response("/healthz")
    admin = await get_response("/admin/login/")
    assert runtime["status"] == 200 and b"x-frame-options" not in {name.lower() for name, _ in runtime["headers"]}
    assert admin["status"] == 200 and b"x-frame-options" in {name.lower() for name, _ in admin["headers"]}
