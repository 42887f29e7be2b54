"""After a turn: the RequestLog row, the account's quota snapshot and health, the session pin, the slot."""

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError
from django.db.models import F
from django.utils import timezone

from accounts import pricing, quota
from accounts.models import AccountStatus, PoolApiKey, UpstreamAccount

from . import limits, loop_db, metrics, request_log, routing
from .dbthread import DATABASE_DOWN, on_db_thread
from .sse import usage_counts
from .upstream import UpstreamFailure

log = logging.getLogger("pooler.requests")
health_log = logging.getLogger("pooler.accounts")

# Short, growing cooldowns for transient failures: 5 s, 10 s, 20 s … capped at 5 minutes.
_BASE_COOLDOWN, _MAX_COOLDOWN = 5, 300


@dataclass
class Turn:
    """Everything known about one turn while it runs; written once at its end."""

    request_id: str
    route: str
    key: PoolApiKey | None = None
    transport: str = "http"
    model: str = ""
    requested_model: str = ""  # the model the client asked for, when its key forced another
    rewritten: bool = False  # the key's policy changed the body: the client's own bytes are not sent
    is_stream: bool = True
    is_prewarm: bool = False
    client_ip: str | None = None
    slot_id: int | None = None
    slot_account_id: int | None = None  # the account whose concurrent-turn cap the slot counts against
    input_items: int = 0  # length of the history the client sent (to mark where a moved session's own starts)
    compaction: bool = False  # the turn compacts the history (a `compaction_trigger` turn or a compact route)
    compacted: bool = False  # the history holds a compaction item (sealed to the account that made it)
    context_lost: bool = False  # that compaction item had to be dropped here: the model got a notice instead
    found_foreign: int = 0  # the account refused the history as another's: its first N items are not its own
    plan: routing.Plan | None = None
    account: UpstreamAccount | None = None
    attempts: list = field(default_factory=list)
    migrated_from: UpstreamAccount | None = None
    migration_reason: str = ""
    status_code: int = 0
    outcome: str = ""
    error_code: str = ""
    usage: dict | None = None
    quota: dict = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    queued_ms: int | None = None  # how long it waited for an account's slot (fair_share.py), when it did
    first_byte_at: float | None = None
    finished: bool = False
    ended: float = 0.0  # monotonic, and as a time, when the turn was finished
    ended_at: datetime | None = None
    counts: dict = field(default_factory=dict)  # the tokens and cost of its row, once written
    cost: Decimal | None = None

    def note_migration(self, account: UpstreamAccount, failures: list) -> None:
        """Record a move when the turn is served by an account other than the session's owner."""
        owner = self.plan.owner if self.plan else None
        if owner is not None and owner.id != account.id:
            self.migrated_from = owner
            self.migration_reason = self.plan.owner_unavailable or (
                failures[0].code or failures[0].kind if failures else "owner_unavailable"
            )

    async def settle(self, status: int, outcome: str, error_code: str | None = "", account=None) -> None:
        """End a turn that streamed nothing (refused, failed or passed through) and write it."""
        self.status_code, self.outcome, self.error_code = status, outcome, error_code or ""
        if account is not None:
            self.account = account
        await finish(self)

    def attempt(self, account: UpstreamAccount, outcome: str, status: int = 0) -> None:
        self.attempts.append(
            {
                "account": account.label,
                "account_id": account.id,
                "outcome": outcome,
                "status": status,
                "ms": int((time.monotonic() - self.started) * 1000),
            }
        )


def _cooldown_seconds(account: UpstreamAccount, failure: UpstreamFailure) -> float:
    if failure.retry_after is not None and failure.retry_after > 0:
        return failure.retry_after
    return min(_MAX_COOLDOWN, _BASE_COOLDOWN * 2 ** max(account.consecutive_failures, 0))


def mark_failure(account: UpstreamAccount, failure: UpstreamFailure) -> None:
    """Cool an account down after it failed a turn before the first byte, so the next choice avoids it."""
    now = timezone.now()
    fields = {"last_error": failure.summary()[:300], "last_error_at": now}
    if failure.usage_limit:
        reset = now + timedelta(seconds=max(failure.retry_after or 60, 1))
        fields.update(cooldown_until=reset, cooldown_reason="usage_limit_reached")
        # The window is spent: say so in the snapshot, so routing skips it even after the cooldown row is cleared.
        fields.update(primary_used_percent=100.0, primary_resets_at=reset)
    elif failure.status == 401:
        fields.update(status=AccountStatus.REAUTH_REQUIRED)
    elif failure.kind in ("connect", "timeout", "closed", "refresh") or failure.status >= 500 or failure.status == 429:
        seconds = _cooldown_seconds(account, failure)
        fields.update(
            cooldown_until=now + timedelta(seconds=seconds),
            cooldown_reason=failure.code or failure.kind if failure.status != 429 else "rate_limited",
        )
        fields["consecutive_failures"] = F("consecutive_failures") + 1
    UpstreamAccount.objects.filter(pk=account.pk).update(**fields)
    health_log.warning(
        "account %s failed a turn before its first byte: %s (%s)", account.label, failure.summary(), failure.message
    )


