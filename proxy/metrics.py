"""Prometheus metrics: traffic counters updated on the way; account gauges and this month's cost and prompt-cache
figures per key and account read from the database at scrape."""

import hmac
import ipaddress
import threading
import time

from django.conf import settings
from django.db.backends.signals import connection_created
from django.db.models import Q
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import REGISTRY, GaugeMetricFamily

from accounts import usage
from accounts.models import PoolMembership, RequestLog

from .auth import bearer_token
from .dbthread import DATABASE_DOWN, note_outage, on_db_thread, reconnecting
from .errors import Unauthorized, error_response

REQUESTS = Counter("pooler_requests", "Turns and requests answered", ["route", "status", "pool"])
ATTEMPTS = Counter("pooler_upstream_attempts", "Upstream attempts by outcome", ["outcome"])
FAILOVERS = Counter("pooler_failovers", "Turns that moved to another account before the first byte")
TTFT = Histogram(
    "pooler_ttft_seconds",
    "Time to the first upstream byte",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DURATION = Histogram(
    "pooler_turn_duration_seconds",
    "Whole turn duration",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
COMPACTIONS = Counter("pooler_compactions", "Turns that compacted a session's history", ["pool"])
CONTEXT_LOST = Counter(
    "pooler_compacted_context_lost",
    "Turns that reached an account without the session's compacted history (sealed to another account)",
    ["pool"],
)
# The API-equivalent cost of the turns served (accounts/pricing.py), and the turns whose model has no price.
COST_USD = Counter("pooler_cost_usd", "What the turns would have cost at API list prices, USD", ["pool", "model"])
UNPRICED_TURNS = Counter("pooler_unpriced_turns", "Turns that used tokens of a model without a price", ["model"])
# The prompt cache hit rate of a pool is the ratio of these two (cached tokens are part of the input tokens).
INPUT_TOKENS = Counter("pooler_input_tokens", "Input tokens of the turns, cached ones included", ["pool"])
CACHED_INPUT_TOKENS = Counter("pooler_cached_input_tokens", "Input tokens served from the prompt cache", ["pool"])
ACCOUNTING_PENDING = Gauge(
    "pooler_accounting_pending", "Served turns whose rows wait for the database to be reachable again"
)
ACCOUNTING_DROPPED = Counter(
    "pooler_accounting_dropped", "Served turns whose rows were dropped: the backlog was full during an outage"
)
OPEN_STREAMS = Gauge("pooler_open_streams", "SSE streams being relayed now")
OPEN_WEBSOCKETS = Gauge("pooler_open_websockets", "Client websockets open now")
MCP_CALLS = Counter("pooler_mcp_calls", "MCP JSON-RPC calls by method and tool", ["method", "tool"])
DB_QUERIES = Counter("pooler_db_queries", "Database statements executed by this process")
UPSTREAM_CONNECTIONS = Counter(
    "pooler_upstream_connections_opened", "HTTP connections opened to the backend (kept-alive ones are reused)"
)


def _count_query(execute, sql, params, many, context):
    DB_QUERIES.inc()
    return execute(sql, params, many, context)


def _instrument(sender, connection, **kwargs):
    connection.execute_wrappers.append(_count_query)


connection_created.connect(_instrument)


# This month's (UTC) figures of the turns that used tokens, per pool, key, account and model, summed from the
# request log: every process reports the same ones, and the labels hold only operator-made keys and accounts
# and the models the backend served (a refused request's model name makes no series).
_MONTH_LABELS = ["pool", "key", "key_name", "account", "model"]
_MONTH_FIELDS = ("pool__name", "api_key__prefix", "api_key__name", "account__label", "model")
_MONTH_HELP = {
    "pooler_month_cost_usd": "This month's cost at API list prices of the priced turns, USD (no series: unpriced)",
    "pooler_month_unpriced_turns": "This month's turns that used tokens of a model without a price",
    "pooler_month_input_tokens": "This month's input tokens, cached ones included",
    "pooler_month_cached_input_tokens": "This month's input tokens served from the prompt cache",
}
# The month's figures are one grouped query, kept this long between scrapes; a turn this process writes drops
# them at once, so only other processes' turns can be this late.
MONTH_CACHE_SECONDS = 5.0


class _MonthFigures:
    """The grouped query behind the pooler_month_* gauges, cached for MONTH_CACHE_SECONDS."""

    def __init__(self):
        self._lock = threading.Lock()
        self._groups: list[dict] | None = None
        self._read_at = 0.0
        self._generation = 0

    def forget(self) -> None:
        with self._lock:
            self._generation += 1
            self._groups = None

    def families(self) -> list:
        groups = self._read()
        families = {name: GaugeMetricFamily(name, text, labels=_MONTH_LABELS) for name, text in _MONTH_HELP.items()}
        for group in groups:
            labels = [group[field] or "" for field in _MONTH_FIELDS]
            if group["cost"] is not None:
                families["pooler_month_cost_usd"].add_metric(labels, float(group["cost"]))
            families["pooler_month_unpriced_turns"].add_metric(labels, group["unpriced_requests"])
            families["pooler_month_input_tokens"].add_metric(labels, group["input_tokens"] or 0)
            families["pooler_month_cached_input_tokens"].add_metric(labels, group["cached_tokens"] or 0)
        return list(families.values())

    def _read(self) -> list[dict]:
        with self._lock:
            if self._groups is not None and time.monotonic() - self._read_at < MONTH_CACHE_SECONDS:
                return self._groups
            generation = self._generation
        used_tokens = RequestLog.objects.filter(Q(input_tokens__gt=0) | Q(output_tokens__gt=0))
        groups = [g for g in usage.cost_by(used_tokens, timezone.now(), *_MONTH_FIELDS) if g["requests"]]
        with self._lock:
            # A turn written while the query ran may be missing from it: keep the result only if none was.
            if generation == self._generation:
                self._groups, self._read_at = groups, time.monotonic()
        return groups


_MONTH = _MonthFigures()


class _AccountCollector:
    """Eligibility and quota of every account in every pool, and this month's figures, read at scrape time."""

    def describe(self):
        # Named up front so registering does not query the database at import.
        yield GaugeMetricFamily("pooler_account_eligible", "", labels=["pool", "account"])
        yield GaugeMetricFamily("pooler_account_quota_used_percent", "", labels=["account", "window"])
        for name in _MONTH_HELP:
            yield GaugeMetricFamily(name, "", labels=_MONTH_LABELS)
        yield GaugeMetricFamily("pooler_database_reachable", "")

    def collect(self):
        reachable = GaugeMetricFamily(
            "pooler_database_reachable", "1 when this process could read the database at this scrape"
        )
        try:
            families = reconnecting(self._accounts)() + reconnecting(_MONTH.families)()
        except DATABASE_DOWN as error:
            # Still a scrape, without the gauges read from the database: the backlog and the 503s matter now.
            note_outage(error)
            families = []
        reachable.add_metric([], float(bool(families)))
        yield reachable
        yield from families

    def _accounts(self) -> list:
        now = timezone.now()
        eligible = GaugeMetricFamily(
            "pooler_account_eligible", "1 when the account can take a turn now", labels=["pool", "account"]
        )
        used = GaugeMetricFamily("pooler_account_quota_used_percent", "Quota window used", labels=["account", "window"])
        seen = set()
        for member in PoolMembership.objects.select_related("pool", "account"):
            account = member.account
            eligible.add_metric(
                [member.pool.name, account.label], float(member.enabled and account.is_eligible(None, now))
            )
            if account.id not in seen:
                seen.add(account.id)
                primary, secondary = account.window_used(now)
                used.add_metric([account.label, "primary"], primary)
                used.add_metric([account.label, "secondary"], secondary)
        return [eligible, used]


REGISTRY.register(_AccountCollector())


def observe_turn(turn) -> None:
    pool = turn.key.pool.name if turn.key else ""
    REQUESTS.labels(turn.route, str(turn.status_code), pool).inc()
    for attempt in turn.attempts:
        ATTEMPTS.labels(attempt["outcome"].split(" ")[0]).inc()
    if len(turn.attempts) > 1 and turn.first_byte_at:
        FAILOVERS.inc()
    if turn.first_byte_at:
        TTFT.observe(turn.first_byte_at - turn.started)
    if turn.compaction and turn.first_byte_at:
        COMPACTIONS.labels(pool).inc()
    if turn.context_lost and turn.first_byte_at and not turn.is_prewarm:  # a prewarm's move shows on its turn
        CONTEXT_LOST.labels(pool).inc()


def observe_usage(pool: str, model: str, counts: dict, cost) -> None:
    """Count a written turn's tokens and cost (None: unpriced). Only turns that used tokens make series, so
    the model label holds models the backend served, never whatever a refused request named."""
    _MONTH.forget()  # the turn's row is written: the next scrape of this process reads it
    if counts["input_tokens"]:
        INPUT_TOKENS.labels(pool).inc(counts["input_tokens"])
        CACHED_INPUT_TOKENS.labels(pool).inc(counts["cached_tokens"])
    if cost is None:
        UNPRICED_TURNS.labels(model).inc()
    elif cost > 0:
        COST_USD.labels(pool, model).inc(float(cost))


def _allowed(request) -> bool:
    token = settings.POOLER_METRICS_TOKEN
    # Compared in constant time: how long a refusal takes says nothing about how much of a guess was right.
    if token and hmac.compare_digest(bearer_token(request.headers).encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.POOLER_METRICS_ALLOWED_NETWORKS)


async def metrics_view(request):
    if not _allowed(request):
        return error_response(
            Unauthorized("Metrics need the metrics token or an allowed network.", code="metrics_forbidden")
        )
    body = await on_db_thread(generate_latest)(REGISTRY)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
