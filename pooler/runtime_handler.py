"""Django's ASGI handler for the runtime routes (turns, model lists, health, metrics), made lean.

The same URLs and views as the admin's handler, with three differences that matter under load:
- no middleware (settings.RUNTIME_MIDDLEWARE): the runtime views authenticate and guard themselves;
- the request's sync code (only Django's request_started/finished signals here) runs on one shared thread,
  where Django would start and join a thread per request, on the event loop;
- a request leaves no reference cycle behind, so its objects go when it ends (see listen_for_disconnect).
"""

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.test.utils import override_settings

_shared_sync_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runtime-sync")


class RuntimeHandler(ASGIHandler):
    def __init__(self):
        # A handler reads MIDDLEWARE once, when it is made.
        with override_settings(MIDDLEWARE=settings.RUNTIME_MIDDLEWARE):
            super().__init__()

    async def listen_for_disconnect(self, receive):
        """Return when the client leaves (handle() cancels the view then). Django's raises RequestAborted, which
        its finished task keeps, with a traceback through handle(), whose frame holds the task: a cycle that
        kept every request's objects until a full pass of the cyclic collector, which paused every stream."""
        message = await receive()
        if message["type"] != "http.disconnect":
            raise AssertionError(f"Invalid ASGI message after request body: {message['type']}")

    async def __call__(self, scope, receive, send):
        async with ThreadSensitiveContext(executor=_shared_sync_thread):
            await super().__call__(scope, receive, send)
