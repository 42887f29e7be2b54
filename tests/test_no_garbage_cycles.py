"""A finished turn leaves no reference cycle behind: its objects go by reference counting when it ends.

What a cycle holds waits for a full pass of Python's cyclic collector, which pauses every stream of the
process while it walks the heap (150 ms and more under 50 streams, measured by `make bench`). The turns
run in this process, through the real ASGI application, to the simulator, on the test database.
"""

import gc
import json
from collections import Counter

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.testing import WebsocketCommunicator

from pooler.asgi import application
from tests.codex_turns import turn_body
from tests.factories import make_account, make_key, make_pool

pytestmark = pytest.mark.django_db(transaction=True)

# What a turn allocates on its way: the request, the response, the turn, the upstream exchange.
TURN_OBJECTS = {"ASGIRequest", "StreamingHttpResponse", "Turn", "HttpTurn", "Response", "Request", "Plan"}


async def http_turn(key: str, text: str) -> bytes:
    body = json.dumps(turn_body(text)).encode()
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/backend-api/codex/responses",
        "raw_path": b"/backend-api/codex/responses",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    app = ApplicationCommunicator(application, scope)
    await app.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await app.receive_output(20)
    assert start["status"] == 200, start
    received = b""
    while True:
        message = await app.receive_output(20)
        received += message.get("body", b"")
        if not message.get("more_body"):
            break
    await app.send_input({"type": "http.disconnect"})  # as Daphne says once the response is written
    await app.wait(5)
    return received


async def websocket_turn(key: str, text: str) -> str:
    communicator = WebsocketCommunicator(
        application, "/backend-api/codex/responses", headers=[(b"authorization", f"Bearer {key}".encode())]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_to(text_data=json.dumps({"type": "response.create", **turn_body(text)}))
    while (event := json.loads(await communicator.receive_from(timeout=20)))["type"] != "response.completed":
        pass
    await communicator.disconnect()
    return event["type"]


async def cyclic_leftovers(turn) -> Counter:
    """The objects that only the cyclic collector would free, by type name, after `turn` ran."""
    await turn()  # a first turn creates what lives on (the upstream client, caches)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await turn()
        gc.collect()
        return Counter(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@sync_to_async
def seed_key(simulator) -> str:
    pool = make_pool()
    make_account(pool, simulator)
    return make_key(pool)[1]


async def test_an_http_turn_leaves_no_cycle(simulator):
    key = await seed_key(simulator)
    leftovers = await cyclic_leftovers(lambda: http_turn(key, "cycles"))
    assert not {name for name in leftovers if name in TURN_OBJECTS}, leftovers.most_common(20)


async def test_a_websocket_turn_leaves_no_cycle(simulator):
    key = await seed_key(simulator)
    leftovers = await cyclic_leftovers(lambda: websocket_turn(key, "cycles"))
    assert not {name for name in leftovers if name in TURN_OBJECTS}, leftovers.most_common(20)
