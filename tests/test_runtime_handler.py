"""The runtime routes' Django handler: a request's sync steps run on the event loop, not a hop to a thread."""

import threading

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_finished, request_started

from pooler.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)  # the admin's login page reads its session


async def get(path: str) -> int:
    return (await get_response(path))["status"]


async def get_response(path: str) -> dict:
    """The http.response.start message of a GET through the pooler's ASGI application."""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 50000),
        "headers": [],
    }
    app = ApplicationCommunicator(application, scope)
    await app.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await app.receive_output(10)
    while (await app.receive_output(10)).get("more_body"):
        pass
    await app.send_input({"type": "http.disconnect"})
    await app.wait(5)
    return start


async def test_a_runtime_request_sends_its_signals_on_the_event_loop():
    threads = []

    def record(**kwargs):
        threads.append(threading.get_ident())

    request_started.connect(record)
    request_finished.connect(record)
    try:
        assert await get("/healthz") == 200
        runtime = list(threads)
        threads.clear()
        assert await get("/admin/login/") == 200  # the operators' handler keeps Django's thread per request
    finally:
        request_started.disconnect(record)
        request_finished.disconnect(record)
    loop_thread = threading.get_ident()
    assert runtime == [loop_thread, loop_thread]
    assert threads and loop_thread not in threads
