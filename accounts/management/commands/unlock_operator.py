from axes.utils import reset
from django.contrib.auth import get_user_model
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import audit

from ._base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Let an operator sign in again: clear their failed sign-ins (from every address, or one with --ip), and with "
        "--reset-2fa remove their authenticator and recovery codes so that they enrol again at their next sign-in."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", required=True)
        parser.add_argument("--ip", help="clear only the failures from this address")
        parser.add_argument("--reset-2fa", action="store_true", help="also remove their two-factor devices")

    def handle(self, *args, username, ip, reset_2fa, **options):
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        cleared = reset(ip=ip, username=username)
        changes = {"failed_sign_ins_cleared": cleared, "address": ip or "any"}
        if reset_2fa:
            removed = (
                TOTPDevice.objects.filter(user=user).delete()[0] + StaticDevice.objects.filter(user=user).delete()[0]
            )
            changes["two_factor_removed"] = removed
        audit.record("cli", "unlock_operator", user, None, changes)
        self.stdout.write(
            f"{username}: {cleared} failed sign-in record(s) cleared"
            + ("; two-factor sign-in removed, they enrol again at their next sign-in" if reset_2fa else "")
        )
