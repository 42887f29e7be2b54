"""`python -m deploy.serve` (supervisord: web processes on one listening socket, and the worker) on the test
database, and which of its processes holds which connection, read from /proc as `ss -p` reads it."""

import os
import tempfile
from pathlib import Path

from bench.stack import served_env, served_processes, start_served_pooler, stop_served_pooler

from .pooler import REPO, subprocess_database_url
from .procs import free_port

ESTABLISHED, LISTEN = "01", "0A"  # states in /proc/net/tcp


class ServedPooler:
    def __init__(self, web_processes: int, simulator_url: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.codex_base_url = f"{self.url}/backend-api/codex"
        self._run_dir = tempfile.TemporaryDirectory(prefix="serve-")
        extra = {
            "DATABASE_URL": subprocess_database_url(),
            "POOLER_RUN_DIR": self._run_dir.name,
            "PYTHONUNBUFFERED": "1",
        }
        self.env = served_env(self.port, web_processes, extra)
        self.log_path = REPO / "test-artifacts" / f"serve-{self.port}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        self.process = start_served_pooler(self.port, simulator_url, web_processes, extra, self.log_path)
        self.processes = served_processes(self.env)
        self.web_pids = {pid for name, pid in self.processes.items() if name.startswith("web:")}

    def pids_by_client_port(self) -> dict[int, int]:
        """The pooler's open connections: the client's port -> the pid of the web process that accepted it."""
        sockets = _tcp_sockets()
        held = {}
        for pid in self.web_pids:
            for inode in _socket_inodes(pid):
                local_port, remote_port, state = sockets.get(inode, (None, None, None))
                if local_port == self.port and state == ESTABLISHED:
                    held[remote_port] = pid
        return held

    def listening_sockets(self) -> dict[int, set[int]]:
        """pid -> the inodes of the sockets listening on the pooler's port that the web process holds."""
        sockets = _tcp_sockets()
        listening = {inode for inode, (port, _, state) in sockets.items() if port == self.port and state == LISTEN}
        return {pid: _socket_inodes(pid) & listening for pid in self.web_pids}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        """Stop supervisord (and so its processes) if it runs; its exit status."""
        if self.process.poll() is None:
            stop_served_pooler(self.process)
        self._run_dir.cleanup()
        return self.process.returncode


def _tcp_sockets() -> dict[int, tuple[int, int, str]]:
    """Every TCP socket of this network namespace: inode -> (local port, remote port, state)."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            sockets[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state)
    return sockets


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes
