"""A running simulator (`python -m simulator` in a subprocess) and a small client for its control API."""

import sys
import uuid
from pathlib import Path

import httpx

from .procs import free_port, process_output, start_process, stop_process

REPO = Path(__file__).resolve().parents[2]


class Simulator:
    def __init__(self, url: str, process=None):
        self.url = url.rstrip("/")
        self.codex_base_url = f"{self.url}/backend-api/codex"
        self.process = process
        self._http = httpx.Client(base_url=self.url, timeout=30)

    def _ok(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise RuntimeError(
                f"simulator {response.request.method} {response.request.url.path}: "
                f"{response.status_code} {response.text}"
            )
        return response

    def add_account(self, account_id: str | None = None, **fields) -> dict:
        """Register an account (ids and tokens generated when not given); returns its fields incl. tokens."""
        payload = {"account_id": account_id or f"acct-sim-{uuid.uuid4().hex[:12]}", **fields}
        return self._ok(self._http.post("/_sim/accounts", json=payload)).json()

    def patch_account(self, account_id: str, **fields) -> dict:
        return self._ok(self._http.patch(f"/_sim/accounts/{account_id}", json=fields)).json()

    def get_account(self, account_id: str) -> dict:
        return self._ok(self._http.get(f"/_sim/accounts/{account_id}")).json()

    def requests(self, **filters) -> list[dict]:
        """The request log (metadata only), optionally filtered by exact field values, e.g. kind="turn"."""
        return self._ok(self._http.get("/_sim/requests", params={k: str(v) for k, v in filters.items()})).json()

    def clear_requests(self) -> None:
        self._ok(self._http.delete("/_sim/requests"))

    def stats(self) -> dict:
        return self._ok(self._http.get("/_sim/stats")).json()

    def reset_stats(self) -> dict:
        return self._ok(self._http.post("/_sim/stats/reset")).json()

    def next_login(self, account_id: str | None = None, deny: bool = False) -> None:
        self._ok(self._http.post("/_sim/next_login", json={"account_id": account_id, "deny": deny}))

    def reset(self) -> None:
        self._ok(self._http.post("/_sim/reset"))

    def config(self) -> dict:
        """The backend-wide switches, e.g. `{"compact_endpoint": false}`."""
        return self._ok(self._http.get("/_sim/config")).json()

    def set_config(self, **fields) -> dict:
        return self._ok(self._http.patch("/_sim/config", json=fields)).json()

    def output(self) -> str:
        return process_output(self.process) if self.process is not None else ""

    def close(self) -> None:
        self._http.close()
        if self.process is not None:
            stop_process(self.process)
            self.process = None


def start_simulator() -> Simulator:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_process(
        [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port)],
        None,
        f"{url}/_sim/stats",
        cwd=str(REPO),
    )
    return Simulator(url, process)
