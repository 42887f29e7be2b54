"""ASGI entry: HTTP to Django (and /mcp to the MCP app), websockets to the Channels consumer."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pooler.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up)
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from mcp_endpoint.app import mcp_app  # noqa: E402
from pooler import daphne_channel, daphne_request  # noqa: E402
from pooler.runtime_handler import RuntimeHandler  # noqa: E402
from proxy.routing_ws import websocket_urlpatterns  # noqa: E402

# The admin's static files are served in front of Django (no collectstatic or file server needed); every
# middleware stays async, so streaming views are never pushed through a sync adapter.
django_with_static = ASGIStaticFilesHandler(django_asgi_app)

# Served by Daphne: its requests are made lean for long streams (see daphne_request.py).
daphne_request.install()
# And its connections answer a header line too long with a 431 instead of a reset (see daphne_channel.py).
daphne_channel.install()

# The same Django (URLs, views), lean for the runtime routes (see runtime_handler.py).
runtime_app = RuntimeHandler()


async def http_app(scope, receive, send):
    """/mcp and /mcp/ go to the MCP server, the runtime routes to the lean Django, the rest to the admin's."""
    path = scope["path"]
    if path in ("/mcp", "/mcp/"):
        return await mcp_app(scope, receive, send)
    if path.startswith(settings.RUNTIME_PATH_PREFIXES):
        return await runtime_app(scope, receive, send)
    return await django_with_static(scope, receive, send)


application = ProtocolTypeRouter({"http": http_app, "websocket": URLRouter(websocket_urlpatterns)})

# What is loaded by now lives as long as the process: kept out of the cyclic collector's sight, its full passes
# walk only what requests leave behind (a pass over the whole heap paused every stream for 150 ms and more).
# Requests leave no cycles (see runtime_handler.py), so the collector can run seldom: every 50,000 objects
# rather than every 700 (a pass every few hundred ms, each one a pause for every stream).
gc.freeze()
gc.set_threshold(50_000)
