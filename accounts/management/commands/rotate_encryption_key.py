from django.db import transaction
from tqdm import tqdm

from accounts.models import UpstreamAccount

from ._base import BaseCommand, CommandError

_SECRETS = ["access_token", "refresh_token", "id_token"]


class Command(BaseCommand):
    help = "Re-encrypt every account secret under the first key of POOLER_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        ids = list(UpstreamAccount.objects.order_by("pk").values_list("pk", flat=True))
        for pk in tqdm(ids, unit="account", file=self.stderr):
            # Re-read under the row lock: a refresh committed since the listing must not be overwritten
            # with the refresh token it spent. Reading decrypts with any configured key; saving encrypts
            # with the first one.
            with transaction.atomic():
                try:
                    account = UpstreamAccount.objects.select_for_update().filter(pk=pk).first()
                except ValueError as exc:
                    raise CommandError(f"account {pk}: {exc}") from None
                if account is not None:
                    account.save(update_fields=_SECRETS)
        self.stdout.write(f"re-encrypted {len(ids)} account(s) under the first key")
