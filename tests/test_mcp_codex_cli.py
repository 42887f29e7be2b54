"""The documented MCP block is right: the real Codex CLI connects to /mcp with the token and finds the tools."""

import os
import subprocess

import httpx
import pytest
from django.contrib.auth import get_user_model

from pooler.client_config import MCP_KEY_ENV, MCP_SERVER, mcp_config
from tests.factories import make_account, make_key, make_mcp_token, make_pool
from tests.support.codex import run_codex

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.codex_cli]


def test_codex_cli_lists_the_pooler_mcp_tools(codex_bin, pooler, simulator, tmp_path):
    pool = make_pool()
    make_account(pool, simulator)
    _, key = make_key(pool)
    _, token = make_mcp_token(get_user_model().objects.create_user("ops"))
    home, work = tmp_path / "home", tmp_path / "work"
    env = {MCP_KEY_ENV: token}

    # The turn itself goes through the pooler as usual; the CLI offers the MCP server's tools to the model.
    simulator.clear_requests()
    result = run_codex(
        codex_bin,
        pooler.codex_base_url,
        key,
        "which tools?",
        websockets=False,
        home=home,
        cwd=work,
        extra_env=env,
        config_extra=mcp_config(pooler.url),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # The CLI initialized a session and listed the tools (it offers them to the model only when it sends tools).
    calls = httpx.get(f"{pooler.url}/metrics").text
    listed_tools = [
        line for line in calls.splitlines() if line.startswith('pooler_mcp_calls_total{method="tools/list"')
    ]
    assert listed_tools and float(listed_tools[0].split()[-1]) >= 1, calls
    assert 'pooler_mcp_calls_total{method="initialize"' in calls
    assert '"POST /mcp" 401' not in pooler.log()

    listed = subprocess.run(
        [codex_bin, "mcp", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CODEX_HOME": str(home), **env},
    )
    assert MCP_SERVER in listed.stdout and f"{pooler.url}/mcp" in listed.stdout
