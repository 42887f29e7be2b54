"""Pools, upstream accounts, keys, tokens and the metadata-only logs of what they did."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from . import networks, secrets
from .crypto import EncryptedTextField


class Strategy(models.TextChoices):
    LEAST_USED = "least_used", "Least used (most quota headroom)"
    ROUND_ROBIN = "round_robin", "Round robin"
    FILL_FIRST = "fill_first", "Fill first (drain in priority order)"
    WEIGHTED = "weighted", "Weighted by membership weight"


class SessionMigration(models.TextChoices):
    MIGRATE = "migrate", "Move the session to another account"
    HOLD = "hold", "Hold the session on its account until reset"
    # A compacted session's history lives in one sealed item only its account can read: moving it loses
    # everything before the compaction, moving any other session only loses sealed reasoning.
    HOLD_COMPACTED = "hold_compacted", "Move sessions, but hold compacted ones on their account until reset"


class Pool(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.LEAST_USED)
    session_migration = models.CharField(
        max_length=20, choices=SessionMigration.choices, default=SessionMigration.MIGRATE
    )
    sticky_ttl_seconds = models.PositiveIntegerField(default=3600)
    allowed_models = models.JSONField(default=list, blank=True, help_text="Empty: every model.")
    # Defaults for keys that leave a limit empty; rpm_limit caps the whole pool.
    default_rpm = models.PositiveIntegerField(null=True, blank=True)
    default_tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    default_max_concurrent = models.PositiveIntegerField(null=True, blank=True)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Pool-wide requests per minute.")
    default_budgets = models.JSONField(
        default=list, blank=True, help_text="Budgets of keys that have none of their own (see PoolApiKey.budgets)."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Pool operators: staff users who see and change this pool's rows only (owners, superusers, see every pool).
    operators = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="operated_pools", help_text="Pool operators of this pool."
    )

    def __str__(self) -> str:
        return self.name

    def allows_model(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models

    def clean(self):
        _check_budgets(self, "default_budgets")


def _check_budgets(row, field: str) -> None:
    from django.core.exceptions import ValidationError

    from .budgets import BudgetError, parse_budgets

    try:
        parse_budgets(getattr(row, field))
    except BudgetError as error:
        raise ValidationError({field: str(error)}) from None


class AccountStatus(models.TextChoices):
    ACTIVE = "active"
    PAUSED = "paused"
    REAUTH_REQUIRED = "reauth_required"
    DISABLED = "disabled"


class UpstreamAccount(models.Model):
    label = models.CharField(max_length=100, unique=True)
    chatgpt_account_id = models.CharField(max_length=200, db_index=True)
    email = models.CharField(max_length=254, blank=True)
    plan_type = models.CharField(max_length=40, blank=True)
    access_token = EncryptedTextField(blank=True)
    refresh_token = EncryptedTextField(blank=True)
    id_token = EncryptedTextField(blank=True)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    last_refresh_at = models.DateTimeField(null=True, blank=True)
    base_url = models.URLField(blank=True, help_text="Empty: POOLER_UPSTREAM_BASE_URL.")
    status = models.CharField(max_length=20, choices=AccountStatus.choices, default=AccountStatus.ACTIVE)
    model_slugs = models.JSONField(default=list, blank=True, help_text="Model slugs it serves; empty: any.")
    max_concurrent = models.PositiveIntegerField(null=True, blank=True)
    reserve_percent = models.FloatField(
        null=True, blank=True, help_text="Stop choosing it once a window is above this percent."
    )
    # Health.
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    cooldown_until = models.DateTimeField(null=True, blank=True)
    cooldown_reason = models.CharField(max_length=60, blank=True)
    # Quota snapshot from response headers or wham/usage.
    primary_used_percent = models.FloatField(null=True, blank=True)
    primary_window_minutes = models.PositiveIntegerField(null=True, blank=True)
    primary_resets_at = models.DateTimeField(null=True, blank=True)
    secondary_used_percent = models.FloatField(null=True, blank=True)
    secondary_window_minutes = models.PositiveIntegerField(null=True, blank=True)
    secondary_resets_at = models.DateTimeField(null=True, blank=True)
    quota_observed_at = models.DateTimeField(null=True, blank=True)
    next_quota_poll_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.label

    @property
    def upstream_base_url(self) -> str:
        return (self.base_url or settings.POOLER_UPSTREAM_BASE_URL).rstrip("/")

    def window_used(self, now: datetime) -> tuple[float, float]:
        """Primary and secondary used percent, counting a window whose reset has passed as empty."""
        primary = self.primary_used_percent or 0.0
        if self.primary_resets_at and self.primary_resets_at <= now:
            primary = 0.0
        secondary = self.secondary_used_percent or 0.0
        if self.secondary_resets_at and self.secondary_resets_at <= now:
            secondary = 0.0
        return primary, secondary

    def ineligibility(self, model: str | None, now: datetime) -> str | None:
        """Why this account cannot take a turn now, or None when it can."""
        if self.status != AccountStatus.ACTIVE:
            return self.status
        if self.cooldown_until and self.cooldown_until > now:
            return f"cooldown:{self.cooldown_reason or 'error'}"
        if model and self.model_slugs and model not in self.model_slugs:
            return "model_unsupported"
        primary, secondary = self.window_used(now)
        limit = 100.0 if self.reserve_percent is None else self.reserve_percent
        if primary >= limit or secondary >= limit:
            return "quota_exhausted" if max(primary, secondary) >= 100.0 else "reserve_reached"
        return None

    def is_eligible(self, model: str | None, now: datetime) -> bool:
        return self.ineligibility(model, now) is None

    def available_at(self, now: datetime) -> datetime | None:
        """When an account that is out of quota or cooling down could serve again."""
        times = [t for t in (self.cooldown_until,) if t and t > now]
        primary, secondary = self.window_used(now)
        limit = 100.0 if self.reserve_percent is None else self.reserve_percent
        if primary >= limit and self.primary_resets_at:
            times.append(self.primary_resets_at)
        if secondary >= limit and self.secondary_resets_at:
            times.append(self.secondary_resets_at)
        return max(times) if times else None

    def token_needs_refresh(self, now: datetime) -> bool:
        margin = timedelta(seconds=settings.POOLER_REFRESH_MARGIN_SECONDS)
        # The expiry first: reading the refresh token decrypts it.
        return bool(self.token_expires_at) and self.token_expires_at - margin <= now and bool(self.refresh_token)


class PoolMembership(models.Model):
    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="memberships")
    account = models.ForeignKey(UpstreamAccount, on_delete=models.CASCADE, related_name="memberships")
    weight = models.PositiveIntegerField(default=1)
    priority = models.IntegerField(default=0, help_text="fill_first drains lower numbers first.")
    enabled = models.BooleanField(default=True)

    class Meta:
        unique_together = [("pool", "account")]
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return f"{self.account} in {self.pool}"


class HashedSecret(models.Model):
    """Fields and rules shared by Pool API keys and MCP tokens."""

    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=20, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    SECRET_KIND = ""

    class Meta:
        abstract = True

    def issue(self) -> str:
        """Give this row a new secret and return the raw value (to show once)."""
        raw, self.prefix, self.secret_hash = secrets.new_secret(self.SECRET_KIND)
        return raw

    def matches(self, raw: str) -> bool:
        return secrets.matches(raw, self.secret_hash)

    def is_usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @classmethod
    def find(cls, raw: str, queryset=None, *, by_prefix=None):
        """The row a raw secret belongs to, usable or not, or None (one indexed query, constant-time compare).

        `by_prefix(prefix)` reads the row instead of `queryset` (the turn path's own SQL, proxy/turn_reads.py).
        """
        if not raw.startswith(cls.SECRET_KIND + "_"):
            return None
        prefix = secrets.prefix_of(raw)
        if by_prefix is None:
            # The prefix is unique: a slice, not first(), which would compile and run an ORDER BY for one row.
            rows = list((queryset if queryset is not None else cls.objects).filter(prefix=prefix)[:1])
            row = rows[0] if rows else None
        else:
            row = by_prefix(prefix)
        return row if row is not None and row.matches(raw) else None

    @classmethod
    def lookup(cls, raw: str, queryset=None, *, by_prefix=None):
        """The live row for a raw secret, or None."""
        row = cls.find(raw, queryset, by_prefix=by_prefix)
        return row if row is not None and row.is_usable(timezone.now()) else None


# Reasoning efforts from the least to the most; a key's cap lowers (or refuses) anything above it.
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


class OverCap(models.TextChoices):
    LOWER = "lower", "Lower it to the cap"
    REFUSE = "refuse", "Refuse the request (400)"


class PoolApiKey(HashedSecret):
    SECRET_KIND = "cpk"

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="api_keys")
    rpm = models.PositiveIntegerField("requests per minute", null=True, blank=True)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    max_concurrent = models.PositiveIntegerField("concurrent streams", null=True, blank=True)
    allowed_models = models.JSONField(default=list, blank=True, help_text="Empty: the pool's models.")
    # Life of a key: paused keys are refused until resumed; after a rotation the previous secret keeps working
    # until previous_secret_expires_at (the grace period), then only the new one does.
    paused_at = models.DateTimeField(null=True, blank=True)
    rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    previous_secret_hash = models.CharField(max_length=64, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # What a turn may ask for: applied to its body before it goes upstream (proxy/key_policy.py).
    forced_model = models.CharField(max_length=100, blank=True, help_text="Every turn runs on this model.")
    max_reasoning_effort = models.CharField(
        max_length=10, blank=True, choices=[(e, e) for e in REASONING_EFFORTS], help_text="Empty: any effort."
    )
    reasoning_effort_over_cap = models.CharField(max_length=10, choices=OverCap.choices, default=OverCap.LOWER)
    forced_service_tier = models.CharField(
        max_length=20, blank=True, help_text="Every turn asks for this service tier (e.g. default, flex)."
    )
    allowed_service_tiers = models.JSONField(
        default=list, blank=True, help_text="Tiers a turn may ask for; another is refused (400). Empty: any."
    )
    max_input_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="Largest input per request, estimated as the body's bytes / 4 (400 above)."
    )
    max_output_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="A request's max_output_tokens is lowered to this."
    )
    budgets = models.JSONField(
        default=list,
        blank=True,
        help_text='Spend over rolling windows, e.g. [{"window": "5h", "kind": "tokens", "amount": 200000}, '
        '{"window": "day", "kind": "cost", "amount": 5, "model": "gpt-5.5"}]; windows 5h, day, week, month; '
        "kinds tokens, input_tokens, output_tokens, cost (USD). Empty: the pool's default budgets.",
    )
    # Where its requests may come from (the caller's address as accounts/networks.py reads it).
    allowed_networks = networks.NetworksField(
        default=list, blank=True, help_text="CIDRs, one per line (IPv4 or IPv6), e.g. 10.0.0.0/8. Empty: any address."
    )

    class Meta:
        verbose_name = "Pool API key"

    def __str__(self) -> str:
        return f"{self.name or 'key'} ({self.prefix}…)"

    def clean(self):
        _check_budgets(self, "budgets")

    def matches(self, raw: str) -> bool:
        """The current secret, or the one before a rotation while its grace period lasts."""
        if super().matches(raw):
            return True
        grace = self.previous_secret_expires_at
        return (
            bool(self.previous_secret_hash)
            and grace is not None
            and grace > timezone.now()
            and (secrets.matches(raw, self.previous_secret_hash))
        )

    def refusal(self, now: datetime) -> str | None:
        """Why a key that matched cannot be used now: revoked, expired or paused (None when it can)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "paused" if self.paused_at is not None else None

    def rotate(self, grace: timedelta, now: datetime) -> str:
        """A new secret for this row (same prefix, limits and history), returned raw to show once; the current
        one keeps working for `grace`."""
        self.previous_secret_hash = self.secret_hash if grace > timedelta(0) else ""
        self.previous_secret_expires_at = now + grace if grace > timedelta(0) else None
        raw, _, self.secret_hash = secrets.new_secret(self.SECRET_KIND, lookup=self.prefix.partition("_")[2])
        self.rotated_at = now
        return raw

    def allows_model(self, model: str) -> bool:
        return (not self.allowed_models or model in self.allowed_models) and self.pool.allows_model(model)

    def budget_list(self) -> list[dict]:
        """The key's own budgets, else its pool's defaults."""
        return self.budgets or self.pool.default_budgets

    def allows_address(self, address: str | None) -> bool:
        return networks.allows(self.allowed_networks, address)

    def limit(self, field: str) -> int | None:
        """The key's own limit, else its pool's default."""
        own = getattr(self, field)
        return own if own is not None else getattr(self.pool, f"default_{field}")


class McpToken(HashedSecret):
    SECRET_KIND = "cpm"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mcp_tokens")
    can_write = models.BooleanField(default=False, help_text="Allows pause/resume accounts and revoke keys.")

    class Meta:
        verbose_name = "MCP token"

    def __str__(self) -> str:
        return f"{self.user} ({self.prefix}…)"


class SessionAffinity(models.Model):
    """Which account serves a Codex session (or prompt cache key) in a pool: shared by all processes."""

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE)
    session_key_hash = models.CharField(max_length=64)
    account = models.ForeignKey(UpstreamAccount, on_delete=models.CASCADE, related_name="+")
    previous_account = models.ForeignKey(
        UpstreamAccount, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    move_reason = models.CharField(max_length=60, blank=True)
    moved_at = models.DateTimeField(null=True, blank=True)
    moves = models.PositiveIntegerField(default=0)
    # The client's history is append-only: the input items before this index were made by accounts the
    # session moved away from, so their encrypted items are foreign to the current one.
    foreign_items = models.PositiveIntegerField(default=0)
    # The history holds a compaction made by the current account: the only copy of what came before it.
    compacted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        unique_together = [("pool", "session_key_hash")]
        verbose_name_plural = "session affinities"

    def __str__(self) -> str:
        return f"{self.session_key_hash[:12]} → {self.account_id}"


class ConcurrencySlot(models.Model):
    """One open stream of a key on an account; rows, so every process sees them."""

    api_key = models.ForeignKey(PoolApiKey, on_delete=models.CASCADE, null=True, related_name="+")
    account = models.ForeignKey(UpstreamAccount, on_delete=models.CASCADE, null=True, related_name="+")
    request_id = models.CharField(max_length=64)
    acquired_at = models.DateTimeField(auto_now_add=True)
    # A slot left by a crashed process stops counting after this time.
    expires_at = models.DateTimeField(db_index=True)


class SlotWaiter(models.Model):
    """A turn waiting for one of its pool's accounts' concurrent turns (fair share, proxy/fair_share.py); rows,
    so every process sees who waits: a freed slot goes to the waiting key that holds the fewest."""

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(PoolApiKey, on_delete=models.CASCADE, related_name="+")
    request_id = models.CharField(max_length=64)
    since = models.DateTimeField(auto_now_add=True)
    # A row left by a crashed process stops counting after this time (its wait was bounded anyway).
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["pool", "expires_at"])]


