"""ASGI entry: HTTP to Django (and /mcp to the MCP app), websockets to the Channels consumer."""

import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pooler.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up)
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from mcp_endpoint.app import mcp_app  # noqa: E402
from proxy.routing_ws import websocket_urlpatterns  # noqa: E402

# The admin's static files are served in front of Django (no collectstatic or file server needed); every
# middleware stays async, so streaming views are never pushed through a sync adapter.
django_with_static = ASGIStaticFilesHandler(django_asgi_app)

# The same Django (URLs, views) built with the runtime routes' own middleware list: a handler reads
# MIDDLEWARE once, when it is made.
with override_settings(MIDDLEWARE=settings.RUNTIME_MIDDLEWARE):
    runtime_django_app = get_asgi_application()

# Django gives each request a thread of its own for the request's sync code, started and joined per request
# (on the event loop, which then waits for a core); the runtime routes' only sync code is Django's
# request_started/finished signals, so they share one thread instead.
_runtime_sync_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runtime-sync")


async def runtime_app(scope, receive, send):
    async with ThreadSensitiveContext(executor=_runtime_sync_thread):
        await runtime_django_app(scope, receive, send)


async def http_app(scope, receive, send):
    """/mcp and /mcp/ go to the MCP server, the runtime routes to the lean Django, the rest to the admin's."""
    path = scope["path"]
    if path in ("/mcp", "/mcp/"):
        return await mcp_app(scope, receive, send)
    if path.startswith(settings.RUNTIME_PATH_PREFIXES):
        return await runtime_app(scope, receive, send)
    return await django_with_static(scope, receive, send)


application = ProtocolTypeRouter({"http": http_app, "websocket": URLRouter(websocket_urlpatterns)})
