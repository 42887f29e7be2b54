"""The turn path's own SQL reads build the same rows the ORM does (on PostgreSQL and SQLite alike)."""

from datetime import timedelta

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone

from accounts.crypto import Sealed
from accounts.models import Pool, PoolApiKey, SessionAffinity, UpstreamAccount
from accounts.secrets import prefix_of
from proxy import turn_reads
from proxy.turn_reads import accounts_and_pin, key_by_prefix
from tests.factories import make_account, make_key, make_pool

pytestmark = pytest.mark.django_db


def _fields(row) -> dict:
    return {f.attname: getattr(row, f.attname) for f in type(row)._meta.concrete_fields}


def test_a_key_is_read_with_its_pool_as_the_orm_reads_them():
    pool = make_pool(allowed_models=["gpt-5.2"], sticky_ttl_seconds=600)
    key, raw = make_key(
        pool,
        rpm=30,
        allowed_models=["gpt-5.2"],
        allowed_networks=["10.0.0.0/8"],
        expires_at=timezone.now() + timedelta(days=1),
    )
    read = key_by_prefix(prefix_of(raw))
    assert _fields(read) == _fields(PoolApiKey.objects.get(pk=key.pk))
    assert _fields(read.pool) == _fields(Pool.objects.get(pk=pool.pk))
    assert read.matches(raw) and key_by_prefix("cpk_00000000") is None


def test_accounts_are_read_as_the_orm_reads_them_and_decrypted_when_read():
    pool = make_pool()
    later = timezone.now() + timedelta(hours=1)
    account = make_account(pool, model_slugs=["gpt-5.2"], cooldown_until=later, primary_used_percent=12.5)
    accounts, pin = accounts_and_pin([account.id], pool.id, None, timezone.now())
    read, stored = accounts[account.id], UpstreamAccount.objects.get(pk=account.pk)
    assert pin is None
    # The secrets stay as stored until something reads them, then read as the ORM's do.
    assert isinstance(read.__dict__["access_token"], Sealed)
    assert read.access_token == stored.access_token and read.refresh_token == stored.refresh_token
    assert model_to_dict(read, exclude=["id_token"]) == model_to_dict(stored, exclude=["id_token"])


def test_the_session_pin_comes_with_its_account_even_when_not_proposed():
    pool = make_pool()
    proposed, owner = make_account(pool), make_account(pool)
    now = timezone.now()
    SessionAffinity.objects.create(
        pool=pool, session_key_hash="h", account=owner, expires_at=now + timedelta(minutes=5), foreign_items=3
    )
    SessionAffinity.objects.create(pool=pool, session_key_hash="old", account=owner, expires_at=now)
    accounts, pin = accounts_and_pin([proposed.id], pool.id, "h", now)
    assert set(accounts) == {proposed.id, owner.id}
    assert (pin.account_id, pin.foreign_items) == (owner.id, 3)
    assert pin.expires_at == SessionAffinity.objects.get(session_key_hash="h").expires_at
    # An expired pin is no pin; a session alone reads only its owner.
    assert accounts_and_pin([proposed.id], pool.id, "old", now) == ({proposed.id: accounts[proposed.id]}, None)
    assert set(accounts_and_pin([], pool.id, "h", now)[0]) == {owner.id}
    assert accounts_and_pin([], pool.id, None, now) == ({}, None)
    assert turn_reads.accounts([owner.id, proposed.id]) == {owner.id: owner, proposed.id: proposed}
