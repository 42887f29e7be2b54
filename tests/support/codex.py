"""The real Codex CLI (npm `@openai/codex`), installed once per machine and driven like a user would."""

import fcntl
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CODEX_VERSION = "0.169.0"
INSTALL_DIR = REPO / ".cache" / "codex"
PROVIDER = "codex_pooler"
API_KEY_ENV = "CODEX_POOLER_API_KEY"


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


def write_config(home: Path, base_url: str, *, websockets: bool) -> Path:
    """`$CODEX_HOME/config.toml`: our provider, and everything that would reach the internet switched off."""
    config = home / "config.toml"
    config.write_text(f"""\
model_provider = "{PROVIDER}"
check_for_update_on_startup = false
disable_paste_burst = true

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

[model_providers.{PROVIDER}]
name = "Codex Pooler"
base_url = "{base_url}"
wire_api = "responses"
env_key = "{API_KEY_ENV}"
requires_openai_auth = true
supports_websockets = {"true" if websockets else "false"}
""")
    return config


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
) -> subprocess.CompletedProcess:
    """One `codex exec` turn (or `exec resume --last`) with stdin from /dev/null, as the CLI needs."""
    home.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    config = write_config(home, base_url, websockets=websockets)
    if config_extra:
        config.write_text(config.read_text() + config_extra)
    args = [binary, "exec", "--skip-git-repo-check"]
    if resume_last:
        args += ["resume", "--last"]
    env = {**os.environ, "CODEX_HOME": str(home), API_KEY_ENV: api_key, "NO_COLOR": "1", **(extra_env or {})}
    with open(os.devnull, "rb") as stdin:
        return subprocess.run(
            [*args, prompt], cwd=cwd, env=env, stdin=stdin, capture_output=True, text=True, timeout=timeout
        )
