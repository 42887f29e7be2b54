"""PostgreSQL stops for a few seconds under steady turns: every answer is a 200 or a 503 database_unavailable
with Retry-After, turns flow again as soon as it is back, and every turn answered 200 gets its RequestLog row,
to the row (written late, from the backlog, if need be)."""

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.codex_turns import session_headers, sse_events, turn_body
from tests.support.pgcluster import PrivateCluster, unavailable_reason
from tests.support.pooler import REPO, PoolerServer
from tests.test_websocket_route import create_frame, read_turn, ws_headers, ws_url

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))

SEED = """
import django
django.setup()
from tests.factories import make_account, make_key, make_pool
from tests.support.simulator import Simulator
simulator = Simulator({simulator_url!r})
pool = make_pool("outage")
for _ in range(2):
    make_account(pool, simulator, sim_fields={{"percent_per_turn": 0.0}})
print(make_key(pool)[1])
"""


@dataclass
class Outage:
    cluster: PrivateCluster
    pooler: PoolerServer
    key: str

    def served_rows(self) -> int:
        return self.cluster.query("pooler", "SELECT count(*) FROM accounts_requestlog WHERE status_code = 200")[0][0]

    def wait_for_rows(self, count: int, timeout: float = 30) -> int:
        rows, deadline = -1, time.monotonic() + timeout
        while rows != count and time.monotonic() < deadline:
            time.sleep(0.2)
            rows = self.served_rows()
        return rows


