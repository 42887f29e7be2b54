"""Starting and stopping helper processes (the simulator, servers) for tests and benchmarks."""

import os
import socket
import subprocess
import tempfile
import time

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_process(
    args: list[str], env: dict | None, url_to_poll: str, timeout: float = 30, cwd: str | None = None
) -> subprocess.Popen:
    """Start `args` and wait until `url_to_poll` answers below 500; raise with the output if it dies or stalls."""
    output = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the process, closed in stop_process
    process = subprocess.Popen(
        args, env={**os.environ, **(env or {})}, cwd=cwd, stdout=output, stderr=subprocess.STDOUT
    )
    process.output_file = output
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{args[:4]} exited with {process.returncode}:\n{process_output(process)}")
        try:
            if httpx.get(url_to_poll, timeout=1).status_code < 500:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    stop_process(process)
    raise RuntimeError(f"{url_to_poll} did not answer within {timeout} s:\n{process_output(process)}")


def process_output(process: subprocess.Popen) -> str:
    output = getattr(process, "output_file", None)
    if output is None or output.closed:
        return ""
    output.seek(0)
    return output.read().decode(errors="replace")[-5000:]


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    output = getattr(process, "output_file", None)
    if output is not None and not output.closed:
        output.close()
