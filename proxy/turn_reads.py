"""The reads before every turn's first byte, in plain SQL.

The ORM compiles each query anew when it runs, which on a small machine takes about as long as the database
takes to answer, and these reads run on every turn before its first byte: the Pool API key with its pool, and
the accounts a turn may go to with its session's pin (one statement). Their SQL is written once here; their
rows become model instances the way the ORM makes them (its columns, its value converters, Model.from_db), so
the rest of the code cannot tell. Each runs on a database thread or, for a plain turn, on the event loop
(loop_db.py). Everything else uses the ORM.
"""

from collections.abc import Sequence
from datetime import datetime
from functools import cache

from django.db import connection
from django.db.models import Model

from accounts.crypto import EncryptedTextField
from accounts.models import Pool, PoolApiKey, SessionAffinity, UpstreamAccount

from . import loop_db


class _Columns:
    """Some of a model's columns in a SELECT list (under a table alias), and instances built from them."""

    def __init__(self, model: type[Model], alias: str, *, only: Sequence[str] = (), defer: Sequence[str] = ()):
        self.model, self.alias = model, alias
        self.fields = [f for f in model._meta.concrete_fields if (not only or f.name in only) and f.name not in defer]
        self.attnames = [f.attname for f in self.fields]

    def sql(self) -> str:
        quote = connection.ops.quote_name
        return ", ".join(f"{self.alias}.{quote(f.column)}" for f in self.fields)

    def build(self, row: Sequence, start: int = 0) -> Model | None:
        """The instance in row[start:start + len(self.fields)] (None when its columns are all NULL: an outer
        join that found nothing)."""
        values = list(row[start : start + len(self.fields)])
        if all(value is None for value in values):
            return None
        for index, converters in _converters(self, connection.vendor):
            field = self.fields[index]
            for convert in converters:
                values[index] = convert(values[index], field, connection)
        return self.model.from_db(connection.alias, self.attnames, values)


@cache
def _converters(columns: _Columns, vendor: str) -> list[tuple[int, list]]:
    """What the ORM applies to each column's value read from this database (e.g. SQLite's dates, decryption)."""
    found = []
    for index, field in enumerate(columns.fields):
        col = field.get_col(columns.alias)
        # Secrets stay sealed until read (see EncryptedTextField.seal).
        own = [field.seal] if isinstance(field, EncryptedTextField) else field.get_db_converters(connection)
        converters = connection.ops.get_db_converters(col) + own
        if converters:
            found.append((index, converters))
    return found


_KEY = _Columns(PoolApiKey, "k")
_POOL = _Columns(Pool, "p")
# Not needed to send a turn (and the largest secret to decrypt).
_ACCOUNT = _Columns(UpstreamAccount, "a", defer=("id_token",))
_PIN = _Columns(SessionAffinity, "pin", only=("account", "expires_at", "foreign_items", "compacted"))


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@cache
def _key_sql(vendor: str) -> str:
    return (
        f"SELECT {_KEY.sql()}, {_POOL.sql()} FROM {_table(PoolApiKey)} k"
        f" JOIN {_table(Pool)} p ON p.id = k.pool_id WHERE k.prefix = %s"
    )


def key_by_prefix(prefix: str) -> PoolApiKey | None:
    """The Pool API key with this prefix (unique), its pool loaded."""
    with connection.cursor() as cursor:
        cursor.execute(_key_sql(connection.vendor), [prefix])
        return _key(cursor.fetchone())


async def key_by_prefix_on_loop(prefix: str) -> PoolApiKey | None:
    """key_by_prefix on the event loop (loop_db.py)."""
    rows = await loop_db.fetch(_key_sql(connection.vendor), [prefix])
    return _key(rows[0] if rows else None)


def _key(row: Sequence | None) -> PoolApiKey | None:
    if row is None:
        return None
    key = _KEY.build(row)
    key.pool = _POOL.build(row, len(_KEY.fields))
    return key


def accounts(ids: Sequence[int]) -> dict[int, UpstreamAccount]:
    """The accounts with these ids as they are now."""
    return accounts_and_pin(ids, None, None, None)[0]


def accounts_and_pin(
    ids: Sequence[int], pool_id: int | None, session_hash: str | None, now: datetime | None
) -> tuple[dict[int, UpstreamAccount], SessionAffinity | None]:
    """The accounts with these ids as they are now, plus the one the session is pinned to, and the pin.

    The pin (account, expiry, foreign_items, compacted only) comes back only when its account still exists.
    """
    if not ids and not session_hash:
        return {}, None
    with connection.cursor() as cursor:
        cursor.execute(*_accounts_sql(ids, pool_id, session_hash, now))
        return _accounts_and_pin(cursor.fetchall())


async def accounts_on_loop(ids: Sequence[int]) -> dict[int, UpstreamAccount]:
    """accounts on the event loop (loop_db.py)."""
    return (await accounts_and_pin_on_loop(ids, None, None, None))[0]


async def accounts_and_pin_on_loop(
    ids: Sequence[int], pool_id: int | None, session_hash: str | None, now: datetime | None
) -> tuple[dict[int, UpstreamAccount], SessionAffinity | None]:
    """accounts_and_pin on the event loop (loop_db.py)."""
    if not ids and not session_hash:
        return {}, None
    return _accounts_and_pin(await loop_db.fetch(*_accounts_sql(ids, pool_id, session_hash, now)))


def _accounts_sql(ids: Sequence[int], pool_id, session_hash, now) -> tuple[str, list]:
    # One list of ids, so that each is an index lookup (an OR of two lists made PostgreSQL scan the table).
    wanted = "SELECT account_id FROM pin" + (f" UNION ALL VALUES {', '.join(['(%s)'] * len(ids))}" if ids else "")
    sql = (
        f"WITH pin AS (SELECT account_id, expires_at, foreign_items, compacted FROM {_table(SessionAffinity)}"
        " WHERE pool_id = %s AND session_key_hash = %s AND expires_at > %s)"
        f" SELECT {_ACCOUNT.sql()}, {_PIN.sql()} FROM {_table(UpstreamAccount)} a"
        f" LEFT JOIN pin ON pin.account_id = a.id WHERE a.id IN ({wanted})"
    )
    return sql, [pool_id, session_hash, connection.ops.adapt_datetimefield_value(now), *ids]


def _accounts_and_pin(rows) -> tuple[dict[int, UpstreamAccount], SessionAffinity | None]:
    accounts, pin = {}, None
    for row in rows:
        account = _ACCOUNT.build(row)
        accounts[account.id] = account
        pin = _PIN.build(row, len(_ACCOUNT.fields)) or pin
    return accounts, pin
