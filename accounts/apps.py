from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class AccountsConfig(AppConfig):
    default = True  # this module also holds the admin's config
    name = "accounts"
    verbose_name = "Pools and accounts"

    def ready(self):
        from . import two_factor  # noqa: F401  (its receivers audit failed sign-ins and lockouts)


class PoolerAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the pooler's site: two-factor sign-in (accounts/two_factor.py)."""

    default = False  # named in INSTALLED_APPS in place of django.contrib.admin
    default_site = "accounts.two_factor.PoolerAdminSite"
