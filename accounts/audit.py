"""AuditLog writing: who did what to which object, with non-secret before/after values."""

from django.db import models as db_models

from .models import AuditLog

# Fields never copied into an audit row.
SECRET_FIELDS = {"access_token", "refresh_token", "id_token", "secret_hash", "previous_secret_hash"}


def snapshot(obj: db_models.Model) -> dict:
    """The non-secret field values of a row, JSON-ready."""
    values = {}
    for field in obj._meta.concrete_fields:
        if field.name in SECRET_FIELDS:
            continue
        value = field.value_from_object(obj)
        values[field.name] = value if isinstance(value, str | int | float | bool | list | type(None)) else str(value)
    return values


def record(actor: str, action: str, obj: db_models.Model, before: dict | None = None, after: dict | None = None):
    changes = {}
    if before is not None or after is not None:
        before, after = before or {}, after or {}
        changes = {
            key: {"before": before.get(key), "after": after.get(key)}
            for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)
        }
    return AuditLog.objects.create(
        actor=actor,
        action=action,
        object_type=obj._meta.model_name,
        object_id=str(obj.pk or ""),
        object_repr=str(obj)[:200],
        changes=changes,
    )
