"""Every Codex CLI config the project prints or documents is the one from pooler/client_config.py, verbatim."""

import tomllib
from io import StringIO
from pathlib import Path

from django.core.management import call_command

from bench.demo import config_toml
from pooler.client_config import (
    API_KEY_ENV,
    HTTP_PROVIDER,
    MCP_KEY_ENV,
    WS_PROVIDER,
    codex_base_url,
    codex_config,
    mcp_config,
)

REPO = Path(__file__).resolve().parents[1]
POOLER = "http://127.0.0.1:4000"
LOCAL = codex_config("http://127.0.0.1:4000/backend-api/codex")


def test_the_block_defaults_to_websockets_and_names_both_providers_openai():
    config = tomllib.loads(LOCAL)
    assert config["model_provider"] == WS_PROVIDER
    ws, http = config["model_providers"][WS_PROVIDER], config["model_providers"][HTTP_PROVIDER]
    # Remote compaction only happens for a provider named exactly "OpenAI".
    assert ws["name"] == http["name"] == "OpenAI"
    assert (ws["supports_websockets"], http["supports_websockets"]) == (True, False)
    assert ws["env_key"] == http["env_key"] == API_KEY_ENV
    assert tomllib.loads(mcp_config(POOLER))["mcp_servers"]["codex-pooler"] == {
        "url": f"{POOLER}/mcp",
        "bearer_token_env_var": MCP_KEY_ENV,
    }


def test_the_readme_shows_both_blocks_verbatim():
    readme = (REPO / "README.md").read_text()
    assert LOCAL in readme
    assert mcp_config(POOLER) in readme
    assert f"-c model_provider={HTTP_PROVIDER}" in readme


def test_the_mcp_doc_shows_the_mcp_block_verbatim():
    assert mcp_config(POOLER) in (REPO / "docs" / "mcp.md").read_text()


def test_the_codex_config_command_prints_the_block_for_a_host():
    out = StringIO()
    call_command("codex_config", stdout=out)
    assert out.getvalue() == LOCAL

    out = StringIO()
    call_command("codex_config", "--url", "https://pooler.example.com/", "--mcp", stdout=out)
    expected = (
        codex_config("https://pooler.example.com/backend-api/codex") + "\n" + mcp_config("https://pooler.example.com")
    )
    assert out.getvalue() == expected


def test_the_demo_config_holds_the_block_and_stays_valid_toml():
    base_url = codex_base_url("http://127.0.0.1:4123")
    demo = config_toml(base_url)
    assert codex_config(base_url) in demo
    assert tomllib.loads(demo)["model_provider"] == WS_PROVIDER