# Rows are rewritten only when they are out of date: a key's last use is shown to operators to the minute,
# and a busy account serves many turns a second with the same quota figures (rewriting its row each time
# would cost a statement per turn and queue every turn of the pool on one row lock).
_KEY_LAST_USED_RESOLUTION = timedelta(minutes=1)
_ACCOUNT_LAST_USED_RESOLUTION = timedelta(seconds=5)
_RESET_TOLERANCE = timedelta(seconds=60)  # resets given as "in N seconds" drift with each answer


def _account_row_current(account: UpstreamAccount, turn: Turn, now) -> bool:
    """Whether the account's row (as read for this turn) already says what this turn would write."""
    if turn.outcome == "ok" and account.consecutive_failures:
        return False
    if account.last_used_at is None or now - account.last_used_at > _ACCOUNT_LAST_USED_RESOLUTION:
        return False
    for name, value in turn.quota.items():
        stored = getattr(account, name)
        if isinstance(value, datetime):
            if stored is None or abs(value - stored) > _RESET_TOLERANCE:
                return False
        elif stored != value:
            return False
    return True


def _foreign_items(turn: Turn) -> int | None:
    """What the turn taught about the leading items of its history that another account made (see
    routing.remember_session): a compaction leaves none; a move, or a refusal of history thought to be the
    account's own, shows that all of it came from elsewhere."""
    if turn.compaction:
        return 0
    if turn.migrated_from is not None:
        return turn.input_items
    return turn.found_foreign or None


def _compacted(turn: Turn) -> bool | None:
    """Whether the session's history now holds a compaction of its account: yes after a compaction turn; no
    after a move (any compaction in it is the old account's); else as it was."""
    if turn.compaction:
        return True
    return False if turn.migrated_from is not None else None


def _write(turn: Turn) -> None:
    """The turn's rows, one statement each (no transaction: they stand alone; the slot is freed first)."""
    now = turn.ended_at  # a row written late (after an outage) still says when its turn ended
    key, plan, account = turn.key, turn.plan, turn.account
    limits.release(turn.slot_id)
    if account is not None and turn.first_byte_at:
        if not _account_row_current(account, turn, now):
            updates = {"last_used_at": now, **turn.quota}
            if turn.outcome == "ok":
                updates["consecutive_failures"] = 0
            if turn.quota:
                updates["quota_observed_at"] = now
            UpstreamAccount.objects.filter(pk=account.pk).update(**updates)
        if plan is not None and turn.outcome in ("ok", "client_closed"):
            routing.remember_session(
                plan, key.pool, account, turn.migration_reason, now, _foreign_items(turn), _compacted(turn)
            )
    if key is not None and not _key_row_current(key, now):
        PoolApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    # Last: the row is what tells a reader (a test, an operator) that everything of the turn is written.
    request_log.insert(**_row(turn, pricing.table()))
    _tell(turn)


def _key_row_current(key: PoolApiKey, now) -> bool:
    return key.last_used_at is not None and now - key.last_used_at < _KEY_LAST_USED_RESOLUTION


def _only_the_row(turn: Turn) -> bool:
    """Whether the turn has nothing to write but its row (see _write): it holds no slot, and its key's and
    account's rows and its session's pin already say what it would write."""
    now, key, account, plan = turn.ended_at, turn.key, turn.account, turn.plan
    if turn.slot_id or key is None or not _key_row_current(key, now):
        return False
    if account is None or not turn.first_byte_at:
        return True
    if not _account_row_current(account, turn, now):
        return False
    if plan is None or turn.outcome not in ("ok", "client_closed"):
        return True
    return routing.pin_is_current(plan, key.pool, account, now, _foreign_items(turn), _compacted(turn))


async def _write_row_on_loop(turn: Turn, row: dict) -> None:
    """The row of a turn that has nothing else to write (_only_the_row), from the event loop (loop_db.py)."""
    await request_log.insert_on_loop(**row)
    _tell(turn)


