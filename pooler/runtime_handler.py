"""Django's ASGI handler for the runtime routes (turns, model lists, health, metrics), made lean.

The same URLs and views as the admin's handler, with three differences that matter under load:
- no middleware (settings.RUNTIME_MIDDLEWARE): the runtime views authenticate and guard themselves;
- the request's sync code (only Django's request_started/finished signals here) runs on one shared thread,
  where Django would start and join a thread per request, on the event loop;
- a body small enough for memory is kept as one bytes object, which the request, the turn and the
  upstream request then share, where Django would keep a spooled copy besides the request's own until
  the response ends (a 40 KB Codex turn held twice for as long as it streams).
"""

import tempfile
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.test.utils import override_settings

_shared_sync_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runtime-sync")


class RuntimeHandler(ASGIHandler):
    def __init__(self):
        # A handler reads MIDDLEWARE once, when it is made.
        with override_settings(MIDDLEWARE=settings.RUNTIME_MIDDLEWARE):
            super().__init__()

    async def __call__(self, scope, receive, send):
        async with ThreadSensitiveContext(executor=_shared_sync_thread):
            await super().__call__(scope, receive, send)

    async def read_body(self, receive):
        """The request body as a file: in memory up to FILE_UPLOAD_MAX_MEMORY_SIZE, as Django would spool it
        beyond (so an oversized body is still read to its end and refused by the view with a 413)."""
        chunks, size, spool = [], 0, None
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if spool is not None:
                    spool.close()
                raise RequestAborted()
            chunk = message.get("body", b"")
            if spool is not None:
                spool.write(chunk)
            elif chunk:
                chunks.append(chunk)
                size += len(chunk)
                if size > settings.FILE_UPLOAD_MAX_MEMORY_SIZE:
                    spool = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
                    spool.writelines(chunks)
                    chunks = []
            if not message.get("more_body", False):
                break
        if spool is not None:
            spool.seek(0)
            return spool
        # BytesIO shares the bytes it is made from, and reading all of it back returns them uncopied.
        return BytesIO(b"".join(chunks))
