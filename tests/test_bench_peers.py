"""The peers bench's pieces that need no LiteLLM: its fake upstream's answer is a whole Responses stream for the
pooler's accounting and the OpenAI SDK alike, and its section of RESULTS.md survives `make bench`'s rewrite."""

import httpx
import openai

from bench import fake_upstream, peers, run
from proxy.sse import SseWatcher


def fake_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=fake_upstream.app), base_url="http://fake")


async def test_the_pooler_reads_a_completed_turn_with_usage(monkeypatch):
    monkeypatch.setitem(fake_upstream._state, "deltas", 10)
    watcher = SseWatcher()
    async with fake_client() as client:
        response = await client.post("/backend-api/codex/responses", json=run.turn_body(0))
    watcher.feed(response.content)
    assert response.headers["content-type"] == "text/event-stream"
    assert (watcher.terminal, watcher.events) == ("response.completed", 10 + peers.OTHER_EVENTS)
    assert watcher.usage["input_tokens"] > 0 and watcher.usage["output_tokens"] > 0


async def test_the_openai_sdk_reads_the_stream_as_litellm_does(monkeypatch):
    monkeypatch.setitem(fake_upstream._state, "deltas", 60)  # restored after the POST below changes it
    async with fake_client() as client:
        sdk = openai.AsyncOpenAI(base_url="http://fake/v1", api_key="unused", http_client=client)
        await client.post("/_bench/turn", json={"deltas": 5})
        stream = await sdk.responses.create(model="gpt-5.2", input="hi", stream=True)
        events = [event async for event in stream]
    assert [e.type for e in events].count("response.output_text.delta") == 5
    assert events[-1].type == "response.completed" and events[-1].response.usage.input_tokens > 0


def test_the_peers_section_is_replaced_by_peers_and_kept_by_make_bench(tmp_path, monkeypatch):
    results = tmp_path / "RESULTS.md"
    monkeypatch.setattr(run, "RESULTS", results)
    monkeypatch.setattr(peers, "RESULTS", results)
    results.write_text("# Benchmark results\n\nrows\n")
    peers.write_section([run.PEERS_START, "first", run.PEERS_END])
    peers.write_section([run.PEERS_START, "second", run.PEERS_END])
    assert results.read_text() == f"# Benchmark results\n\nrows\n\n{run.PEERS_START}\nsecond\n{run.PEERS_END}\n"
    run.write_report(results, ["# Benchmark results", "", "new rows", "", *run.peers_section()])
    assert results.read_text().endswith(f"new rows\n\n{run.PEERS_START}\nsecond\n{run.PEERS_END}\n")


def test_the_section_says_how_a_run_stands_against_the_targets():
    results = {
        ("direct", 1): (600, 0.8),
        ("direct", 10): (650, 9.0),
        ("direct", 50): (170, 190.0),
        ("litellm", 1): (30, 12.0),
        ("litellm", 10): (35, 160.0),
        ("pooler", 1): (105, 6.8),
        ("pooler", 10): (160, 45.0),
        ("pooler", 50): (160, 250.0),
        ("floor", 1): (300, 3.0),
        ("floor", 50): (180, 180.0),
    }
    assert peers.goals(results) == [
        "- pooler ÷ LiteLLM at 1 and 10 clients: 3.50× and 4.57× (target 3×: met)",
        "- pooler at 50 clients: 94% of the direct connection's turns a second (target 90%: met)",
        "- pooler, first byte p50 added at 1 client: +6.0 ms (target +2 ms: not met)",
        "- stack floor (the same Daphne, Django handler, upstream client and relay, none of the pooler's work): "
        "first byte p50 added at 1 client +2.2 ms, at 50 clients 106% of direct",
    ]
