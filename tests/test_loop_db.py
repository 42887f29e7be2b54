"""A plain turn's statements on the event loop (proxy/loop_db.py) read and write the rows the database threads
do, run once more on a new connection when theirs died with the server, and raise Django's OperationalError
(answered 503) when the server cannot be reached."""

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.forms.models import model_to_dict
from django.utils import timezone

from accounts import pricing
from accounts.models import RequestLog, SessionAffinity
from accounts.secrets import prefix_of
from proxy import loop_db, request_log, routing, turn_reads
from proxy.accounting import Turn, finish
from proxy.turns import begin, recheck
from tests.factories import make_account, make_key, make_pool

# The loop's own connections see committed rows only.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql():
    if not loop_db.available():
        pytest.skip("the loop's statements are PostgreSQL's")


def _fields(row) -> dict:
    return {f.attname: getattr(row, f.attname) for f in type(row)._meta.concrete_fields}


def test_the_loop_reads_the_rows_the_threads_read():
    pool = make_pool(allowed_models=["gpt-5.2"], sticky_ttl_seconds=600, default_budgets=[])
    key, raw = make_key(pool, allowed_networks=["10.0.0.0/8"], expires_at=timezone.now() + timedelta(days=1))
    later = timezone.now() + timedelta(hours=1)
    account = make_account(pool, model_slugs=["gpt-5.2"], cooldown_until=later, primary_used_percent=12.5)
    owner = make_account(pool)
    now = timezone.now()
    SessionAffinity.objects.create(
        pool=pool, session_key_hash="h", account=owner, expires_at=now + timedelta(minutes=5), foreign_items=3
    )

    async def on_loop():
        read_key = await turn_reads.key_by_prefix_on_loop(prefix_of(raw))
        return read_key, await turn_reads.accounts_and_pin_on_loop([account.id], pool.id, "h", now)

    read_key, (accounts, pin) = asyncio.run(on_loop())
    threads_key = turn_reads.key_by_prefix(prefix_of(raw))
    assert _fields(read_key) == _fields(threads_key) and _fields(read_key.pool) == _fields(threads_key.pool)
    threads_accounts, threads_pin = turn_reads.accounts_and_pin([account.id], pool.id, "h", now)
    assert set(accounts) == set(threads_accounts) == {account.id, owner.id}
    for account_id, read in accounts.items():
        assert read.access_token == threads_accounts[account_id].access_token
        assert model_to_dict(read, exclude=["id_token"]) == model_to_dict(
            threads_accounts[account_id], exclude=["id_token"]
        )
    pin_fields = ("account_id", "expires_at", "foreign_items", "compacted")
    assert [getattr(pin, f) for f in pin_fields] == [getattr(threads_pin, f) for f in pin_fields]


def test_the_loop_writes_the_row_the_threads_write():
    pool = make_pool()
    key, _ = make_key(pool)
    account = make_account(pool)
    values = dict(
        created_at=timezone.now(),
        pool=pool,
        api_key=key,
        account=account,
        route="codex.responses",
        model="gpt-5.2",
        status_code=200,
        outcome="ok",
        attempts=[{"account": account.label, "outcome": "ok", "status": 200}],
        cost_usd="0.001250",
        client_ip="10.1.2.3",
        input_tokens=7,
        total_tokens=9,
    )
    request_log.insert(request_id="on-a-thread", **values)
    asyncio.run(request_log.insert_on_loop(request_id="on-the-loop", **values))
    rows = [
        model_to_dict(RequestLog.objects.get(request_id=r), exclude=["id", "request_id"])
        for r in ("on-a-thread", "on-the-loop")
    ]
    assert rows[0] == rows[1]


def test_a_connection_that_died_is_replaced_and_an_unreachable_server_is_an_operational_error(monkeypatch):
    async def backend_pid() -> int:
        return (await loop_db.fetch("SELECT pg_backend_pid()", []))[0][0]

    def terminate(pid: int) -> None:  # the server ends the kept connection, as a restart would
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        finally:
            connection.close()

    async def killed_then_read():
        first = await backend_pid()
        await asyncio.to_thread(terminate, first)
        return first, await backend_pid()

    first, second = asyncio.run(killed_then_read())
    assert first != second
    monkeypatch.setitem(connection.settings_dict, "PORT", "1")  # nothing listens there
    with pytest.raises(OperationalError):
        asyncio.run(backend_pid())


class _NoThreads(ThreadPoolExecutor):
    def submit(self, fn, /, *args, **kwargs):
        raise AssertionError("a plain turn asked for a database thread")


def test_a_plain_turn_goes_to_no_database_thread():
    """Its key, its plan and its row, and a later websocket turn's key and account, on the loop alone (the loop's
    default executor, where database threads come from, refuses every call)."""
    pool = make_pool()
    now = timezone.now()
    key, raw = make_key(pool, last_used_at=now)
    for _ in range(2):
        make_account(pool, last_used_at=now)
    routing.pool_snapshot(pool)  # the process's routing snapshot and prices are fresh, as on a busy process
    pricing.table()

    async def one_turn():
        asyncio.get_running_loop().set_default_executor(_NoThreads())
        turn = Turn(request_id=uuid.uuid4().hex, route="codex.responses", model="gpt-5.2")
        plan = await begin(turn, None, raw, {"model": "gpt-5.2", "input": []})
        turn.account, turn.first_byte_at = plan.accounts[0], time.monotonic()
        turn.status_code, turn.outcome = 200, "ok"
        await finish(turn)
        # A later turn on the same websocket: the key and the connection's account read again.
        later = Turn(request_id=uuid.uuid4().hex, route="codex.responses", transport="websocket", model="gpt-5.2")
        assert await recheck(later, raw, turn.account.id, {"model": "gpt-5.2", "input": []}, None) == turn.account
        return turn

    turn = asyncio.run(one_turn())
    row = RequestLog.objects.get(request_id=turn.request_id)
    assert (row.api_key_id, row.account_id, row.status_code) == (key.id, turn.account.id, 200)
