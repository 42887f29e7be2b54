"""Admin for pools, accounts, keys and logs. Secrets are never shown; new keys are shown once."""

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from . import audit, invites, keys, pricing
from .importing import ImportError_, parse_auth_json, store_account
from .models import (
    AccountStatus,
    AuditLog,
    McpToken,
    ModelPrice,
    OperatorInvite,
    Pool,
    PoolApiKey,
    PoolMembership,
    RequestLog,
    SessionAffinity,
    UpstreamAccount,
)
from .operators import Scope
from .probe import send_test_turn
from .quota_poll import poll_quota
from .tokens import try_refresh
from .usage import key_usage

# Their pages would show authenticator keys and recovery codes: two-factor sign-in is managed by its user at
# /admin/2fa/ and by `manage.py unlock_operator --reset-2fa`.
for _device in (TOTPDevice, StaticDevice):
    if admin.site.is_registered(_device):
        admin.site.unregister(_device)

# Message level of an action's verdict, by its first word ("ok" and reports of numbers are successes).
_LEVELS = {"failed": messages.ERROR, "HTTP": messages.ERROR, "incomplete": messages.ERROR, "skipped": messages.WARNING}


def actor_of(request) -> str:
    return f"admin:{request.user.get_username()}"


class AuditedAdmin(admin.ModelAdmin):
    """Writes an AuditLog row for every add, change and delete made in the admin."""

    def save_model(self, request, obj, form, change):
        before = audit.snapshot(type(obj).objects.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)
        audit.record(actor_of(request), "change" if change else "add", obj, before, audit.snapshot(obj))

    def delete_model(self, request, obj):
        audit.record(actor_of(request), "delete", obj, audit.snapshot(obj), None)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            audit.record(actor_of(request), "delete", obj, audit.snapshot(obj), None)
        super().delete_queryset(request, queryset)

    def save_formset(self, request, form, formset, change):
        # Inline rows (a pool's memberships) steer routing as much as the parent's own fields do.
        actor = actor_of(request)
        ids = [f.instance.pk for f in formset.initial_forms if f.instance.pk]
        # Read again: validation already copied the submitted values onto the forms' instances.
        stored = {obj.pk: audit.snapshot(obj) for obj in formset.model._default_manager.filter(pk__in=ids)}
        for deleted in formset.deleted_forms:
            if deleted.instance.pk in stored:
                audit.record(actor, "delete", deleted.instance, stored[deleted.instance.pk], None)
        super().save_formset(request, form, formset, change)
        for obj in formset.new_objects:
            audit.record(actor, "add", obj, None, audit.snapshot(obj))
        for obj, _ in formset.changed_objects:
            audit.record(actor, "change", obj, stored.get(obj.pk), audit.snapshot(obj))


def scope_of(request) -> Scope:
    """The pools the signed-in user may see (read once per request)."""
    if not hasattr(request, "pooler_scope"):
        request.pooler_scope = Scope.of(request.user)
    return request.pooler_scope


