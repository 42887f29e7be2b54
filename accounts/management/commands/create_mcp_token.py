from django.contrib.auth import get_user_model

from accounts import audit
from accounts.models import McpToken

from ._base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create an MCP token for an operator. The raw token is printed once, alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="the operator's Django username")
        parser.add_argument("--write", action="store_true", help="also allow pause/resume/revoke tools")
        parser.add_argument("--name", default="")

    def handle(self, *args, user, write, name, **options):
        try:
            owner = get_user_model().objects.get(username=user)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {user!r} (create it with createsuperuser)") from None
        token = McpToken(user=owner, can_write=write, name=name)
        raw = token.issue()
        token.save()
        audit.record("cli", "create_mcp_token", token, None, audit.snapshot(token))
        self.stderr.write(f"created MCP token {token.prefix}… for {owner}; store it now, it is shown once")
        if not owner.is_superuser and not owner.operated_pools.exists():
            # Tokens read what their user may see: an owner every pool, a pool operator their pools.
            self.stderr.write(f"note: {owner} is neither an owner nor operator of any pool: the token reads nothing")
        self.stdout.write(raw)
