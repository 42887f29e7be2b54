"""Invites: a one-time, expiring link where a new operator sets a password. Only the hash of its token is kept.

The token rides in the link's fragment (`/admin/invite/#<token>`): browsers never send a fragment, so the token is
in no request line and no access log; the page posts it.
"""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from . import audit, operators
from .models import OperatorInvite, Pool


class InviteError(Exception):
    """A link that cannot be used; `reason` is "unknown", "used" or "expired"."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def invite(email: str, pools: list[Pool], *, owner: bool, actor: str) -> tuple[OperatorInvite, str]:
    """Make (or find) the user of `email`, give them `pools` (or every pool, as an owner) and a new link's token.

    The user has no usable password until the link is used; an earlier unused link of theirs stops working.
    """
    users = get_user_model()
    with transaction.atomic():
        user = users.objects.filter(email__iexact=email).first() or users.objects.filter(username=email).first()
        if user is None:
            user = users(username=email, email=email, is_staff=True)
            user.set_unusable_password()
            user.save()
        if owner and not user.is_superuser:
            user.is_superuser = user.is_staff = True
            user.save(update_fields=["is_superuser", "is_staff"])
        if not owner:
            operators.grant(user, pools, actor)
        OperatorInvite.objects.filter(user=user, used_at__isnull=True).update(expires_at=timezone.now())
        raw = secrets.token_urlsafe(32)
        row = OperatorInvite.objects.create(
            user=user,
            token_hash=_hash(raw),
            created_by=actor,
            expires_at=timezone.now() + timedelta(hours=settings.POOLER_INVITE_HOURS),
        )
        audit.record(
            actor,
            "invite_operator",
            row,
            None,
            {"email": email, "owner": owner, "pools": sorted(p.name for p in pools), "expires_at": str(row.expires_at)},
        )
    return row, raw


def link(base_url: str, raw: str) -> str:
    """The link the invitee opens, on the pooler at `base_url`."""
    return f"{base_url.rstrip('/')}{reverse('accept-invite')}#{raw}"


def find(raw: str) -> OperatorInvite:
    """The live invite of a link's token, or InviteError saying why not."""
    row = OperatorInvite.objects.select_related("user").filter(token_hash=_hash(raw)).first()
    if row is None:
        raise InviteError("unknown")
    if row.used_at is not None:
        raise InviteError("used")
    if row.expires_at <= timezone.now():
        raise InviteError("expired")
    return row


def accept(raw: str, password: str) -> OperatorInvite:
    """Use the link once: the password is set, the link is dead (two tabs racing: the second hears "used")."""
    with transaction.atomic():
        row = find(raw)
        if OperatorInvite.objects.filter(pk=row.pk, used_at__isnull=True).update(used_at=timezone.now()) != 1:
            raise InviteError("used")
        row.user.set_password(password)
        row.user.is_active = True
        row.user.save(update_fields=["password", "is_active"])
        audit.record(f"invite:{row.user.get_username()}", "accept_invite", row)
    return row
