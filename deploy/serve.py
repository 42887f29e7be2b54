"""`python -m deploy.serve`: the pooler on every core of a host, under supervisord (deploy/supervisord.conf).

supervisord reads its settings from the environment (%(ENV_X)s) but has no defaults for them: this fills them
in, migrates the database and becomes supervisord. With arguments it is supervisorctl for the same install
instead: `python -m deploy.serve status`, `python -m deploy.serve restart web:web-0`.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "deploy" / "supervisord.conf"


def cores() -> int:
    """The cores this process may run on (a container's or taskset's share, where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def environment(environ: dict[str, str]) -> dict[str, str]:
    """`environ` with every variable deploy/supervisord.conf reads (this runs before Django: no settings yet)."""
    port = environ.get("PORT") or "4000"
    return {
        **environ,
        "PORT": port,
        "POOLER_BIND": environ.get("POOLER_BIND") or "127.0.0.1",
        "POOLER_WEB_PROCESSES": environ.get("POOLER_WEB_PROCESSES") or str(cores()),
        "POOLER_WORKERS": environ.get("POOLER_WORKERS") or "1",
        "POOLER_RUN_DIR": environ.get("POOLER_RUN_DIR") or str(REPO / ".cache" / f"serve-{port}"),
        "POOLER_PYTHON": sys.executable,
    }


def main(argv: list[str]) -> None:
    env = environment(dict(os.environ))
    if argv:
        os.execve(sys.executable, [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(CONFIG), *argv], env)
    if not env["POOLER_WEB_PROCESSES"].isdigit() or int(env["POOLER_WEB_PROCESSES"]) < 1:
        sys.exit(f"POOLER_WEB_PROCESSES must be a whole number of at least 1, not {env['POOLER_WEB_PROCESSES']!r}")
    Path(env["POOLER_RUN_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    migrated = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO, env=env)
    if migrated.returncode:
        sys.exit(migrated.returncode)
    # supervisord takes this process's place, so a signal sent to it (SIGTERM from a container runtime or
    # systemd) stops every process it started.
    os.execve(sys.executable, [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(CONFIG)], env)


if __name__ == "__main__":
    main(sys.argv[1:])
