"""`make demo`: the simulated backend, a pooler seeded with three accounts, and a ready Codex CLI config."""

import argparse
import time

from bench.stack import REPO, start_stack
from pooler.client_config import API_KEY_ENV, HTTP_PROVIDER, codex_config

# The demo runs offline: no update checks, analytics or plugin downloads. Top-level keys must precede the
# block's tables in TOML, so these go above it and the tables below.
_OFFLINE_TOP = "check_for_update_on_startup = false\n"
_OFFLINE_TABLES = """
[analytics]
enabled = false

[features]
plugins = false
remote_plugin = false
"""


def config_toml(base_url: str) -> str:
    """The demo's `config.toml`: the documented block verbatim between the demo's offline settings."""
    return f"{_OFFLINE_TOP}{codex_config(base_url)}{_OFFLINE_TABLES}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=4000)
    args = parser.parse_args()
    logs = REPO / ".cache" / "demo"
    logs.mkdir(parents=True, exist_ok=True)
    stack = start_stack(args.port, "demo", 3, logs=logs)
    home = logs / "codex-home"
    home.mkdir(exist_ok=True)
    config = config_toml(stack.codex_base_url)
    (home / "config.toml").write_text(config)
    codex = REPO / ".cache" / "codex" / "node_modules" / ".bin" / "codex"
    print(
        f"""
Codex Pooler demo is up.
  pooler     {stack.pooler_url}   (admin: {stack.pooler_url}/admin/ after `python manage.py createsuperuser`)
  simulator  {stack.simulator_url}   (a fake ChatGPT backend with 3 accounts)
  logs       {logs}

config.toml written to {home / "config.toml"}:

{config}
Try it in another terminal (websockets; add `-c model_provider={HTTP_PROVIDER}` for HTTP/SSE):

  export {API_KEY_ENV}={stack.api_key}
  CODEX_HOME={home} {codex} exec --skip-git-repo-check "hello pooler" </dev/null

Press Ctrl-C to stop.""",
        flush=True,
    )
    try:
        while all(p.poll() is None for p in stack.processes):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