def _row(turn: Turn, prices: pricing.PriceTable) -> dict:
    """The turn's RequestLog row; its tokens and cost stay on the turn for _tell."""
    now, key, plan, account = turn.ended_at, turn.key, turn.plan, turn.account
    turn.counts = counts = usage_counts(turn.usage)
    # At the price in force when the turn ran (a turn written late, after an outage, included).
    turn.cost = prices.cost(turn.model, now, counts["input_tokens"], counts["cached_tokens"], counts["output_tokens"])
    return dict(
        created_at=now,
        request_id=turn.request_id,
        pool=key.pool if key else None,
        api_key=key,
        account=account,
        route=turn.route,
        transport=turn.transport,
        model=turn.model[:100],
        requested_model=turn.requested_model[:100],
        status_code=turn.status_code,
        outcome=turn.outcome,
        error_code=turn.error_code[:60],
        attempts=turn.attempts,
        is_stream=turn.is_stream,
        is_prewarm=turn.is_prewarm,
        sticky=bool(plan and plan.owner and account and plan.owner.id == account.id),
        migrated_from=turn.migrated_from,
        migration_reason=turn.migration_reason[:60],
        compaction=turn.compaction,
        context_lost=turn.context_lost,
        queued_ms=turn.queued_ms,
        ttft_ms=_ttft_ms(turn),
        duration_ms=_duration_ms(turn),
        client_ip=turn.client_ip,
        cost_usd=turn.cost,
        **counts,
    )


def _ttft_ms(turn: Turn) -> int | None:
    return int((turn.first_byte_at - turn.started) * 1000) if turn.first_byte_at else None


def _duration_ms(turn: Turn) -> int:
    return int((turn.ended - turn.started) * 1000)


def _tell(turn: Turn) -> None:
    """The written turn in the metrics and the log."""
    key, account = turn.key, turn.account
    metrics.observe_usage(key.pool.name if key else "", turn.model[:100], turn.counts, turn.cost)
    log.info(
        "turn",
        extra={
            "request_id": turn.request_id,
            "pool": key.pool.name if key else None,
            "key_prefix": key.prefix if key else None,
            "account": account.label if account else None,
            "route": turn.route,
            "status": turn.status_code,
            "outcome": turn.outcome,
            "queued_ms": turn.queued_ms,
            "ttft_ms": _ttft_ms(turn),
            "duration_ms": _duration_ms(turn),
        },
    )


def observe_quota(turn: Turn, headers) -> None:
    turn.quota.update(quota.from_headers(headers, timezone.now()))


_write_async = on_db_thread(_write)


async def finish(turn: Turn) -> None:
    """Write the turn once; safe to call from a cancelled stream (the write is shielded). While the database
    is unreachable the turn waits in the backlog, written when it is back."""
    if turn.finished:
        return
    turn.finished = True
    turn.ended, turn.ended_at = time.monotonic(), timezone.now()
    metrics.observe_turn(turn)
    metrics.DURATION.observe(turn.ended - turn.started)
    try:
        # The price table too must be at hand: reading it again is the ORM's (on a database thread).
        if loop_db.available() and _only_the_row(turn) and (prices := pricing.fresh_table()) is not None:
            await asyncio.shield(_write_row_on_loop(turn, _row(turn, prices)))
        else:
            await asyncio.shield(_write_async(turn))
    except DATABASE_DOWN:
        # Only served turns wait: the refusals of the outage itself would fill the backlog, and say nothing.
        if turn.outcome != "database_unavailable":
            backlog.add(turn)
    except DatabaseError:
        # The client has had its answer; a lost row must not turn into an error for it.
        log.exception("could not record turn %s", turn.request_id)


class _Backlog:
    """Turns served while the database was unreachable: their rows are written in order once it is back.

    Bounded, and in this process's memory only: past the bound a turn's row is dropped, counted in
    `pooler_accounting_dropped_total` and logged once per outage.
    """

    def __init__(self):
        self.turns: deque[Turn] = deque()
        self.drainer: asyncio.Task | None = None
        self.told_of_drops = False

    def add(self, turn: Turn) -> None:
        if len(self.turns) >= settings.POOLER_ACCOUNTING_BUFFER:
            metrics.ACCOUNTING_DROPPED.inc()
            if not self.told_of_drops:
                self.told_of_drops = True
                log.error("accounting backlog full (%d turns): rows of later turns are dropped", len(self.turns))
            return
        self.turns.append(turn)
        metrics.ACCOUNTING_PENDING.set(len(self.turns))
        if self.drainer is None or self.drainer.done():
            self.drainer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        delay = _DRAIN_FIRST_DELAY
        await asyncio.sleep(delay)
        while self.turns:
            try:
                await asyncio.shield(_write_async(self.turns[0]))
            except DATABASE_DOWN:
                delay = min(delay * 2, _DRAIN_MAX_DELAY)
                await asyncio.sleep(delay)
                continue
            except Exception:
                # Not the outage: this row cannot be written (its key deleted meanwhile, say). It must not hold
                # back the rows behind it, nor leave the pending count above 0 once nothing waits.
                log.exception("could not record turn %s", self.turns[0].request_id)
            self.turns.popleft()
            metrics.ACCOUNTING_PENDING.set(len(self.turns))
        self.told_of_drops = False
        log.warning("accounting backlog written")


_DRAIN_FIRST_DELAY, _DRAIN_MAX_DELAY = 0.5, 10.0
backlog = _Backlog()
