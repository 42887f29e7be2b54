"""Shared bits of the operator commands: one-line errors and exit status 1."""

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Pool


def get_pool(name: str) -> Pool:
    try:
        return Pool.objects.get(name=name)
    except Pool.DoesNotExist:
        raise CommandError(f"no pool named {name!r} (create it with create_pool)") from None


def split_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


__all__ = ["BaseCommand", "CommandError", "get_pool", "split_list"]
