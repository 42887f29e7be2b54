"""Django's ASGI handler for the runtime routes (turns, model lists, health, metrics), made lean.

The same URLs and views as the admin's handler, with three differences that matter under load:
- no middleware (settings.RUNTIME_MIDDLEWARE): the runtime views authenticate and guard themselves;
- the request's sync code, only Django's request_started/finished signals here, runs at once on the event
  loop, where Django would start and join a thread per request (a hop to a thread and back each time): the
  runtime views are all async and do their database work on the database threads (proxy/dbthread.py), so
  the signals' database housekeeping finds no connection on the loop's thread, and a sync view or database
  call added there by mistake would fail loudly (Django refuses database calls on the event loop);
- a request leaves no reference cycle behind, so its objects go when it ends (see listen_for_disconnect).
"""

from concurrent.futures import Executor, Future

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.test.utils import override_settings


class _RunAtOnce(Executor):
    """An executor for asgiref's thread-sensitive calls that runs each call where and when it is made."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller, as a thread would
            future.set_exception(exc)
        return future


_on_the_loop = _RunAtOnce()


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
        async with ThreadSensitiveContext(executor=_on_the_loop):
            await super().__call__(scope, receive, send)
