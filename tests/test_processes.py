"""`python -m deploy.serve`, the production command: supervisord runs two web processes on one listening socket
and the worker, on one database. Both processes serve turns, a key's limits hold across them, and stopping
supervisord leaves no process behind.

Which process served a turn is read from the outside, as `ss -tp` would: the turn's connection (the client's
port) is held open by exactly one process, the one whose accept() took it from the shared socket.
"""

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from accounts.models import ConcurrencySlot, RequestLog
from tests.codex_turns import session_headers, turn_body
from tests.factories import make_account, make_key, make_pool
from tests.support.served import ServedPooler

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def served(django_db_setup, django_db_blocker, simulator):
    server = ServedPooler(web_processes=2, simulator_url=simulator.url)
    yield server
    server.stop()


@contextlib.contextmanager
def only_running(served: ServedPooler, pid: int):
    """Every other web process stopped (SIGSTOP): a connection made meanwhile is accepted by `pid`, since a stopped
    process cannot call accept(). Which process wakes first is otherwise the kernel's choice, and under load one
    process can take every connection of a short test."""
    others = served.web_pids - {pid}
    for other in others:
        os.kill(other, signal.SIGSTOP)
    try:
        yield
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)


async def turns_by_process(served: ServedPooler, key: str, count: int, stagger: float) -> list[tuple[int, int]]:
    """`count` turns started `stagger` seconds apart, each on a connection of its own that the web processes took
    in turn; (status, pid of the web process that served it) for each, in order."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(httpx.AsyncClient(timeout=60)) for _ in range(count)]
        pids = sorted(served.web_pids)
        for i, client in enumerate(clients):
            with only_running(served, pids[i % len(pids)]):
                (await client.get(f"{served.url}/healthz")).raise_for_status()  # kept alive for the turn

        async def one(i: int) -> tuple[int, int]:
            await asyncio.sleep(i * stagger)  # spread out, as agents start turns
            url = f"{served.codex_base_url}/responses"
            async with clients[i].stream("POST", url, json=turn_body(), headers=session_headers(key)) as response:
                await response.aread()
                return response.status_code, response.extensions["network_stream"].get_extra_info("client_addr")[1]

        results = await asyncio.gather(*(one(i) for i in range(count)))
        # Every client keeps its connection open, so each is still held by the process that accepted it.
        held = served.pids_by_client_port()
    return [(status, held[port]) for status, port in results]


def test_the_web_processes_share_one_listening_socket(served):
    listening = served.listening_sockets()
    assert len(listening) == 2 and all(len(inodes) == 1 for inodes in listening.values())
    assert len(set.union(*listening.values())) == 1


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs `ss` (iproute2) to read a socket's listen backlog")
def test_the_listening_socket_keeps_a_deep_backlog(served):
    # For a listening socket, ss's Send-Q column is its backlog.
    line = subprocess.run(["ss", "-Hltn", f"sport = :{served.port}"], capture_output=True, text=True).stdout
    assert line.split()[2] == "1024"


def test_turns_are_served_by_both_web_processes(served, simulator):
    pool = make_pool()
    account = make_account(pool, simulator, sim_fields={"percent_per_turn": 0.0})
    # Turns that last a while keep a process busy, as real ones do.
    simulator.patch_account(account.chatgpt_account_id, faults=[{"kind": "slow", "event_delay": 0.05, "count": 12}])
    key_row, key = make_key(pool)
    served_by = asyncio.run(turns_by_process(served, key, 12, stagger=0.1))
    assert [status for status, _ in served_by] == [200] * 12
    assert {pid for _, pid in served_by} == served.web_pids
    deadline = time.monotonic() + 5
    while RequestLog.objects.filter(api_key=key_row, status_code=200).count() < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert RequestLog.objects.filter(api_key=key_row, status_code=200).count() == 12


def test_a_keys_rpm_holds_across_the_web_processes(served, simulator):
    pool = make_pool()
    account = make_account(pool, simulator, sim_fields={"percent_per_turn": 0.0})
    key_row, key = make_key(pool, rpm=30)
    served_by = asyncio.run(turns_by_process(served, key, 60, stagger=0.02))
    statuses = [status for status, _ in served_by]
    assert statuses.count(200) == 30 and statuses.count(429) == 30
    assert {pid for status, pid in served_by if status == 200} == served.web_pids  # both admitted turns
    assert len(simulator.requests(account_id=account.chatgpt_account_id, kind="turn")) == 30
    refused = RequestLog.objects.filter(api_key=key_row, status_code=429)
    assert refused.count() == 30 and all(r.error_code == "key_rpm_limit" for r in refused)


def test_a_keys_concurrent_turns_hold_across_the_web_processes(served, simulator):
    pool = make_pool()
    account = make_account(pool, simulator, sim_fields={"percent_per_turn": 0.0})
    simulator.patch_account(account.chatgpt_account_id, faults=[{"kind": "slow", "event_delay": 0.1, "count": 12}])
    key_row, key = make_key(pool, max_concurrent=2)
    simulator.reset_stats()
    served_by = asyncio.run(turns_by_process(served, key, 12, stagger=0.05))
    assert sorted(status for status, _ in served_by) == [200] * 2 + [429] * 10
    assert {pid for _, pid in served_by} == served.web_pids
    assert simulator.stats()["max_open_streams"] == 2
    deadline = time.monotonic() + 5
    while ConcurrencySlot.objects.filter(api_key=key_row).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not ConcurrencySlot.objects.filter(api_key=key_row).exists()


def test_stopping_supervisord_stops_every_process(served):
    started = {served.process.pid, *served.processes.values()}  # supervisord, web processes, worker
    assert len(started) == 4
    assert served.stop() == 0
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()], served.log()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{served.url}/healthz", timeout=2)
