from accounts import keys

from ._base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Pause, resume or rotate a Pool API key by its prefix (e.g. cpk_1a2b3c4d). A paused key is refused (403 "
        "key_paused) until resumed. Rotate prints the new secret once, alone on the last line; the old one keeps "
        "working for --grace seconds."
    )

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        for name in ("pause", "resume", "rotate"):
            action = actions.add_parser(name)
            action.add_argument("prefix")
            if name == "rotate":
                action.add_argument("--grace", type=int, default=0, help="seconds the old secret keeps working")

    def handle(self, *args, action, prefix, **options):
        try:
            key = keys.by_prefix(prefix)
        except keys.KeyNotFound as error:
            raise CommandError(str(error)) from None
        if action == "pause":
            keys.pause(key, "cli")
            self.stdout.write(f"paused {key.prefix}…")
        elif action == "resume":
            keys.resume(key, "cli")
            self.stdout.write(f"resumed {key.prefix}…")
        else:
            grace = options["grace"]
            if grace < 0:
                raise CommandError("--grace cannot be negative")
            raw = keys.rotate(key, "cli", grace)
            until = key.previous_secret_expires_at
            self.stderr.write(
                f"rotated {key.prefix}…; the old secret works until {until.isoformat()}"
                if until
                else f"rotated {key.prefix}…; the old secret no longer works"
            )
            self.stdout.write(raw)