class PoolScoped:
    """An admin of rows that belong to pools: a pool operator sees, changes and picks only their pools' rows
    (Django's model permissions, from their group, say what they may do to such rows at all)."""

    pool_path = "pool"  # from a row to its pool(s), as in a queryset filter

    def get_queryset(self, request):
        return scope_of(request).filter(super().get_queryset(request), self.pool_path)

    def _in_scope(self, request, obj) -> bool:
        return obj is None or scope_of(request).everything or self.get_queryset(request).filter(pk=obj.pk).exists()

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) and self._in_scope(request, obj)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self._in_scope(request, obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self._in_scope(request, obj)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        pools = scope_of(request).pools()

        class ScopedForm(form):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                # A row can only be put in (or moved to) a pool the user may see.
                for field in self.fields.values():
                    if getattr(field, "queryset", None) is not None and field.queryset.model is Pool:
                        field.queryset = pools

        return ScopedForm


class MembershipInline(admin.TabularInline):
    model = PoolMembership
    extra = 0
    autocomplete_fields = ["account"]


@admin.register(Pool)
class PoolAdmin(PoolScoped, AuditedAdmin):
    pool_path = "pk"

    list_display = ["name", "strategy", "session_migration", "enabled", "account_count", "created_at"]
    list_filter = ["strategy", "enabled"]
    search_fields = ["name"]
    inlines = [MembershipInline]
    filter_horizontal = ["operators"]

    def get_exclude(self, request, obj=None):
        # Who operates a pool is the owners' choice.
        return [] if request.user.is_superuser else ["operators"]

    def save_related(self, request, form, formsets, change):
        before = set(form.instance.operators.values_list("username", flat=True)) if change else set()
        super().save_related(request, form, formsets, change)
        after = set(form.instance.operators.values_list("username", flat=True))
        if before != after:
            audit.record(
                actor_of(request),
                "change_operators",
                form.instance,
                {"operators": sorted(before)},
                {"operators": sorted(after)},
            )

    @admin.display(description="accounts")
    def account_count(self, pool):
        return pool.memberships.count()


class AccountForm(forms.ModelForm):
    """Tokens are never shown; a pasted auth.json replaces them."""

    auth_json = forms.CharField(
        label="auth.json",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "autocomplete": "off"}),
        help_text="Paste the Codex CLI's auth.json (~/.codex/auth.json) to add or re-authorise the account.",
    )
    pool = forms.ModelChoiceField(Pool.objects.all(), required=False, help_text="Add the account to this pool.")

    class Meta:
        model = UpstreamAccount
        exclude = ["access_token", "refresh_token", "id_token"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.instance.pk:
            self.fields["auth_json"].required = True
            self.fields["pool"].required = True
            self.fields["label"].required = False

    def clean_auth_json(self):
        text = self.cleaned_data["auth_json"]
        if not text.strip():
            return None
        try:
            return parse_auth_json(text)
        except ImportError_ as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(UpstreamAccount)
class UpstreamAccountAdmin(PoolScoped, AuditedAdmin):
    pool_path = "memberships__pool"
    form = AccountForm
    list_display = [
        "label",
        "status",
        "plan_type",
        "primary_used_percent",
        "secondary_used_percent",
        "cooldown_until",
        "consecutive_failures",
        "last_error",
        "token_expires_at",
    ]
    list_filter = ["status", "plan_type"]
    search_fields = ["label", "email", "chatgpt_account_id"]
    readonly_fields = [
        "token_expires_at",
        "last_refresh_at",
        "quota_observed_at",
        "last_used_at",
        "created_at",
        "updated_at",
    ]
    actions = ["pause_accounts", "resume_accounts", "refresh_tokens", "poll_quotas", "send_test_turns"]

    def get_urls(self):
        from .device_login import device_login_urls  # it imports this module (actor_of)

        return device_login_urls(self) + super().get_urls()

    def has_change_permission(self, request, obj=None):
        # Seen by a pool operator when it serves one of their pools; changed only when it serves no other.
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or scope_of(request).may_change_account(obj))

    def get_fields(self, request, obj=None):
        # A new account comes only from credentials; its identity is read from the id token.
        if obj is None:
            return ["auth_json", "pool", "label", "base_url"]
        return super().get_fields(request, obj)

    def save_model(self, request, obj, form, change):
        tokens = form.cleaned_data.get("auth_json")
        pool = form.cleaned_data.get("pool")
        if tokens:
            try:
                account = store_account(
                    tokens,
                    pool or obj.memberships.first().pool,
                    label=obj.label,
                    base_url=obj.base_url,
                    actor=actor_of(request),
                )
            except (ImportError_, AttributeError) as exc:
                self.message_user(request, f"auth.json not imported: {exc}", messages.ERROR)
                return
            obj.pk, obj.id = account.pk, account.pk
            obj.refresh_from_db()
            return
        super().save_model(request, obj, form, change)
        if pool:
            PoolMembership.objects.get_or_create(pool=pool, account=obj)

    def _set_status(self, request, queryset, from_status: str, to_status: str, action: str):
        """Move the selected accounts in `from_status` to `to_status`; the others are named as skipped."""
        moved, scope = 0, scope_of(request)
        for account in queryset:
            if not scope.may_change_account(account):
                self.message_user(
                    request, f"{account.label}: skipped, it also serves pools you do not operate", messages.WARNING
                )
                continue
            if account.status != from_status:
                self.message_user(
                    request, f"{account.label}: skipped, it is {account.status} (not {from_status})", messages.WARNING
                )
                continue
            before = audit.snapshot(account)
            account.status = to_status
            account.save(update_fields=["status", "updated_at"])
            audit.record(actor_of(request), action, account, before, audit.snapshot(account))
            moved += 1
        self.message_user(request, f"{action}: {moved} account(s)")

    @admin.action(description="Pause selected accounts")
    def pause_accounts(self, request, queryset):
        self._set_status(request, queryset, AccountStatus.ACTIVE, AccountStatus.PAUSED, "pause_account")

    @admin.action(description="Resume selected paused accounts")
    def resume_accounts(self, request, queryset):
        # A reauth_required account needs a new login and a disabled one an edit; resuming would hide that.
        self._set_status(request, queryset, AccountStatus.PAUSED, AccountStatus.ACTIVE, "resume_account")

    def _run_each(self, request, queryset, action: str, job) -> None:
        """Run `job(account)` for each account, audit it and report a one-line verdict per account."""
        for account in queryset:
            try:
                verdict = job(account)
            except Exception as exc:  # noqa: BLE001 - any failure is reported to the operator, not raised
                verdict = f"failed: {getattr(exc, 'reason', None) or type(exc).__name__}"
            audit.record(actor_of(request), action, account, None, {"result": verdict})
            self.message_user(
                request,
                f"{account.label}: {action} {verdict}",
                _LEVELS.get(verdict.split()[0].rstrip(":"), messages.SUCCESS),
            )

    @admin.action(description="Refresh access token now")
    def refresh_tokens(self, request, queryset):

        def refresh(account):
            account, exchanged = try_refresh(account.pk, actor=actor_of(request), force=True)
            return "ok" if exchanged else f"skipped: the account is {account.status}"

        self._run_each(request, queryset, "refresh_token", refresh)

    @admin.action(description="Poll quota now")
    def poll_quotas(self, request, queryset):

        def poll(account):
            fields = poll_quota(account)
            return (
                f"primary {fields.get('primary_used_percent', '?')}%, secondary "
                f"{fields.get('secondary_used_percent', '?')}%"
            )

        self._run_each(request, queryset, "poll_quota", poll)

    @admin.action(description="Send a test turn")
    def send_test_turns(self, request, queryset):

        self._run_each(request, queryset, "test_turn", lambda account: send_test_turn(account, actor_of(request)))