class Admission(models.Model):
    """One admitted request, for sliding-window requests-per-minute limits."""

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(PoolApiKey, on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["api_key", "at"]), models.Index(fields=["pool", "at"])]


class RequestLog(models.Model):
    """Metadata of one turn. Never prompt or completion text."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    request_id = models.CharField(max_length=64, db_index=True)
    pool = models.ForeignKey(Pool, on_delete=models.SET_NULL, null=True, blank=True)
    api_key = models.ForeignKey(PoolApiKey, on_delete=models.SET_NULL, null=True, blank=True)
    account = models.ForeignKey(UpstreamAccount, on_delete=models.SET_NULL, null=True, blank=True)
    route = models.CharField(max_length=60)
    transport = models.CharField(max_length=10, default="http")
    model = models.CharField(max_length=100, blank=True)
    requested_model = models.CharField(
        max_length=100, blank=True, help_text="The model the client asked for, when its key forced another"
    )
    status_code = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=30, blank=True, help_text="ok, client_closed, upstream_error, …")
    error_code = models.CharField(max_length=60, blank=True)
    attempts = models.JSONField(default=list, blank=True)
    is_stream = models.BooleanField(default=True)
    is_prewarm = models.BooleanField(default=False)
    sticky = models.BooleanField(default=False)
    migrated_from = models.ForeignKey(
        UpstreamAccount, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    migration_reason = models.CharField(max_length=60, blank=True)
    compaction = models.BooleanField(default=False, help_text="A turn that compacted the session's history")
    context_lost = models.BooleanField(
        default=False,
        help_text="The session reached this account without its compacted history (sealed to another account); "
        "the model was told in its place",
    )
    queued_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="How long the turn waited for a slot while every account was at its cap"
    )
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    # Set once, when the row is written, at the price in force then: a later price does not rewrite it.
    cost_usd = models.DecimalField(
        "cost (USD)",
        max_digits=20,
        decimal_places=10,
        null=True,
        blank=True,
        help_text="What the turn would have cost at the API's list price when it ran; empty: its model had no price",
    )
    client_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["api_key", "created_at"])]

    def __str__(self) -> str:
        return f"{self.route} {self.status_code} {self.request_id}"


class ModelPrice(models.Model):
    """An operator's API list price for a model from a day on; wins over the shipped table
    (accounts/data/model_prices.json) for the same model and day."""

    model = models.CharField(max_length=100, help_text="The model slug, as clients send it (e.g. gpt-5.2).")
    effective_from = models.DateField(help_text="In force from 00:00 UTC of this day until the model's next price.")
    input_usd_per_million = models.DecimalField(
        "input", max_digits=12, decimal_places=6, help_text="USD per 1M input tokens (those not served from the cache)"
    )
    cached_input_usd_per_million = models.DecimalField(
        "cached input", max_digits=12, decimal_places=6, help_text="USD per 1M input tokens served from the cache"
    )
    output_usd_per_million = models.DecimalField(
        "output", max_digits=12, decimal_places=6, help_text="USD per 1M output tokens (reasoning included)"
    )
    note = models.CharField(max_length=200, blank=True, help_text="Where the price comes from.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        unique_together = [("model", "effective_from")]
        ordering = ["model", "-effective_from"]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from}"

    def as_price(self):
        from .pricing import Price

        return Price(
            model=self.model,
            effective_from=self.effective_from,
            input=self.input_usd_per_million,
            cached_input=self.cached_input_usd_per_million,
            output=self.output_usd_per_million,
            source="admin",
        )


class AuditLog(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=150, help_text="admin:USER, cli, mcp:USER or worker")
    action = models.CharField(max_length=60)
    object_type = models.CharField(max_length=60)
    object_id = models.CharField(max_length=60, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.object_type} {self.object_repr}"


class OperatorInvite(models.Model):
    """A one-time, expiring link where an invited operator sets a password; only its token's hash is kept."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="operator_invites")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.CharField(max_length=150, help_text="admin:USER or cli")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"invite of {self.user}"
