from accounts import audit
from accounts.models import Pool, SessionMigration, Strategy

from ._base import BaseCommand, CommandError, split_list


class Command(BaseCommand):
    help = "Create a pool of upstream accounts."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--strategy", choices=Strategy.values, default=Strategy.LEAST_USED)
        parser.add_argument("--models", help="comma-separated model slugs the pool serves (default: all)")
        parser.add_argument(
            "--session-migration",
            choices=SessionMigration.values,
            default=SessionMigration.MIGRATE,
            help="when a session's account runs out: migrate (move it), hold (wait for the account's reset), "
            "hold_compacted (move it unless it was compacted, whose history only its account can read)",
        )

    def handle(self, *args, name, strategy, models, session_migration, **options):
        if Pool.objects.filter(name=name).exists():
            raise CommandError(f"pool {name!r} already exists")
        pool = Pool.objects.create(
            name=name, strategy=strategy, allowed_models=split_list(models), session_migration=session_migration
        )
        audit.record("cli", "create_pool", pool, None, audit.snapshot(pool))
        self.stdout.write(f"created pool {pool.name} ({pool.strategy})")