@pytest.fixture(scope="module")
def outage(simulator):
    """A pooler on a private PostgreSQL that the tests stop and start."""
    cluster = PrivateCluster()
    url = cluster.create_pooler_database("pooler")
    seed = subprocess.run(
        [sys.executable, "-c", SEED.format(simulator_url=simulator.url)],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert seed.returncode == 0, seed.stderr[-3000:]
    pooler = PoolerServer(extra_env={"DATABASE_URL": url, "POOLER_AUTH_BASE_URL": simulator.url})
    yield Outage(cluster, pooler, seed.stdout.strip().splitlines()[-1])
    pooler.close()
    cluster.close()


@dataclass
class Answer:
    client: int
    sent: float  # time.monotonic() when the turn was sent
    status: int
    headers: httpx.Headers
    error: dict | None  # the body's "error" of a refusal
    completed: bool  # a 200 whose stream ended with response.completed


class Traffic:
    """A few clients sending turns back to back; what each answer was, and when its turn was sent."""

    def __init__(self, pooler, key: str, clients: int = 4):
        self.pooler, self.key, self.clients = pooler, key, clients
        self.answers: list[Answer] = []
        self.running = True
        self.threads = [threading.Thread(target=self._client, args=(n,)) for n in range(clients)]
        for thread in self.threads:
            thread.start()

    def _client(self, n: int) -> None:
        with httpx.Client(timeout=30) as client:
            while self.running:
                sent = time.monotonic()
                url = f"{self.pooler.codex_base_url}/responses"
                response = client.post(url, json=turn_body("steady"), headers=session_headers(self.key))
                events = sse_events(response.text) if response.status_code == 200 else []
                completed = bool(events) and events[-1]["type"] == "response.completed"
                error = response.json().get("error") if response.status_code != 200 else None
                self.answers.append(Answer(n, sent, response.status_code, response.headers, error, completed))
                if response.status_code != 200:
                    time.sleep(0.1)

    def stop(self) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(60)


def test_turns_flow_through_a_database_restart(outage):
    pooler, cluster = outage.pooler, outage.cluster
    rows_before = outage.served_rows()
    # A websocket opened before the outage, with a turn served on it.
    with connect(ws_url(pooler), additional_headers=ws_headers(outage.key)) as ws:
        ws.send(create_frame("before"))
        assert read_turn(ws)[-1]["type"] == "response.completed"
        traffic = Traffic(pooler, outage.key)
        try:
            time.sleep(2)
            cluster.stop()
            time.sleep(1)
            ready_during = httpx.get(f"{pooler.url}/readyz", timeout=10).status_code
            metrics_during = httpx.get(f"{pooler.url}/metrics", timeout=10)
            ws.send(create_frame("during"))
            ws_during = read_turn(ws)
            # A new websocket is refused at the upgrade (the Codex CLI then falls back to HTTP, which answers 503).
            with (
                pytest.raises(InvalidStatus) as refused,
                connect(ws_url(pooler), additional_headers=ws_headers(outage.key), open_timeout=10),
            ):
                pass
            time.sleep(1)
            cluster.start()
            back = time.monotonic()
            ws.send(create_frame("after"))
            ws_after = read_turn(ws)
            time.sleep(3)
        finally:
            traffic.stop()
    ready_after = httpx.get(f"{pooler.url}/readyz", timeout=10).status_code

    answers = traffic.answers
    assert {answer.status for answer in answers} == {200, 503}  # served, or told to come back: never a 500
    for answer in answers:
        if answer.status == 503:
            assert answer.error["type"] == "server_error" and answer.error["code"] == "database_unavailable"
            assert answer.headers["retry-after"] == "2"  # POOLER_DATABASE_RETRY_AFTER
            assert answer.headers["x-should-retry"] == "true"
    served = [answer for answer in answers if answer.status == 200]
    assert all(answer.completed for answer in served)
    # Every client is served again once the database is back, and at once: every turn sent after it came back
    # is a 200 (no 503 lingers on the connections that died with the server).
    for client in range(traffic.clients):
        assert any(a.status == 200 for a in answers if a.client == client and a.sent > back), client
    assert [(round(a.sent - back, 2), a.status) for a in answers if a.sent > back and a.status != 200] == []

    assert ws_during[-1]["type"] == "error"
    assert ws_during[-1]["status"] == 503 and ws_during[-1]["headers"] == {"retry-after": "2"}
    assert (ws_during[-1]["error"]["type"], ws_during[-1]["error"]["code"]) == ("server_error", "database_unavailable")
    assert refused.value.response.status_code == 403
    assert ws_after[-1]["type"] == "response.completed"  # the connection that saw the outage serves again

    assert (ready_during, ready_after) == (503, 200)
    assert metrics_during.status_code == 200 and "pooler_database_reachable 0.0" in metrics_during.text
    assert "pooler_accounting_pending" in metrics_during.text

    # The HTTP turns served and the websocket's two, to the row.
    assert outage.wait_for_rows(rows_before + len(served) + 2) == rows_before + len(served) + 2
    log = pooler.log()
    # Said once an outage (twice while the server shuts down: some steps still get through), not per request.
    assert "Traceback" not in log and log.count("database unreachable") < 5
    assert "database reachable again" in log


def test_a_restart_between_turns_costs_no_503(outage):
    """Every kept connection dies with the server; the first step on each runs again on a new one."""
    pooler, cluster = outage.pooler, outage.cluster
    rows_before, said_before = outage.served_rows(), outage.pooler.log().count("database unreachable")
    url = f"{pooler.codex_base_url}/responses"
    with httpx.Client(timeout=30) as client:
        statuses = [client.post(url, json=turn_body(), headers=session_headers(outage.key)).status_code]
        cluster.stop()
        cluster.start()

        def turn(results: list) -> None:
            with httpx.Client(timeout=30) as own:
                results.append(own.post(url, json=turn_body(), headers=session_headers(outage.key)).status_code)

        # Concurrent turns, so that several of the process's database threads meet their dead connection.
        threads = [threading.Thread(target=turn, args=(statuses,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert statuses == [200] * 9
    assert outage.wait_for_rows(rows_before + 9) == rows_before + 9
    log = pooler.log()
    assert "Traceback" not in log and log.count("database unreachable") == said_before
    assert httpx.get(f"{pooler.url}/readyz", timeout=10).status_code == 200
