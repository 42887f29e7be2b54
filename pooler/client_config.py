"""The Codex CLI configuration users paste into `~/.codex/config.toml`: the one source for every copy we print.

The README, docs/mcp.md, `manage.py codex_config`, `make demo` and the real-CLI tests all use these blocks
verbatim, so what users are told to write is what the tests prove works.
"""

WS_PROVIDER = "codex-pooler-ws"
HTTP_PROVIDER = "codex-pooler-http"
API_KEY_ENV = "CODEX_POOLER_API_KEY"
MCP_SERVER = "codex-pooler"
MCP_KEY_ENV = "CODEX_POOLER_MCP_KEY"

# The CLI treats only a provider named exactly "OpenAI" as the OpenAI backend and compacts history remotely
# for it; under any other name it compacts locally and long sessions behave differently.
_PROVIDER_NAME = "OpenAI"


def codex_base_url(pooler_url: str) -> str:
    """The Codex route of a pooler served at `pooler_url` (e.g. http://127.0.0.1:4000)."""
    return f"{pooler_url.rstrip('/')}/backend-api/codex"


def codex_config(base_url: str) -> str:
    """Both providers, websocket first and default; `-c model_provider=codex-pooler-http` picks HTTP/SSE."""
    providers = "\n".join(
        _provider(provider, base_url, websockets)
        for provider, websockets in ((WS_PROVIDER, True), (HTTP_PROVIDER, False))
    )
    return f'model_provider = "{WS_PROVIDER}"\n\n{providers}'


def mcp_config(pooler_url: str) -> str:
    """The operator MCP server at `pooler_url`/mcp, authenticated by an MCP token from the environment."""
    return f"""\
[mcp_servers.{MCP_SERVER}]
url = "{pooler_url.rstrip("/")}/mcp"
bearer_token_env_var = "{MCP_KEY_ENV}"
"""


def _provider(provider: str, base_url: str, websockets: bool) -> str:
    return f"""\
[model_providers.{provider}]
# keep "OpenAI": the Codex CLI compacts history remotely only for this name
name = "{_PROVIDER_NAME}"
base_url = "{base_url}"
wire_api = "responses"
requires_openai_auth = true
env_key = "{API_KEY_ENV}"
supports_websockets = {"true" if websockets else "false"}
"""
