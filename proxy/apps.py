from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"

    def ready(self):
        from . import metrics  # noqa: F401  (instruments database connections from the start)
