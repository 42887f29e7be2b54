"""The coding agents and libraries of docs/clients/, installed from their registries, through the pooler to the
simulator, each with the config its page shows (read from the page)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.factories import make_account, make_key, make_pool
from tests.support.clients import AI_SDK, AIDER, CONTINUE, LLM, OPENCODE, documented, install
from tests.support.rows import key_rows

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.clients]


@pytest.fixture
def pool_key(pooler, simulator):
    """A key of a fresh pool of one simulated account: (key row, raw key, the account)."""
    pool = make_pool()
    account = make_account(pool, simulator)
    return (*make_key(pool), account)


def client_env(home: Path, **extra) -> dict:
    """A clean environment: a home of its own (no user config), no OpenAI settings of the machine's."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return {**env, "HOME": str(home), "NO_COLOR": "1", **extra}


def run(args: list, env: dict, cwd: Path | None = None, timeout: float = 60) -> str:
    if cwd is not None:
        env = {**env, "PWD": str(cwd)}  # OpenCode takes its project from $PWD, as a shell sets it
    with open(os.devnull, "rb") as stdin:
        done = subprocess.run(
            [str(a) for a in args], env=env, cwd=cwd, stdin=stdin, capture_output=True, text=True, timeout=timeout
        )
    assert done.returncode == 0, f"{args[0]} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_llm_prompts_streamed_and_not(pooler, pool_key, tmp_path):
    llm = install(LLM).binary
    key_row, key, _ = pool_key
    user_path = tmp_path / "llm"
    user_path.mkdir()
    (user_path / "extra-openai-models.yaml").write_text(documented("llm", "extra-openai-models.yaml", pooler.url))
    # As the page says: the key for one command, never stored in keys.json.
    env = client_env(tmp_path / "home", LLM_USER_PATH=str(user_path))
    with_key = {**env, "OPENAI_API_KEY": key}
    assert run([llm, "-m", "pooler-gpt-5.2", "-s", "be brief", "streamed hello"], with_key) == "echo: streamed hello\n"
    assert run([llm, "-m", "pooler-gpt-5.2", "--no-stream", "plain hello"], with_key) == "echo: plain hello\n"
    responses = run([llm, "-m", "pooler-gpt-5.2-responses", "--key", key, "on responses"], env)
    assert responses == "echo: on responses\n"
    assert not (user_path / "keys.json").exists()
    rows = key_rows(key_row, 3)
    assert [(r.route, r.is_stream) for r in rows] == [
        ("v1.chat.completions", True),
        ("v1.chat.completions", False),
        ("v1.responses", True),
    ]
    assert all(r.outcome == "ok" and r.model == "gpt-5.2" and r.total_tokens > 0 for r in rows)


def test_vercel_ai_sdk_on_both_routes(pooler, pool_key, tmp_path):
    sdk = install(AI_SDK)
    key_row, key, _ = pool_key
    # ES modules resolve packages from the script's directory up, never from NODE_PATH.
    (tmp_path / "node_modules").symlink_to(sdk.prefix / "node_modules")
    (tmp_path / "pooler.mjs").write_text(documented("vercel-ai-sdk", "pooler.mjs", pooler.url))
    out = run(["node", "pooler.mjs"], client_env(tmp_path / "home", CODEX_POOLER_API_KEY=key), cwd=tmp_path)
    assert out.splitlines() == [
        f"echo: hello from {call} on {route}"
        for route in ("chat completions", "responses")
        for call in ("generateText", "streamText")
    ]
    rows = key_rows(key_row, 4)
    assert [(r.route, r.is_stream) for r in rows] == [
        ("v1.chat.completions", False),
        ("v1.chat.completions", True),
        ("v1.responses", False),
        ("v1.responses", True),
    ]
    assert all(r.outcome == "ok" and r.total_tokens > 0 for r in rows)


