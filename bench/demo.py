"""`make demo`: the simulated backend, a pooler seeded with three accounts, and a ready Codex CLI config."""

import argparse
import time

from bench.stack import REPO, start_stack

CONFIG = """model_provider = "codex_pooler"
# The demo runs offline: no update checks, analytics or plugin downloads.
check_for_update_on_startup = false

[analytics]
enabled = false

[features]
plugins = false
remote_plugin = false

[model_providers.codex_pooler]
name = "Codex Pooler (demo)"
base_url = "{base_url}"
wire_api = "responses"
requires_openai_auth = true
env_key = "CODEX_POOLER_API_KEY"
supports_websockets = true

[model_providers.codex_pooler_http]
name = "Codex Pooler (demo, HTTP)"
base_url = "{base_url}"
wire_api = "responses"
requires_openai_auth = true
env_key = "CODEX_POOLER_API_KEY"
supports_websockets = false
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=4000)
    args = parser.parse_args()
    logs = REPO / ".cache" / "demo"
    logs.mkdir(parents=True, exist_ok=True)
    stack = start_stack(args.port, "demo", 3, logs=logs)
    home = logs / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(CONFIG.format(base_url=stack.codex_base_url))
    codex = REPO / ".cache" / "codex" / "node_modules" / ".bin" / "codex"
    print(
        f"""
Codex Pooler demo is up.
  pooler     {stack.pooler_url}   (admin: {stack.pooler_url}/admin/ after `python manage.py createsuperuser`)
  simulator  {stack.simulator_url}   (a fake ChatGPT backend with 3 accounts)
  logs       {logs}

config.toml written to {home / "config.toml"}:

{CONFIG.format(base_url=stack.codex_base_url)}
Try it in another terminal:

  export CODEX_POOLER_API_KEY={stack.api_key}
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
