"""The stack floor for `bench.peers`: the pooler's serving stack with none of the pooler's work.

The same Daphne, the same lean Django handler as the pooler's runtime routes (no middleware), the same
upstream client and relay; its one view forwards the request body to the fake upstream and streams the answer
back. No key, no database, no routing, no accounting, no look at the events. What it adds to a direct
connection is what the design card's stack (Daphne, an async Django view, httpx) costs before the pooler
decides anything; what the pooler adds beyond it is the pooler's own work.

Served as `DJANGO_SETTINGS_MODULE=bench.floor_settings daphne bench.floor:application`, BENCH_UPSTREAM set.
"""

import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.floor_settings")
django.setup()

from django.http import HttpResponse, StreamingHttpResponse  # noqa: E402  (needs Django set up)
from django.urls import path  # noqa: E402

from pooler import daphne_request  # noqa: E402
from pooler.runtime_handler import RuntimeHandler  # noqa: E402
from proxy.relay import coalesced  # noqa: E402
from proxy.upstream import close, send_turn  # noqa: E402


async def forward(request) -> StreamingHttpResponse:
    headers = {"content-type": "application/json", "content-length": str(len(request.body))}
    response = await send_turn("POST", os.environ["BENCH_UPSTREAM"] + "/v1/responses", headers, request.body)

    async def relay():
        try:
            async for chunk in coalesced(response.aiter_raw()):
                yield chunk
        finally:
            await close(response)

    return StreamingHttpResponse(relay(), status=response.status_code, content_type="text/event-stream")


async def healthz(request) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [path("v1/responses", forward), path("healthz", healthz)]

daphne_request.install()  # as pooler/asgi.py serves the runtime routes
application = RuntimeHandler()
gc.freeze()
gc.set_threshold(50_000)
