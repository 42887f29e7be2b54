"""Every turn's RequestLog row, in one INSERT written once.

`RequestLog.objects.create` builds a model instance and compiles its INSERT anew for every turn, which on a
small machine costs more than the database takes to store the row. The statement is compiled here once per
database; each value goes through its field's own conversion (`get_db_prep_save`), as the ORM's would, so the
row is the same one (nothing listens to RequestLog's save signals). A plain turn writes it from the event loop
(loop_db.py), any other from a database thread.
"""

from functools import cache

from django.db import connection

from accounts.models import RequestLog

from . import loop_db

_FIELDS = [field for field in RequestLog._meta.concrete_fields if not field.primary_key]
_NAMES = {field.name for field in _FIELDS}


@cache
def _sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in _FIELDS)
    marks = ", ".join(["%s"] * len(_FIELDS))
    return f"INSERT INTO {quote(RequestLog._meta.db_table)} ({columns}) VALUES ({marks})"


def _value(field, values: dict):
    if field.name not in values:
        return field.get_default()
    value = values[field.name]
    if field.is_relation and value is not None:
        return value.pk
    return value


def insert(**values) -> None:
    """Write one row: `values` by field name (a foreign key as its model instance), defaults for the rest."""
    with connection.cursor() as cursor:
        cursor.execute(*_statement(values))


async def insert_on_loop(**values) -> None:
    """insert on the event loop (loop_db.py)."""
    await loop_db.fetch(*_statement(values), rows=False)


def _statement(values: dict) -> tuple[str, list]:
    if unknown := values.keys() - _NAMES:
        raise TypeError(f"RequestLog has no field {', '.join(sorted(unknown))}")
    return _sql(connection.vendor), [field.get_db_prep_save(_value(field, values), connection) for field in _FIELDS]
