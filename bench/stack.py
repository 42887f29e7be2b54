"""Start the simulator and a pooler against it, seeded with a pool, accounts and a key (demo and benchmarks)."""

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def start(args: list[str], url: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    if log:
        log.write_bytes(b"")
    # Appending: supervisord's children write to its standard output through a file of their own, which would
    # overwrite its lines at a shared offset.
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(args, cwd=REPO, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    wait_for(url, process)
    return process


@dataclass
class Stack:
    simulator_url: str
    pooler_url: str
    api_key: str
    accounts: list[dict]
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def codex_base_url(self) -> str:
        return f"{self.pooler_url}/backend-api/codex"

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def seed(simulator_url: str, pool_name: str, count: int, sim_fields: dict | None = None) -> tuple[str, list[dict]]:
    """A pool of `count` simulated accounts and a fresh key; the accounts are registered at the simulator."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pooler.settings")
    django.setup()
    from accounts.importing import store_account
    from accounts.models import Pool, PoolApiKey, UpstreamAccount
    from accounts.sample_auth import sample_auth_json

    # A fresh pool each start: accounts of an earlier run point at a simulator that is gone.
    UpstreamAccount.objects.filter(memberships__pool__name=pool_name).delete()
    Pool.objects.filter(name=pool_name).delete()
    pool = Pool.objects.create(name=pool_name)
    accounts = []
    for i in range(count):
        tokens = sample_auth_json(email=f"{pool_name}-{i}@example.com")["tokens"]
        registered = {
            "account_id": tokens["account_id"],
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "email": f"{pool_name}-{i}@example.com",
            **(sim_fields or {}),
        }
        httpx.post(f"{simulator_url}/_sim/accounts", json=registered, timeout=10).raise_for_status()
        store_account(
            tokens,
            pool,
            label=f"{pool_name}-{i}-{tokens['account_id'][-4:]}",
            base_url=f"{simulator_url}/backend-api/codex",
            actor="demo",
        )
        accounts.append(registered)
    key = PoolApiKey(pool=pool, name=f"{pool_name} key")
    raw = key.issue()
    key.save()
    return raw, accounts


def start_pooler(port: int, simulator_url: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    """A pooler process (Daphne) on `port`, against the simulator's auth server, answering /healthz."""
    return start(
        [
            sys.executable,
            "-m",
            "daphne",
            "-e",
            f"tcp:port={port}:interface=127.0.0.1:backlog=1024",
            "pooler.asgi:application",
        ],
        f"http://127.0.0.1:{port}/healthz",
        env={"POOLER_AUTH_BASE_URL": simulator_url, **(env or {})},
        log=log,
    )


def served_env(port: int, web_processes: int, env: dict | None = None) -> dict:
    """The environment of `python -m deploy.serve` on `port` with `web_processes` web processes (and of
    `python -m deploy.serve status` for it)."""
    return {
        "PORT": str(port),
        "POOLER_BIND": "127.0.0.1",
        "POOLER_WEB_PROCESSES": str(web_processes),
        **(env or {}),
    }


def served_processes(env: dict) -> dict[str, int]:
    """The running processes of a `python -m deploy.serve` started with `env`: supervisor's name -> pid."""
    status = subprocess.run(
        [sys.executable, "-m", "deploy.serve", "status"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    # e.g. "web:web-0                        RUNNING   pid 31418, uptime 0:00:06"
    return {
        fields[0]: int(fields[3].rstrip(","))
        for fields in (line.split() for line in status.stdout.splitlines())
        if len(fields) > 3 and fields[1] == "RUNNING"
    }


def start_served_pooler(
    port: int, simulator_url: str, web_processes: int, env: dict | None = None, log: Path | None = None
) -> subprocess.Popen:
    """`python -m deploy.serve` on `port`: supervisord with `web_processes` Daphnes on one listening socket and
    the worker, against the simulator's auth server; returned once every web process runs."""
    env = served_env(port, web_processes, {"POOLER_AUTH_BASE_URL": simulator_url, **(env or {})})
    process = start([sys.executable, "-m", "deploy.serve"], f"http://127.0.0.1:{port}/healthz", env=env, log=log)
    deadline = time.monotonic() + 30
    while sum(name.startswith("web:") for name in served_processes(env)) < web_processes:
        if process.poll() is not None or time.monotonic() > deadline:
            stop_served_pooler(process)
            raise RuntimeError(f"deploy.serve on port {port} did not start its {web_processes} web processes")
        time.sleep(0.2)
    return process


def stop_served_pooler(process: subprocess.Popen) -> int:
    """Stop supervisord and so every process it started; its exit status."""
    process.terminate()
    # Never killed: supervisord is what stops its children (it waits up to 10 s for each, then kills it).
    return process.wait(60)


def start_stack(
    port: int,
    pool_name: str = "demo",
    accounts: int = 3,
    sim_fields: dict | None = None,
    logs: Path | None = None,
    pooler_env: dict | None = None,
) -> Stack:
    python = sys.executable
    sim_port = free_port()
    simulator_url = f"http://127.0.0.1:{sim_port}"
    processes = [
        start(
            [python, "-m", "simulator", "--host", "127.0.0.1", "--port", str(sim_port)],
            f"{simulator_url}/_sim/requests",
            log=logs / "simulator.log" if logs else None,
        )
    ]
    try:
        subprocess.run([python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, check=True)
        raw_key, registered = seed(simulator_url, pool_name, accounts, sim_fields)
        pooler_url = f"http://127.0.0.1:{port}"
        processes.append(start_pooler(port, simulator_url, pooler_env, logs / "pooler.log" if logs else None))
    except BaseException:
        for process in processes:
            process.terminate()
        raise
    return Stack(simulator_url, pooler_url, raw_key, registered, processes)