def test_opencode_run_on_both_routes(pooler, simulator, pool_key, tmp_path):
    opencode = install(OPENCODE).binary
    key_row, key, account = pool_key
    project = tmp_path / "project"
    project.mkdir()
    (project / "opencode.json").write_text(documented("opencode", "opencode.json", pooler.url))
    home = tmp_path / "home"
    # Offline: no models.dev catalogue (custom providers need none), no self-update.
    env = client_env(
        home,
        CODEX_POOLER_API_KEY=key,
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        OPENCODE_DISABLE_MODELS_FETCH="1",
        OPENCODE_DISABLE_AUTOUPDATE="1",
    )
    for model, prompt in (("codex-pooler/gpt-5.2", "hello"), ("codex-pooler-responses/gpt-5.2", "again")):
        events = run([opencode, "run", "-m", model, "--format", "json", prompt], env, cwd=project)
        texts = [e["part"]["text"] for e in map(json.loads, events.splitlines()) if e.get("type") == "text"]
        assert texts == [f"echo: {prompt}"]
    rows = key_rows(key_row, 4)  # each run asks for a session title first
    assert [r.route for r in rows] == ["v1.chat.completions"] * 2 + ["v1.responses"] * 2
    assert all(r.is_stream and r.outcome == "ok" and r.model == "gpt-5.2" for r in rows)
    # The agent's own turns carry its system prompt and its tools.
    agent_turns = [t for t in simulator.requests(kind="turn", account_id=account.chatgpt_account_id) if t["tool_names"]]
    assert len(agent_turns) == 2 and all({"apply_patch", "bash", "read"} <= set(t["tool_names"]) for t in agent_turns)
    assert all(t["input_types"][0] == "message:developer" for t in agent_turns)


def test_continue_cli_headless_prompt(pooler, simulator, pool_key, tmp_path):
    cn = install(CONTINUE).binary
    key_row, key, account = pool_key
    config = tmp_path / "config.yaml"
    config.write_text(documented("continue", "config.yaml", pooler.url))
    env = client_env(tmp_path / "home", CODEX_POOLER_API_KEY=key)
    assert run([cn, "-p", "--config", config, "hello continue"], env, cwd=tmp_path) == "echo: hello continue\n"
    [row] = key_rows(key_row, 1)
    assert (row.route, row.is_stream, row.outcome, row.model) == ("v1.responses", True, "ok", "gpt-5.2")
    [turn] = simulator.requests(kind="turn", account_id=account.chatgpt_account_id)
    assert {"Read", "Bash"} <= set(turn["tool_names"]) and turn["input_types"][0] == "message:developer"


# The simulator echoes the last user message, so a prompt that is itself a search/replace block comes back as
# the model's edit, which aider applies as it would a real model's.
AIDER_EDIT = """Change the greeting.
hello.py
```python
<<<<<<< SEARCH
print("{old}")
=======
print("{new}")
>>>>>>> REPLACE
```"""


def test_aider_edits_a_file_and_commits(pooler, pool_key, tmp_path):
    aider = install(AIDER).binary
    key_row, key, _ = pool_key
    home = tmp_path / "home"
    home.mkdir()
    (home / ".aider.conf.yml").write_text(documented("aider", ".aider.conf.yml", pooler.url))
    (home / ".aider.model.settings.yml").write_text(documented("aider", ".aider.model.settings.yml"))
    repo = tmp_path / "repo"
    repo.mkdir()
    env = client_env(home, OPENAI_API_KEY=key, LITELLM_LOCAL_MODEL_COST_MAP="True")
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    run(["git", "init", "-q"], env, cwd=repo)
    (repo / "hello.py").write_text('print("hello")\n')
    run([*git, "add", "hello.py"], env, cwd=repo)
    run([*git, "commit", "-qm", "hello"], env, cwd=repo)
    offline = ["--no-check-update", "--analytics-disable", "--no-show-release-notes", "--no-pretty"]
    # The documented model, then one aider does not know, described in .aider.model.settings.yml.
    greeting = "hello"
    for model in ([], ["--model", "openai/gpt-5.5"]):
        edit = AIDER_EDIT.format(old=greeting, new=f"{greeting}, pooler")
        out = run([aider, "--yes-always", *offline, *model, "hello.py", "--message", edit], env, cwd=repo)
        greeting += ", pooler"
        assert (repo / "hello.py").read_text() == f'print("{greeting}")\n', out
        run(["git", "diff", "--quiet", "HEAD", "--", "hello.py"], env, cwd=repo)  # committed
    log = run(["git", "log", "--format=%s", "--", "hello.py"], env, cwd=repo).splitlines()
    assert len(log) == 3 and all(subject.startswith("echo: ") for subject in log[:2])  # the weak model's messages
    rows = key_rows(key_row, 4)
    # The main model streams on chat completions; litellm sends the Codex-only weak model to the Responses API.
    assert [(r.route, r.is_stream, r.model) for r in rows] == [
        ("v1.chat.completions", True, "gpt-5.2"),
        ("v1.responses", False, "gpt-5.1-codex-mini"),
        ("v1.chat.completions", True, "gpt-5.5"),
        ("v1.responses", False, "gpt-5.1-codex-mini"),
    ]
    assert all(r.outcome == "ok" for r in rows)