class SecretIssuingAdmin(AuditedAdmin):
    """Keys and tokens: a new one is issued on add and its raw value shown once, in the add response."""

    readonly_fields = ["prefix", "created_at", "last_used_at"]
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        raw = None if change else obj.issue()
        super().save_model(request, obj, form, change)
        if raw:
            request.issued_secret = raw

    def response_add(self, request, obj, post_url_continue=None):
        return self.show_secret(request, obj, request.issued_secret)

    def show_secret(self, request, obj, raw: str) -> TemplateResponse:
        # Rendered into this one response, not sent as a message: messages travel in a cookie or the session table.
        return TemplateResponse(
            request,
            "admin/accounts/secret_issued.html",
            {
                **self.admin_site.each_context(request),
                "title": f"New {self.opts.verbose_name}",
                "opts": self.opts,
                "object": obj,
                "raw": raw,
            },
        )

    @admin.action(description="Revoke selected")
    def revoke(self, request, queryset):
        for obj in queryset.filter(revoked_at__isnull=True):
            obj.revoked_at = timezone.now()
            obj.save(update_fields=["revoked_at"])
            audit.record(actor_of(request), "revoke", obj)
        self.message_user(request, "revoked")


class RotateForm(forms.Form):
    """The grace period of a rotation, asked for on a page between the action and the new secret."""

    grace_seconds = forms.IntegerField(
        label="Grace period (seconds)",
        min_value=0,
        initial=3600,
        help_text="How long the old secret keeps working, for its clients to take the new one; 0 stops it at once.",
    )


