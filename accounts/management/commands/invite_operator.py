from django.conf import settings

from accounts import invites

from ._base import BaseCommand, CommandError, get_pool


class Command(BaseCommand):
    help = (
        "Invite an operator: a one-time link, valid POOLER_INVITE_HOURS, where they set a password. A pool operator "
        "sees only the pools given with --pool; --owner sees everything. The link is printed alone on the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("--email", required=True, help="the invitee's email (their username if they are new)")
        parser.add_argument("--pool", action="append", default=[], help="a pool they operate (repeatable)")
        parser.add_argument("--owner", action="store_true", help="make them an owner (a superuser: every pool)")
        parser.add_argument(
            "--url", default=f"http://127.0.0.1:{settings.PORT}", help="the pooler's address, as the invitee opens it"
        )

    def handle(self, *args, email, pool, owner, url, **options):
        if not pool and not owner:
            raise CommandError("give the pools they operate (--pool NAME, repeatable) or --owner")
        if "@" not in email:
            raise CommandError(f"--email {email!r}: give an email address")
        pools = [get_pool(name) for name in pool]
        row, raw = invites.invite(email, pools, owner=owner, actor="cli")
        role = "an owner" if owner else "operator of " + ", ".join(p.name for p in pools)
        until = f"{row.expires_at:%Y-%m-%d %H:%M} UTC"
        self.stderr.write(f"invited {row.user.get_username()} as {role}; the link works once, until {until}")
        self.stdout.write(invites.link(url, raw))
