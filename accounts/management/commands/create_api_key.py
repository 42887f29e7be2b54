from datetime import datetime

from django.core.exceptions import ValidationError

from accounts import audit, networks
from accounts.budgets import BudgetError, parse_spec
from accounts.models import REASONING_EFFORTS, OverCap, PoolApiKey

from ._base import BaseCommand, CommandError, get_pool, split_list


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--expires-at {value!r}: expected an ISO 8601 time, e.g. 2027-01-31T00:00:00Z") from None
    if moment.tzinfo is None:
        raise CommandError(f"--expires-at {value!r}: give a time zone, e.g. 2027-01-31T00:00:00Z")
    return moment


class Command(BaseCommand):
    help = "Create a Pool API key. The raw key is printed once, alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--pool", required=True)
        parser.add_argument("--name", default="")
        parser.add_argument("--rpm", type=int, help="requests per minute")
        parser.add_argument("--tokens-per-day", type=int)
        parser.add_argument("--max-concurrent", type=int, help="concurrent streams")
        parser.add_argument(
            "--allow-ip",
            action="append",
            default=[],
            metavar="CIDR",
            help="repeatable; only requests from these networks are served (IPv4 or IPv6), e.g. 10.0.0.0/8",
        )
        parser.add_argument("--models", help="comma-separated allowed models (default: the pool's)")
        parser.add_argument("--expires-at", type=_moment, help="ISO 8601 time, e.g. 2027-01-31T00:00:00Z")
        parser.add_argument(
            "--budget",
            action="append",
            default=[],
            metavar="WINDOW:KIND:AMOUNT[:MODEL]",
            help="repeatable; windows 5h, day, week, month; kinds tokens, input_tokens, output_tokens, cost (USD), "
            "e.g. 5h:tokens:200000, day:cost:5.00, week:output_tokens:1000000:gpt-5.5",
        )
        parser.add_argument("--force-model", default="", help="every turn runs on this model")
        parser.add_argument("--max-effort", choices=REASONING_EFFORTS, help="cap on the reasoning effort")
        parser.add_argument(
            "--over-effort", choices=OverCap.values, default=OverCap.LOWER, help="above the cap: lower or refuse"
        )
        parser.add_argument("--force-service-tier", default="", help="every turn asks for this service tier")
        parser.add_argument("--service-tiers", help="comma-separated service tiers a turn may ask for")
        parser.add_argument("--max-input-tokens", type=int, help="largest estimated input per request")
        parser.add_argument("--max-output-tokens", type=int, help="cap on a request's max_output_tokens")

    def handle(self, *args, **options):
        try:
            budgets = [parse_spec(spec).as_dict() for spec in options["budget"]]
        except BudgetError as error:
            raise CommandError(str(error)) from None
        key = PoolApiKey(
            pool=get_pool(options["pool"]),
            name=options["name"],
            rpm=options["rpm"],
            tokens_per_day=options["tokens_per_day"],
            max_concurrent=options["max_concurrent"],
            allowed_models=split_list(options["models"]),
            expires_at=options["expires_at"],
            budgets=budgets,
            forced_model=options["force_model"],
            max_reasoning_effort=options["max_effort"] or "",
            reasoning_effort_over_cap=options["over_effort"],
            forced_service_tier=options["force_service_tier"],
            allowed_service_tiers=split_list(options["service_tiers"]),
            max_input_tokens=options["max_input_tokens"],
            max_output_tokens=options["max_output_tokens"],
        )
        try:
            key.allowed_networks = networks.normalized(options["allow_ip"])
        except ValidationError as error:
            raise CommandError(f"--allow-ip: {error.messages[0]}") from None
        raw = key.issue()
        key.save()
        audit.record("cli", "create_api_key", key, None, audit.snapshot(key))
        self.stderr.write(f"created key {key.prefix}… for pool {key.pool.name}; store it now, it is shown once")
        self.stdout.write(raw)
