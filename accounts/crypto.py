"""Encryption of account secrets at rest (Fernet; the first configured key encrypts, all decrypt)."""

from functools import cache, lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models
from django.db.models.query_utils import DeferredAttribute


@cache
def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in settings.POOLER_ENCRYPTION_KEYS])


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _decrypted(token)
    except InvalidToken as exc:
        raise ValueError("secret cannot be decrypted with POOLER_ENCRYPTION_KEYS") from exc


@lru_cache(maxsize=4096)
def _decrypted(token: str) -> str:
    """Every turn reads its account's access token: Fernet's check and decryption cost a turn about 0.2 ms, and
    a ciphertext decrypts the same way for the life of the process (its keys are read once)."""
    return _fernet().decrypt(token.encode()).decode()


class Sealed:
    """A secret still as stored, decrypted when first read (see EncryptedTextField.seal)."""

    __slots__ = ("ciphertext",)

    def __init__(self, ciphertext: str):
        self.ciphertext = ciphertext


class _DecryptedOnRead(DeferredAttribute):
    # A data descriptor (it has __set__), so it sees every read, not only those of deferred values.
    def __set__(self, instance, value):
        instance.__dict__[self.field.attname] = value

    def __get__(self, instance, cls=None):
        value = super().__get__(instance, cls)
        if isinstance(value, Sealed):
            value = instance.__dict__[self.field.attname] = decrypt(value.ciphertext)
        return value


class EncryptedTextField(models.TextField):
    """A text column that holds only ciphertext; Python code sees the plain value."""

    descriptor_class = _DecryptedOnRead

    def from_db_value(self, value, expression, connection):
        return decrypt(value) if value else value

    def seal(self, value, expression, connection):
        """A converter like from_db_value that leaves the value sealed until it is read: a turn loads several
        accounts and sends with one, so it decrypts one access token instead of all their secrets."""
        return Sealed(value) if value else value

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return encrypt(value) if value else value