@admin.register(PoolApiKey)
class PoolApiKeyAdmin(PoolScoped, SecretIssuingAdmin):
    list_display = ["prefix", "name", "pool", "usage", "expires_at", "paused_at", "revoked_at", "last_used_at"]
    list_filter = [("pool", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "prefix"]
    fieldsets = [
        (None, {"fields": ["pool", "name", "prefix", "usage", "rpm", "tokens_per_day", "max_concurrent"]}),
        (
            "Life of the key",
            {
                "fields": [
                    "expires_at",
                    "paused_at",
                    "revoked_at",
                    "rotated_at",
                    "previous_secret_expires_at",
                    "created_at",
                    "last_used_at",
                ]
            },
        ),
        (
            "What it may ask for",
            {
                "fields": [
                    "allowed_models",
                    "forced_model",
                    "max_reasoning_effort",
                    "reasoning_effort_over_cap",
                    "forced_service_tier",
                    "allowed_service_tiers",
                    "max_input_tokens",
                    "max_output_tokens",
                ]
            },
        ),
        ("Budgets", {"fields": ["budgets"]}),
        ("Where it may be used from", {"fields": ["allowed_networks"]}),
    ]
    readonly_fields = SecretIssuingAdmin.readonly_fields + ["usage", "rotated_at", "previous_secret_expires_at"]
    actions = ["revoke", "pause_keys", "resume_keys", "rotate_key"]

    @admin.action(description="Pause selected keys (refused with 403 until resumed)")
    def pause_keys(self, request, queryset):
        for key in queryset:
            keys.pause(key, actor_of(request))
        self.message_user(request, "paused")

    @admin.action(description="Resume selected keys")
    def resume_keys(self, request, queryset):
        for key in queryset:
            keys.resume(key, actor_of(request))
        self.message_user(request, "resumed")

    @admin.action(description="Rotate the selected key (choose how long its old secret keeps working)")
    def rotate_key(self, request, queryset):
        # Django's pattern for an action with parameters: the action answers a form, which posts back to it.
        if queryset.count() != 1:
            self.message_user(request, "Select one key to rotate: its new secret is shown once.", messages.WARNING)
            return None
        key = queryset.get()
        form = RotateForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            raw = keys.rotate(key, actor_of(request), form.cleaned_data["grace_seconds"])
            return self.show_secret(request, key, raw)
        return TemplateResponse(
            request,
            "admin/accounts/poolapikey/rotate.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Rotate {key}",
                "opts": self.opts,
                "object": key,
                "form": form,
                "action": "rotate_key",
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )

    @admin.display(description="usage now / limit")
    def usage(self, key):
        """Current usage against the key's limits (its own or its pool's defaults)."""

        if not key.pk:
            return "-"
        used = key_usage(key)

        def part(label, value, limit):
            return f"{label} {value}/{limit if limit else '∞'}"

        return " · ".join(
            [
                part("req/min", used["requests_last_minute"], used["rpm"]),
                part("tokens today", used["tokens_today"], used["tokens_per_day"]),
                part("streams", used["open_streams"], used["max_concurrent"]),
            ]
        )


@admin.register(McpToken)
class McpTokenAdmin(SecretIssuingAdmin):
    list_display = ["prefix", "name", "user", "can_write", "expires_at", "revoked_at", "last_used_at"]
    fields = ["user", "name", "can_write", "prefix", "expires_at", "revoked_at", "created_at", "last_used_at"]

    def get_queryset(self, request):
        return scope_of(request).tokens()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user" and not request.user.is_superuser:
            # A pool operator's tokens are their own, and read what they read.
            kwargs["queryset"] = type(request.user).objects.filter(pk=request.user.pk)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(SessionAffinity)
class SessionAffinityAdmin(PoolScoped, AuditedAdmin):
    list_display = ["session_key_hash", "pool", "account", "previous_account", "move_reason", "moves", "expires_at"]
    list_filter = [("pool", admin.RelatedOnlyFieldListFilter), "move_reason"]

    def has_add_permission(self, request):
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(AuditedAdmin):
    """API list prices that win over the shipped table (accounts/data/model_prices.json) for a model and day."""

    list_display = [
        "model",
        "effective_from",
        "input_usd_per_million",
        "cached_input_usd_per_million",
        "output_usd_per_million",
        "note",
        "updated_at",
    ]
    list_filter = ["model"]
    search_fields = ["model", "note"]

    # A turn is priced when its row is written: this process prices the next one at the new price, the other
    # processes within POOLER_PRICES_CACHE_SECONDS. Rows already written keep the price they were given.
    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        pricing.forget()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        pricing.forget()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        pricing.forget()


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(RequestLog)
class RequestLogAdmin(PoolScoped, ReadOnlyAdmin):
    list_display = [
        "created_at",
        "route",
        "transport",
        "pool",
        "api_key",
        "account",
        "model",
        "status_code",
        "outcome",
        "ttft_ms",
        "queued_ms",
        "duration_ms",
        "total_tokens",
        "cached_tokens",
        "cost",
        "migrated_from",
        "migration_reason",
        "compaction",
        "context_lost",
    ]
    list_filter = [
        "created_at",
        "pool",
        "route",
        "status_code",
        "outcome",
        "model",
        "transport",
        "account",
        "api_key",
        "is_prewarm",
        "compaction",
        "context_lost",
    ]
    search_fields = ["request_id", "model", "error_code"]

    def get_list_filter(self, request):
        if scope_of(request).everything:
            return self.list_filter
        # A pool operator's choices list only what their rows refer to (no other pool's names).
        related = {"pool", "account", "api_key"}
        return [(name, admin.RelatedOnlyFieldListFilter) if name in related else name for name in self.list_filter]

    date_hierarchy = "created_at"
    exclude = ["attempts"]
    readonly_fields = ["attempt_table"]

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, log):
        return "unpriced" if log.cost_usd is None else f"{log.cost_usd:.6f}"

    @admin.display(description="attempts")
    def attempt_table(self, log):
        return (
            format_html_join(
                mark_safe("<br>"),
                "{}. {} → {} (HTTP {}, {} ms)",
                (
                    (i + 1, a.get("account"), a.get("outcome"), a.get("status") or "-", a.get("ms"))
                    for i, a in enumerate(log.attempts or [])
                ),
            )
            or "no upstream attempt"
        )


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor", "action", "object_type", "object_repr"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_repr"]

    def get_queryset(self, request):
        return scope_of(request).audit_events()

    def has_delete_permission(self, request, obj=None):
        # The trail must outlive whoever it records, superusers included.
        return False


