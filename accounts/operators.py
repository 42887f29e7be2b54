"""Who sees what: owners (superusers) see every pool; a pool operator sees the pools granted to them.

A pool operator is a staff user in the "Pool operators" group, which carries Django's own model permissions
(what kinds of rows they may view, add or change); their grants (Pool.operators) decide which rows. The admin
and the MCP tools read rows through a Scope.
"""

from contextvars import ContextVar
from dataclasses import dataclass

from django.contrib.auth.models import Group, Permission
from django.db.models import Q, QuerySet

from . import audit
from .models import AuditLog, McpToken, Pool, PoolApiKey, PoolMembership, UpstreamAccount

OPERATOR_GROUP = "Pool operators"
# What a pool operator may do to each kind of row (within their pools); prices and users stay the owners'.
_PERMISSIONS = {
    "pool": ("view", "change"),
    "poolmembership": ("view", "add", "change", "delete"),
    "upstreamaccount": ("view", "add", "change"),
    "poolapikey": ("view", "add", "change"),
    "sessionaffinity": ("view",),
    "requestlog": ("view",),
    "auditlog": ("view",),
    "mcptoken": ("view", "add", "change"),
}


def operator_group() -> Group:
    """The group of pool operators, with its model permissions (made on first use)."""
    group, _ = Group.objects.get_or_create(name=OPERATOR_GROUP)
    codenames = [f"{action}_{model}" for model, actions in _PERMISSIONS.items() for action in actions]
    group.permissions.set(Permission.objects.filter(content_type__app_label="accounts", codename__in=codenames))
    return group


@dataclass(frozen=True)
class Scope:
    """The pools a user may see: `pool_ids` None for an owner (every pool)."""

    pool_ids: frozenset[int] | None
    username: str = ""

    @classmethod
    def of(cls, user) -> "Scope":
        if user.is_superuser:
            return cls(None, user.get_username())
        return cls(frozenset(user.operated_pools.values_list("id", flat=True)), user.get_username())

    @property
    def everything(self) -> bool:
        return self.pool_ids is None

    def filter(self, queryset: QuerySet, pool_path: str) -> QuerySet:
        """`queryset` cut to the rows whose `pool_path` (e.g. "pool", "memberships__pool") is one of the pools."""
        if self.everything:
            return queryset
        rows = queryset.filter(**{f"{pool_path}__in": self.pool_ids})
        return rows.distinct() if "__" in pool_path else rows

    def pools(self) -> QuerySet:
        return self.filter(Pool.objects.all(), "pk")

    def accounts(self) -> QuerySet:
        return self.filter(UpstreamAccount.objects.all(), "memberships__pool")

    def may_change_account(self, account: UpstreamAccount) -> bool:
        """Whether the user may pause, resume or edit `account`: a pool operator may only look at an account that
        also serves a pool they do not run, since changing it would change that pool too."""
        return self.everything or not account.memberships.exclude(pool_id__in=self.pool_ids).exists()

    def keys(self) -> QuerySet:
        return self.filter(PoolApiKey.objects.all(), "pool")

    def tokens(self) -> QuerySet:
        # An operator manages their own MCP tokens (which read what they read), nobody else's.
        tokens = McpToken.objects.all()
        return tokens if self.everything else tokens.filter(user__username=self.username)

    def audit_events(self) -> QuerySet:
        """Audit rows about the scope's pools, their accounts, memberships and keys, or made by the user."""
        events = AuditLog.objects.all()
        if self.everything:
            return events

        def ids(queryset):
            return [str(pk) for pk in queryset.values_list("pk", flat=True)]

        return events.filter(
            Q(object_type="pool", object_id__in=ids(self.pools()))
            | Q(object_type="upstreamaccount", object_id__in=ids(self.accounts()))
            | Q(object_type="poolmembership", object_id__in=ids(self.filter(PoolMembership.objects.all(), "pool")))
            | Q(object_type="poolapikey", object_id__in=ids(self.keys()))
            | Q(actor__in=[f"admin:{self.username}", f"mcp:{self.username}"])
        )


# The scope of the MCP request being served (set by the /mcp gate from its token's user; mcp_endpoint/app.py).
# Outside a request it is no pool at all.
NOTHING = Scope(frozenset())
current_scope: ContextVar[Scope] = ContextVar("current_scope", default=NOTHING)


def grant(user, pools, actor: str) -> None:
    """Make `user` a pool operator of `pools` (staff, in the operators' group), audited."""
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    user.groups.add(operator_group())
    for pool in pools:
        if not pool.operators.filter(pk=user.pk).exists():
            pool.operators.add(user)
            audit.record(actor, "grant_pool", pool, None, {"operator": user.get_username()})
