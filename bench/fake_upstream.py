"""A fast fake upstream for the peers bench (`bench/peers.py`): every POST to a path ending in `/responses`
gets the same streamed OpenAI Responses answer, whoever asks and with whatever credentials.

That serves LiteLLM's OpenAI provider (`<api_base>/responses`) and the pooler's accounts
(`<base_url>/responses`) alike. The events are the simulator's (`simulator/turns.py`), built once per number of
text deltas and kept as bytes, so the fake spends its time writing, not building: the "direct" column is what
the machine's HTTP stack costs, and what a gateway adds shows beside it. Every other request gets `{}` (the
bench's seeding registers accounts with a POST to `/_sim/accounts`, and a GET is its health check);
`POST /_bench/turn {"deltas": N, "event_delay": s}` sets how many text deltas the next turns stream, and the
seconds between two events (0: all at once, and the kernel hands them on in a few large reads).

`python -m bench.fake_upstream --port 4200 --deltas 60`
"""

import argparse
import asyncio
import json
from functools import cache

import uvicorn

from proxy.sse import encode_event
from simulator import turns

_state = {"deltas": 60, "event_delay": 0.0}
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_JSON_HEADERS = [(b"content-type", b"application/json")]


@cache
def turn_stream(deltas: int) -> tuple[bytes, ...]:
    """The SSE events of one turn with `deltas` text deltas of four characters each, one bytes per event."""
    body = {"model": "gpt-5.2", "input": "abc " * deltas}
    events = turns.turn_events(body, "acct-bench", 40 * 1024, deltas, turns.new_response_id())
    return tuple(encode_event(event, event["type"]) for event in events)


async def _read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = await _read_body(receive)
    path = scope["path"]
    if scope["method"] == "POST" and path.endswith("/responses"):
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        # One write per event, as a model's answer arrives: a gateway relays each as it comes.
        delay = _state["event_delay"]
        for event in turn_stream(_state["deltas"]):
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if delay:
                await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["method"] == "POST" and path == "/_bench/turn":
        _state.update(json.loads(body))
    await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": json.dumps(_state).encode()})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--deltas", type=int, default=60, help="text deltas per turn (until /_bench/turn)")
    args = parser.parse_args()
    _state["deltas"] = args.deltas
    # uvicorn takes httptools and uvloop when they are installed (LiteLLM's environment has them).
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="off", backlog=4096
    )


if __name__ == "__main__":
    main()