class InviteForm(forms.ModelForm):
    email = forms.EmailField(help_text="Their username if they are new.")
    pools = forms.ModelMultipleChoiceField(Pool.objects.all(), required=False, help_text="The pools they operate.")
    owner = forms.BooleanField(required=False, help_text="An owner sees and changes everything (a superuser).")

    class Meta:
        model = OperatorInvite
        fields = []

    def clean(self):
        if not self.cleaned_data.get("pools") and not self.cleaned_data.get("owner"):
            raise forms.ValidationError("Choose the pools they operate, or make them an owner.")
        return self.cleaned_data


@admin.register(OperatorInvite)
class OperatorInviteAdmin(admin.ModelAdmin):
    """Owners invite operators: the link is shown once, in the add response (only its hash is stored)."""

    form = InviteForm
    list_display = ["user", "created_by", "created_at", "expires_at", "used_at"]
    readonly_fields = ["user", "created_by", "created_at", "expires_at", "used_at"]
    actions = ["expire_invites"]

    def get_fields(self, request, obj=None):
        return ["email", "pools", "owner"] if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        row, request.invite_token = invites.invite(
            data["email"], list(data["pools"]), owner=data["owner"], actor=actor_of(request)
        )
        obj.pk = obj.id = row.pk
        obj.refresh_from_db()

    def response_add(self, request, obj, post_url_continue=None):
        link = invites.link(request.build_absolute_uri("/"), request.invite_token)
        return TemplateResponse(
            request,
            "admin/accounts/secret_issued.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Invite of {obj.user}",
                "opts": self.opts,
                "object": obj,
                "raw": link,
                "invite": True,
            },
        )

    @admin.action(description="Expire selected invites (their links stop working)")
    def expire_invites(self, request, queryset):
        for row in queryset.filter(used_at__isnull=True, expires_at__gt=timezone.now()):
            row.expires_at = timezone.now()
            row.save(update_fields=["expires_at"])
            audit.record(actor_of(request), "expire_invite", row)
        self.message_user(request, "expired")
