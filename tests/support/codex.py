"""The real Codex CLI (npm `@openai/codex`), installed once per machine and driven like a user would."""

import fcntl
import os
import subprocess
from pathlib import Path

from pooler.client_config import API_KEY_ENV, HTTP_PROVIDER, codex_config

REPO = Path(__file__).resolve().parents[2]
CODEX_VERSION = "0.169.0"
INSTALL_DIR = REPO / ".cache" / "codex"

__all__ = ["API_KEY_ENV", "codex_binary", "run_codex", "transport_args", "write_config"]


def codex_binary() -> str:
    """Path of the `codex` launcher, installing @openai/codex@0.169.0 under .cache/codex on first use."""
    binary = INSTALL_DIR / "node_modules" / ".bin" / "codex"
    INSTALL_DIR.mkdir(parents=True, exist_ok=True)
    with open(INSTALL_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs install once
        if not _installed(binary):
            subprocess.run(
                [
                    "npm",
                    "install",
                    "--silent",
                    "--no-audit",
                    "--no-fund",
                    "--prefix",
                    str(INSTALL_DIR),
                    f"@openai/codex@{CODEX_VERSION}",
                ],
                check=True,
                timeout=900,
            )
    return str(binary)


def _installed(binary: Path) -> bool:
    if not binary.exists():
        return False
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    return version.returncode == 0 and CODEX_VERSION in version.stdout


def write_config(home: Path, base_url: str, *, websockets: bool, extra_top: str = "", extra_tables: str = "") -> Path:
    """`$CODEX_HOME/config.toml`: the documented block verbatim, with everything that would reach the internet off.

    The block's default provider is the websocket one; `websockets=False` runs pick HTTP on the command line
    (`transport_args`), as users are told to, so the file is the same for both.
    """
    config = home / "config.toml"
    # TOML top-level keys must come before the first table, so ours go above the block, our tables below it.
    config.write_text(f"""\
check_for_update_on_startup = false
disable_paste_burst = true
{extra_top}
{codex_config(base_url)}
[analytics]
enabled = false

[feedback]
enabled = false

[history]
persistence = "save-all"

[features]
plugins = false
remote_plugin = false
apps = false
shell_snapshot = false

{extra_tables}""")
    return config


def transport_args(websockets: bool) -> list[str]:
    """The documented way to pick HTTP/SSE: the block's default provider is the websocket one."""
    return [] if websockets else ["-c", f"model_provider={HTTP_PROVIDER}"]


def run_codex(
    binary: str,
    base_url: str,
    api_key: str,
    prompt: str,
    *,
    websockets: bool,
    home: Path,
    cwd: Path,
    resume_last: bool = False,
    timeout: float = 120,
    extra_env: dict | None = None,
    config_extra: str = "",
    extra_top: str = "",
    sandbox: str | None = None,
    json_events: bool = False,
) -> subprocess.CompletedProcess:
    """One `codex exec` turn (or `exec resume --last`) with stdin from /dev/null, as the CLI needs.

    `config_extra` is appended as TOML tables, `extra_top` goes among the top-level keys
    (e.g. `model_auto_compact_token_limit = 3000`).
    """
    home.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    write_config(home, base_url, websockets=websockets, extra_top=extra_top, extra_tables=config_extra)
    args = [binary, "exec", "--skip-git-repo-check", *transport_args(websockets)]
    if sandbox:
        args += ["--sandbox", sandbox]
    if json_events:
        args.append("--json")
    if resume_last:
        args += ["resume", "--last"]
    env = {**os.environ, "CODEX_HOME": str(home), API_KEY_ENV: api_key, "NO_COLOR": "1", **(extra_env or {})}
    with open(os.devnull, "rb") as stdin:
        return subprocess.run(
            [*args, prompt], cwd=cwd, env=env, stdin=stdin, capture_output=True, text=True, timeout=timeout
        )
