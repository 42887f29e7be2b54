from pathlib import Path

from accounts.importing import ImportError_, parse_auth_json, store_account

from ._base import BaseCommand, CommandError, get_pool


class Command(BaseCommand):
    help = "Import a ChatGPT account from the Codex CLI's auth.json into a pool."

    def add_arguments(self, parser):
        parser.add_argument("--pool", required=True)
        parser.add_argument("--auth-json", required=True, type=Path, help="path to auth.json")
        parser.add_argument("--label", default="", help="a name for the account (default: its email)")
        parser.add_argument("--base-url", default="", help="upstream base URL (default: the real backend)")

    def handle(self, *args, pool, auth_json, label, base_url, **options):
        pool = get_pool(pool)
        try:
            tokens = parse_auth_json(auth_json.read_text())
            account = store_account(tokens, pool, label=label, base_url=base_url)
        except OSError as exc:
            raise CommandError(f"cannot read {auth_json}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{auth_json} is not UTF-8 text (is it the Codex CLI's auth.json?)") from None
        except ImportError_ as exc:
            raise CommandError(f"{auth_json}: {exc}") from None
        self.stdout.write(
            f"imported {account.label} ({account.chatgpt_account_id}, {account.plan_type or '?'}) into pool {pool.name}"
        )
