from pooler.client_config import API_KEY_ENV, HTTP_PROVIDER, MCP_KEY_ENV, codex_base_url, codex_config, mcp_config

from ._base import BaseCommand


class Command(BaseCommand):
    help = (
        "Print the Codex CLI configuration for this pooler: paste it into ~/.codex/config.toml "
        f"(or $CODEX_HOME/config.toml) and export {API_KEY_ENV} (from create_api_key). Websockets are the "
        f"default transport; `codex -c model_provider={HTTP_PROVIDER} ...` picks HTTP/SSE."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--url",
            default="http://127.0.0.1:4000",
            help="the pooler's address as clients reach it (default: http://127.0.0.1:4000)",
        )
        parser.add_argument(
            "--mcp",
            action="store_true",
            help=f"also print the operator MCP server block (export {MCP_KEY_ENV} from create_mcp_token)",
        )

    def handle(self, *args, url, mcp, **options):
        self.stdout.write(codex_config(codex_base_url(url)))
        if mcp:
            self.stdout.write("\n" + mcp_config(url))
