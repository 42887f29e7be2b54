from accounts import audit
from accounts.models import PoolApiKey

from ._base import BaseCommand, get_pool, split_list


class Command(BaseCommand):
    help = "Create a Pool API key. The raw key is printed once, alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--pool", required=True)
        parser.add_argument("--name", default="")
        parser.add_argument("--rpm", type=int, help="requests per minute")
        parser.add_argument("--tokens-per-day", type=int)
        parser.add_argument("--max-concurrent", type=int, help="concurrent streams")
        parser.add_argument("--models", help="comma-separated allowed models (default: the pool's)")

    def handle(self, *args, pool, name, rpm, tokens_per_day, max_concurrent, models, **options):
        key = PoolApiKey(
            pool=get_pool(pool),
            name=name,
            rpm=rpm,
            tokens_per_day=tokens_per_day,
            max_concurrent=max_concurrent,
            allowed_models=split_list(models),
        )
        raw = key.issue()
        key.save()
        audit.record("cli", "create_api_key", key, None, audit.snapshot(key))
        self.stderr.write(f"created key {key.prefix}… for pool {key.pool.name}; store it now, it is shown once")
        self.stdout.write(raw)
