from tqdm import tqdm

from accounts.models import UpstreamAccount

from ._base import BaseCommand


class Command(BaseCommand):
    help = "Re-encrypt every account secret under the first key of POOLER_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        accounts = UpstreamAccount.objects.all()
        # Reading decrypts with any configured key; saving encrypts with the first one.
        for account in tqdm(accounts.iterator(), total=accounts.count(), unit="account", file=self.stderr):
            account.save(update_fields=["access_token", "refresh_token", "id_token"])
        self.stdout.write(f"re-encrypted {accounts.count()} account(s) under the first key")
