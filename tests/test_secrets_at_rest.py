"""No raw key, token or account secret is ever stored: scan every text column of every table."""

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connection

from tests.factories import make_account, make_key, make_mcp_token, make_pool

pytestmark = pytest.mark.django_db


def all_stored_text() -> str:
    chunks = []
    with connection.cursor() as cursor:
        for model in apps.get_models():
            table = model._meta.db_table
            columns = [f.column for f in model._meta.concrete_fields]
            cursor.execute(f"SELECT {', '.join(connection.ops.quote_name(c) for c in columns)} FROM {table}")
            chunks.extend(str(value) for row in cursor.fetchall() for value in row)
    return "\n".join(chunks)


def test_no_secret_appears_in_the_database():
    pool = make_pool()
    account = make_account(pool)
    _, raw_key = make_key(pool)
    _, raw_token = make_mcp_token(get_user_model().objects.create_user("ops"))
    account.refresh_from_db()
    secrets = [raw_key, raw_token, account.access_token, account.refresh_token, account.id_token]
    stored = all_stored_text()
    for secret in secrets:
        assert secret and secret not in stored
    # The tokens are still usable: they decrypt to the originals.
    assert account.access_token.count(".") == 2
