"""Which upstream account serves a turn: eligibility, session stickiness, then the pool's strategy."""

import bisect
import hashlib
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, F
from django.utils import timezone

from accounts.models import (
    ConcurrencySlot,
    Pool,
    SessionAffinity,
    SessionMigration,
    Strategy,
    UpstreamAccount,
)

from . import turn_reads
from .errors import AccountsBusy, NoEligibleAccount, RateLimited, UsageLimitReached

# Headers the Codex CLI uses to name a session (new and old spellings), most specific first.
SESSION_HEADERS = ("session-id", "session_id", "conversation_id", "thread-id")


# A sticky key taken from a body's prompt_cache_key alone: a stateless request that would like the account
# holding its prompt cache (a saving, not a session), so a pool's `hold` policy never pins it.
CACHE_KEY_PREFIX = "cache:"


def sticky_key(headers, body: dict) -> str | None:
    """The session identity of a turn: a session header, else the body's prompt_cache_key (prefixed)."""
    for name in SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return value
    cache_key = body.get("prompt_cache_key")
    return CACHE_KEY_PREFIX + cache_key if isinstance(cache_key, str) and cache_key else None


def hash_session(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class Plan:
    """The accounts to try, best first, and what stickiness said about them."""

    accounts: list[UpstreamAccount]
    session_hash: str | None = None
    owner: UpstreamAccount | None = None  # the account that served the session so far
    pinned_until: datetime | None = None  # when the owner's pin expires
    foreign_items: int = 0  # leading history items made by accounts the session moved away from
    compacted: bool = False  # the session's history holds a compaction made by its owner
    owner_unavailable: str = ""  # why the owner is not among the candidates
    hold: bool = False  # the pool keeps sessions on their owner: no failover away from it


@dataclass
class _Snapshot:
    """A pool's accounts in strategy order, read at most every POOLER_ROUTING_CACHE_SECONDS.

    It only orders and pre-filters: the few accounts it proposes are re-read fresh before a turn, so a
    stale snapshot costs at most a skipped candidate, never a turn sent to an ineligible account.
    """

    loaded_at: float
    load_seconds: float
    strategy: str
    accounts: list[UpstreamAccount]  # only the fields below
    cumulative_weights: list[int]
    rotation: int = 0

    def fresh_enough(self) -> bool:
        # A big pool's snapshot takes a while to read (about half a second for 10,000 accounts here): it is
        # read again at most every 50 times that, so reading it costs a process at most 2% of its time.
        lifetime = max(settings.POOLER_ROUTING_CACHE_SECONDS, 50 * self.load_seconds)
        return time.monotonic() - self.loaded_at < lifetime


# Keyed by id and creation time: test databases roll back and reuse ids.
_snapshots: dict[tuple, _Snapshot] = {}
# What ordering and eligibility read (see UpstreamAccount.ineligibility and available_at), and the pool's quota
# view (pool_quota.py): no tokens.
_SNAPSHOT_FIELDS = (
    "status",
    "plan_type",
    "cooldown_until",
    "cooldown_reason",
    "model_slugs",
    "reserve_percent",
    "primary_used_percent",
    "primary_resets_at",
    "secondary_used_percent",
    "secondary_resets_at",
    "primary_window_minutes",
    "secondary_window_minutes",
    "last_used_at",
)


def _load_snapshot(pool: Pool, now: datetime) -> _Snapshot:
    started = time.monotonic()
    accounts = list(
        UpstreamAccount.objects.filter(memberships__pool=pool, memberships__enabled=True)
        .only(*_SNAPSHOT_FIELDS)
        .annotate(priority=F("memberships__priority"), weight=F("memberships__weight"))
    )
    epoch = datetime.min.replace(tzinfo=now.tzinfo)
    if pool.strategy == Strategy.ROUND_ROBIN:
        # The least recently used first, then each process rotates through the list.
        accounts.sort(key=lambda a: (a.last_used_at or epoch, a.id))
    elif pool.strategy in (Strategy.FILL_FIRST, Strategy.WEIGHTED):
        accounts.sort(key=lambda a: (a.priority, a.id))
    else:  # least_used: most headroom in the primary window, then the secondary
        accounts.sort(key=lambda a: (*a.window_used(now), a.id))
    weights, total = [], 0
    for account in accounts:
        total += max(account.weight, 1)
        weights.append(total)
    loaded = time.monotonic()
    return _Snapshot(loaded, loaded - started, pool.strategy, accounts, weights)


def _snapshot(pool: Pool, now: datetime, reload: bool = False) -> _Snapshot:
    cached = None if reload else fresh_snapshot(pool)
    if cached is None:
        cached = _snapshots[(pool.id, pool.created_at)] = _load_snapshot(pool, now)
    return cached


def pool_snapshot(pool: Pool, now: datetime | None = None) -> _Snapshot:
    """The pool's snapshot, read again first when it is stale (reads the database then)."""
    return _snapshot(pool, now or timezone.now())


def cached_snapshot(pool: Pool) -> _Snapshot | None:
    """The pool's snapshot as this process holds it, however old (never reads the database)."""
    return _snapshots.get((pool.id, pool.created_at))


def fresh_snapshot(pool: Pool) -> _Snapshot | None:
    """The pool's snapshot when this process holds one that pool_snapshot() would not read again."""
    cached = cached_snapshot(pool)
    return cached if cached is not None and cached.fresh_enough() and cached.strategy == pool.strategy else None


def _walk(snapshot: _Snapshot) -> list[UpstreamAccount]:
    """The snapshot's accounts in the order this turn should consider them."""
    accounts, count = snapshot.accounts, len(snapshot.accounts)
    if count == 0:
        return []
    if snapshot.strategy == Strategy.ROUND_ROBIN:
        start = snapshot.rotation % count
        snapshot.rotation += 1
    elif snapshot.strategy == Strategy.WEIGHTED:
        start = bisect.bisect_right(snapshot.cumulative_weights, random.randrange(snapshot.cumulative_weights[-1]))
    else:
        return accounts
    return accounts[start:] + accounts[:start]


def _proposals(snapshot: _Snapshot, model: str | None, now: datetime, want: int) -> list[int]:
    ids = []
    for account in _walk(snapshot):
        if account.is_eligible(model, now):
            ids.append(account.id)
            if len(ids) >= want:
                break
    return ids


def _with_open_turns(accounts: list[UpstreamAccount], now: datetime) -> None:
    """Count open turns of the accounts that cap their concurrency."""
    limited = [a.id for a in accounts if a.max_concurrent]
    if not limited:
        return
    busy = dict(
        ConcurrencySlot.objects.filter(account_id__in=limited, expires_at__gt=now)
        .values_list("account_id")
        .annotate(n=Count("id"))
    )
    for account in accounts:
        account.open_turns = busy.get(account.id, 0)


def _has_capacity(account: UpstreamAccount) -> bool:
    return not account.max_concurrent or getattr(account, "open_turns", 0) < account.max_concurrent


def _candidates(
    pool: Pool, model: str | None, session_hash: str | None, now: datetime, reload: bool = False
) -> tuple[list[UpstreamAccount], dict[int, UpstreamAccount], SessionAffinity | None, _Snapshot]:
    """Fresh, eligible accounts in strategy order, the fresh rows read (the session owner's included), the
    session's pin."""
    snapshot = _snapshot(pool, now, reload)
    proposed = _proposals(snapshot, model, now, settings.POOLER_MAX_ATTEMPTS + 2)
    fresh, pin = turn_reads.accounts_and_pin(proposed, pool.id, session_hash, now)
    _with_open_turns(list(fresh.values()), now)
    return _ordered(proposed, fresh, model, now), fresh, pin, snapshot


def _ordered(proposed: list[int], fresh: dict[int, UpstreamAccount], model: str | None, now: datetime):
    return [fresh[i] for i in proposed if _can_serve(fresh.get(i), model, now)]


def _can_serve(account: UpstreamAccount | None, model: str | None, now: datetime) -> bool:
    return account is not None and account.is_eligible(model, now) and _has_capacity(account)


def _servable(ordered: list[UpstreamAccount], owner: UpstreamAccount | None, model: str | None, now) -> bool:
    """Whether a turn has an account to go to: a candidate, or the session's owner."""
    return bool(ordered) or _can_serve(owner, model, now)


def plan_turn(
    pool: Pool,
    model: str | None,
    session: str | None,
    now: datetime | None = None,
    *,
    compacted: bool = False,
    compaction: bool = False,
) -> Plan:
    """The ordered candidates for a turn; raises when none can serve (429 with the soonest reset, or 503).

    `compacted`: the turn's history holds a compaction item (what the `hold_compacted` policy holds);
    `compaction`: the turn compacts the history (see _compact_elsewhere).
    """
    now = now or timezone.now()
    session_hash = hash_session(session) if session else None
    ordered, fresh, pin, snapshot = _candidates(pool, model, session_hash, now)
    if not _servable(ordered, fresh.get(pin.account_id) if pin else None, model, now):
        # The snapshot may be stale (accounts added or back from a reset): look once more before refusing.
        ordered, fresh, pin, snapshot = _candidates(pool, model, session_hash, now, reload=True)
    return _decide(pool, model, session, now, session_hash, ordered, fresh, pin, snapshot, compacted, compaction)


async def plan_on_loop(
    pool: Pool, model: str | None, session: str | None, now: datetime, *, compacted: bool, compaction: bool
) -> Plan | None:
    """plan_turn with its read on the event loop (loop_db.py), or None when the turn needs the database threads
    for it: a stale snapshot (read again there), accounts that cap their concurrent turns (counted there), a
    session whose owner cannot serve it (a hold reads the owner's reset there), or no account to go to
    (plan_turn reads the snapshot again before it refuses)."""
    snapshot = fresh_snapshot(pool)
    if snapshot is None:
        return None
    session_hash = hash_session(session) if session else None
    proposed = _proposals(snapshot, model, now, settings.POOLER_MAX_ATTEMPTS + 2)
    fresh, pin = await turn_reads.accounts_and_pin_on_loop(proposed, pool.id, session_hash, now)
    if any(account.max_concurrent for account in fresh.values()):
        return None
    ordered = _ordered(proposed, fresh, model, now)
    owner = fresh.get(pin.account_id) if pin else None
    if not _servable(ordered, owner, model, now) or (owner is not None and not _can_serve(owner, model, now)):
        return None
    return _decide(pool, model, session, now, session_hash, ordered, fresh, pin, snapshot, compacted, compaction)


def _decide(pool, model, session, now, session_hash, ordered, fresh, pin, snapshot, compacted, compaction) -> Plan:
    """The plan from the candidates read (see plan_turn)."""
    owner = fresh.get(pin.account_id) if pin else None
    owner_ok = _can_serve(owner, model, now)
    plan = Plan(accounts=ordered, session_hash=session_hash)
    if owner is not None:
        plan.owner, plan.pinned_until, plan.foreign_items = owner, pin.expires_at, pin.foreign_items
        # The pin knows it too when the turn does not show it (a websocket prewarm carries no history).
        plan.compacted = pin.compacted
        plan.hold = (
            holds(pool.session_migration, compacted or pin.compacted)
            and owner.status == "active"
            and not session.startswith(CACHE_KEY_PREFIX)
        )
        others = [a for a in ordered if a.id != owner.id]
        if owner_ok and compaction and not plan.hold and _compact_elsewhere(owner, others, now):
            # Keep the owner as the last resort: the compaction is best made where the session can stay.
            plan.accounts, plan.owner_unavailable = others + [owner], "compacted_near_limit"
        elif owner_ok:
            plan.accounts = [owner] + others
        else:
            reason = owner.ineligibility(model, now) or "at_capacity"
            if plan.hold:
                raise _busy() if reason == "at_capacity" else held_error(owner, reason, now)
            plan.owner_unavailable = reason.split(":")[0]
    if not plan.accounts:
        if any(a.is_eligible(model, now) and not _has_capacity(a) for a in fresh.values()):
            raise _busy()
        raise _nothing_eligible(snapshot.accounts, model, now)
    return plan


def _busy() -> AccountsBusy:
    """Every account that could serve is at its concurrent-turn cap: the turn waits for a slot (fair_share.py)."""
    return AccountsBusy("Every account of this pool that could serve this turn is at its concurrent-turn cap.")


def holds(policy: str, compacted: bool) -> bool:
    """Whether the pool's policy keeps a session on its owner rather than move it."""
    return policy == SessionMigration.HOLD or (policy == SessionMigration.HOLD_COMPACTED and compacted)


def _compact_elsewhere(owner: UpstreamAccount, others: list[UpstreamAccount], now: datetime) -> bool:
    """Whether a compaction turn should move its session first: the owner is near its limit and another
    account has room. A compaction turn still carries the whole history in the clear (only sealed reasoning
    is lost by moving it), while the compaction item it makes can only be read by the account that made it:
    made on an account about to run out, it would be lost at the next move."""
    threshold = settings.POOLER_COMPACT_ELSEWHERE_PERCENT
    return max(owner.window_used(now)) >= threshold and any(max(a.window_used(now)) < threshold for a in others)


def held_error(owner: UpstreamAccount, reason: str, now: datetime | None = None) -> RateLimited:
    """429 for a session held on its unavailable owner, waiting for the owner's reset."""
    now = now or timezone.now()
    owner.refresh_from_db(
        fields=[
            "cooldown_until",
            "primary_used_percent",
            "primary_resets_at",
            "secondary_used_percent",
            "secondary_resets_at",
        ]
    )
    reset = owner.available_at(now)
    wait = int((reset - now).total_seconds()) + 1 if reset else 60
    message = (
        f"The account serving this session is unavailable ({reason}) and the pool holds sessions on "
        f"their account; try again in {wait} seconds."
    )
    if _spent(owner, now) or "usage_limit" in reason or "quota" in reason:
        return UsageLimitReached(message, retry_after=wait)
    return RateLimited(message, code="session_account_unavailable", retry_after=wait)


def _spent(account: UpstreamAccount, now: datetime) -> bool:
    """Out of quota (rather than cooling down after errors)."""
    return account.cooldown_reason == "usage_limit_reached" or max(account.window_used(now)) >= 100.0


def _nothing_eligible(accounts: list[UpstreamAccount], model: str | None, now: datetime):
    """429 with the soonest reset when accounts will come back by themselves, else 503."""
    if model and accounts and all(a.model_slugs and model not in a.model_slugs for a in accounts):
        return NoEligibleAccount(
            f"No account in this pool serves model {model!r}.",
            status=404,
            code="model_not_found",
            type="invalid_request_error",
        )
    resets = [t for a in accounts if a.status == "active" and (t := a.available_at(now))]
    if resets:
        wait = int((min(resets) - now).total_seconds()) + 1
        message = f"Every account in this pool is at its usage limit or cooling down; try again in {wait} seconds."
        if any(_spent(a, now) for a in accounts):
            return UsageLimitReached(message, retry_after=wait)
        return RateLimited(message, retry_after=wait)
    return NoEligibleAccount("No upstream account of this pool can serve requests now.")


def remember_session(
    plan: Plan,
    pool: Pool,
    account: UpstreamAccount,
    reason: str = "",
    now: datetime | None = None,
    foreign_items: int | None = None,
    compacted: bool | None = None,
) -> None:
    """Pin the session to the account that served it, recording a move when it changed.

    `foreign_items`: how many leading items of the session's history are now known to belong to accounts it
    left (None: unchanged). A moving turn's whole history came before the move; after a compaction, none.
    `compacted`: whether the history now holds a compaction of the account (None: unchanged).
    """
    now = now or timezone.now()
    if pin_is_current(plan, pool, account, now, foreign_items, compacted):
        return
    ttl = timedelta(seconds=pool.sticky_ttl_seconds)

    def pinned():
        return SessionAffinity.objects.filter(pool=pool, session_key_hash=plan.session_hash)

    if plan.owner is not None and plan.owner.id == account.id:
        changes = {}
        if foreign_items is not None and foreign_items != plan.foreign_items:
            changes["foreign_items"] = foreign_items
        if compacted is not None and compacted != plan.compacted:
            changes["compacted"] = compacted
        pinned().filter(account=account).update(**changes, expires_at=now + ttl)
        return
    if plan.owner is None:
        # A new session, or one whose pin expired (not a move): one upsert.
        pin = SessionAffinity(
            pool=pool,
            session_key_hash=plan.session_hash,
            account=account,
            expires_at=now + ttl,
            foreign_items=foreign_items or 0,
            compacted=bool(compacted),
        )
        SessionAffinity.objects.bulk_create(
            [pin],
            update_conflicts=True,
            unique_fields=["pool", "session_key_hash"],
            update_fields=["account", "expires_at", "foreign_items", "compacted"],
        )
        return
    pinned().update(
        previous_account=plan.owner,
        account=account,
        move_reason=reason or "owner_failed",
        moved_at=now,
        moves=F("moves") + 1,
        foreign_items=foreign_items or 0,
        compacted=bool(compacted),
        expires_at=now + ttl,
    )


def pin_is_current(
    plan: Plan,
    pool: Pool,
    account: UpstreamAccount,
    now: datetime,
    foreign_items: int | None = None,
    compacted: bool | None = None,
) -> bool:
    """Whether remember_session has nothing to write: no session, or a pin on `account` that says it all and
    has more than half its lifetime left (renewing it on every turn would cost a write each)."""
    if not plan.session_hash:
        return True
    if plan.owner is None or plan.owner.id != account.id or plan.pinned_until is None:
        return False
    if foreign_items is not None and foreign_items != plan.foreign_items:
        return False
    if compacted is not None and compacted != plan.compacted:
        return False
    return plan.pinned_until - now >= timedelta(seconds=pool.sticky_ttl_seconds) / 2


def current_account(account_id: int) -> UpstreamAccount | None:
    """The account's row as it is now (an operator may have paused it since it was chosen)."""
    return turn_reads.accounts([account_id]).get(account_id)
