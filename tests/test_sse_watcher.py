"""The SSE watcher sees the same turn however the stream is cut into chunks: events counted, usage, terminal
state and errors taken, whether the watched events come whole, split, with CRLF line ends or among others."""

import random

from proxy.sse import SseWatcher, encode_event, first_watched, watched_in_frame


def turn(deltas: int = 20, crlf: bool = False) -> bytes:
    # Every response object says "error": null: not an error, and not a reason to parse the event.
    created = {"type": "response.created", "response": {"id": "r", "error": None}}
    events = [encode_event(created, "response.created")]
    events += [encode_event({"type": "response.output_text.delta", "delta": f"d{i}"}) for i in range(deltas)]
    events.append(encode_event({"type": "codex.rate_limits", "rate_limits": {"primary": {"used_percent": 5}}}))
    events += [encode_event({"type": "response.output_text.delta", "delta": "x"}) for _ in range(3)]
    usage = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    events.append(encode_event({"type": "response.completed", "response": {"id": "r", "usage": usage}}))
    stream = b"".join(events)
    return stream.replace(b"\n", b"\r\n") if crlf else stream


def seen(chunks) -> tuple:
    watcher = SseWatcher()
    for chunk in chunks:
        watcher.feed(chunk)
    return watcher.events, watcher.terminal, watcher.usage, watcher.rate_limits is not None, watcher.error_code


def test_any_split_of_a_turn_is_seen_the_same():
    rng = random.Random(7)
    for crlf in (False, True):
        stream = turn(crlf=crlf)
        whole = seen([stream])
        assert whole == (
            26,
            "response.completed",
            {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10},
            True,
            "",
        )
        assert seen(stream[i : i + 1] for i in range(len(stream))) == whole  # byte by byte
        for _ in range(200):
            cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 12)))
            assert seen(stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)) == whole


def test_an_error_event_after_unwatched_ones_is_seen():
    stream = encode_event({"type": "response.output_text.delta", "delta": "a"}) * 5
    stream += encode_event({"type": "error", "error": {"code": "server_error", "message": "m"}})
    assert seen([stream]) == (6, None, None, False, "server_error")


def test_what_the_watcher_parses():
    parsed = [b'{"type":"error","code":"x"}', b'{"error": {"code": "x"}}', b'{"error" : "boom"}', b"response.failed"]
    passed = [b'{"response":{"error":null}}', b'{"error": null}', b"response.output_text.delta", b""]
    for data in parsed:
        assert first_watched(data) >= 0 and watched_in_frame(data.decode()), data
    for data in passed:
        assert first_watched(data) == -1 and not watched_in_frame(data.decode()), data
    assert first_watched(b'{"error":null} {"error":{"code":1}}') == 16
