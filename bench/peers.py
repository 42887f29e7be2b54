"""`make bench-peers` (`python -m bench.peers`): the pooler beside LiteLLM's proxy, the gateway users would pick
instead, on the same streamed Responses turns to the same fake upstream (`bench/fake_upstream.py`).

Targets: `direct` (the fake upstream itself), `litellm` (its proxy, one process, no database, no auth),
`floor` (the pooler's serving stack doing none of the pooler's work: bench/floor.py), `pooler`
(`/v1/responses` with a Pool API key; one Daphne process, five accounts) and `codex` (the pooler's Codex route).
Each round runs every concurrency level and, within it, every target in turn for the same seconds, so a slow
minute of the shared host falls on all of them; the table shows medians over the rounds. Then the CPU a
gateway process spends on a turn is split into a per-turn and a per-event part, from fixed runs at two event
counts.

A quick comparison while optimizing: `python -m bench.peers --targets direct,pooler --concurrency 1,10
--seconds 3 --no-cpu` (RESULTS.md is written only by a run of every target at the default levels).
"""

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.run import (
    EVENT_BUDGET,
    PEERS_END,
    PEERS_START,
    RESULTS,
    cpu_model,
    percentile,
    production_env,
    reference_loop_ms,
    turn_body,
)
from bench.stack import REPO, free_port, seed, start, start_pooler, wait_for

LITELLM = "litellm[proxy]==1.108.7"
VENV = REPO / ".cache" / "bench" / "litellm"
LOGS = REPO / ".cache" / "bench"
TARGETS = ("direct", "litellm", "floor", "pooler", "codex")
LABELS = {
    "direct": "direct",
    "litellm": "LiteLLM",
    "floor": "stack floor",
    "pooler": "pooler",
    "codex": "pooler, Codex route",
}
DELTAS = 60  # text deltas per turn in the throughput rows, as `make bench`'s turns
OTHER_EVENTS = 8  # the events of a turn around its deltas (created, in_progress, added, done, completed...)
CPU_DELTAS = (10, 200)


def litellm_python() -> Path:
    """LiteLLM's proxy in a virtual environment of its own, installed once: never into the project's."""
    python, marker = VENV / "bin" / "python", VENV / f".installed-{LITELLM}"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", LITELLM], check=True)
        marker.touch()
    return python


def start_litellm(port: int, upstream: str) -> subprocess.Popen:
    config = VENV / "bench-config.yaml"
    # JSON is YAML: one model, served by the OpenAI provider at the fake upstream.
    config.write_text(
        '{"model_list": [{"model_name": "gpt-5.2", "litellm_params": '
        f'{{"model": "openai/gpt-5.2", "api_base": "{upstream}/v1", "api_key": "unused"}}}}]}}\n'
    )
    # Its lightest setup: no DATABASE_URL (the pooler's would make it start Prisma), no master key, the model
    # cost map from its package rather than the internet.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LITELLM_MASTER_KEY")}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY"] = "true"  # it refuses to start without a key
    log = open(LOGS / "litellm.log", "wb")  # noqa: SIM115 - lives as long as the process
    args = [VENV / "bin" / "litellm", "--config", config, "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen([*map(str, args), "--num_workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_for(f"http://127.0.0.1:{port}/health/liveliness", process, timeout=120)
    return process


class Peers:
    """The fake upstream, and each gateway named in `targets`, started against it."""

    def __init__(self, targets: list[str]):
        self.processes: dict[str, subprocess.Popen] = {}
        self.urls: dict[str, str] = {}
        self.headers: dict[str, dict] = {name: {} for name in TARGETS}
        python = litellm_python()  # the fake upstream runs there too: uvloop is installed with LiteLLM
        port = free_port()
        self.upstream = f"http://127.0.0.1:{port}"
        self.processes["direct"] = start(
            [str(python), "-m", "bench.fake_upstream", "--port", str(port)], f"{self.upstream}/health"
        )
        self.urls["direct"] = f"{self.upstream}/v1/responses"
        try:
            if "litellm" in targets:
                port = free_port()
                self.processes["litellm"] = start_litellm(port, self.upstream)
                self.urls["litellm"] = f"http://127.0.0.1:{port}/v1/responses"
            if {"pooler", "codex"} & set(targets):
                self._start_pooler()
            if "floor" in targets:  # after the pooler's: both read the settings of the DATABASE_URL it sets
                self._start_floor()
        except BaseException:
            self.stop()
            raise

    def _start_pooler(self) -> None:
        """As `make bench` starts it: DEBUG off, PostgreSQL when DATABASE_URL names it; accounts at the fake."""
        db = LOGS / "peers.sqlite3"
        db.unlink(missing_ok=True)
        os.environ.setdefault("DATABASE_URL", f"sqlite:///{db}")
        env = production_env()
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, check=True)
        key, _ = seed(self.upstream, "peers", 5)
        port = free_port()
        self.processes["pooler"] = start_pooler(port, self.upstream, env, LOGS / "pooler-peers.log")
        base = f"http://127.0.0.1:{port}"
        self.urls["pooler"], self.urls["codex"] = f"{base}/v1/responses", f"{base}/backend-api/codex/responses"
        self.headers["pooler"] = self.headers["codex"] = {"Authorization": f"Bearer {key}"}

    def _start_floor(self) -> None:
        """Daphne, Django and httpx as the pooler runs them, forwarding without deciding anything."""
        port = free_port()
        env = {**production_env(), "DJANGO_SETTINGS_MODULE": "bench.floor_settings", "BENCH_UPSTREAM": self.upstream}
        address = f"tcp:port={port}:interface=127.0.0.1:backlog=1024"
        args = [sys.executable, "-m", "daphne", "-e", address, "bench.floor:application"]
        self.processes["floor"] = start(args, f"http://127.0.0.1:{port}/healthz", env=env, log=LOGS / "floor.log")
        self.urls["floor"] = f"http://127.0.0.1:{port}/v1/responses"

    def set_turn(self, deltas: int, event_delay: float = 0.0) -> None:
        turn = {"deltas": deltas, "event_delay": event_delay}
        httpx.post(f"{self.upstream}/_bench/turn", json=turn).raise_for_status()

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


async def closed_loop(url: str, headers: dict, concurrency: int, seconds: float = 0, turns: int = 0):
    """`concurrency` clients send turns back to back, for `seconds` or until `turns` are done: (turns a
    second, first-byte times in ms)."""
    # Encoded ahead, so the client's cost stays small; sessions of their own, as `make bench`'s turns have.
    bodies = [httpx.Request("POST", url, json=turn_body(i)).content for i in range(64)]
    headers = {**headers, "content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    first_bytes: list[float] = []
    deadline = time.perf_counter() + seconds

    def more() -> bool:
        return len(first_bytes) < turns if turns else time.perf_counter() < deadline

    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def client_loop():
            while more():
                first_bytes.append(-1.0)  # claimed now, so `turns` is not overshot
                slot, begin = len(first_bytes) - 1, time.perf_counter()
                body = bodies[slot % len(bodies)]
                async with client.stream("POST", url, content=body, headers=headers) as response:
                    response.raise_for_status()
                    async for _ in response.aiter_raw():
                        if first_bytes[slot] < 0:
                            first_bytes[slot] = (time.perf_counter() - begin) * 1000

        begin = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return len(first_bytes) / (time.perf_counter() - begin), first_bytes


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and its children, so far (LiteLLM may start helpers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(child)) for child in children)


def throughput(peers: Peers, targets: list[str], levels: list[int], seconds: float, rounds: int) -> dict:
    """(target, concurrency) -> (median turns a second, median first-byte p50 in ms) over `rounds`."""
    peers.set_turn(DELTAS)
    for name in targets:  # connections opened, LiteLLM's first-request work done
        asyncio.run(closed_loop(peers.urls[name], peers.headers[name], 2, turns=20))
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in range(rounds):
        for concurrency in levels:
            for name in targets if r % 2 == 0 else reversed(targets):
                rate, first = asyncio.run(closed_loop(peers.urls[name], peers.headers[name], concurrency, seconds))
                runs.setdefault((name, concurrency), []).append((rate, percentile(first, 50)))
                print(
                    f"round {r + 1}, {concurrency:>3} clients, {name:<7}: {rate:7.1f} turns/s, "
                    f"first byte p50 {percentile(first, 50):6.1f} ms",
                    flush=True,
                )
    return {
        key: (statistics.median(r for r, _ in values), statistics.median(f for _, f in values))
        for key, values in runs.items()
    }


def cpu_split(peers: Peers, targets: list[str], turns: int, concurrency: int = 10) -> dict:
    """target -> (CPU ms per turn apart from its events, CPU µs per streamed event), by a line through the
    CPU per turn at CPU_DELTAS deltas.

    The events are paced, as a model's tokens come, so that each reaches the gateway on its own (all at once,
    they arrive in a few large reads, and a gateway that relays bytes would pay per read, not per event); at
    most EVENT_BUDGET a second in all, which every process here keeps up with.
    """
    split = {}
    for name in (t for t in ("litellm", "floor", "pooler", "codex") if t in targets):
        pid = peers.processes["pooler" if name == "codex" else name].pid
        per_turn = []
        for deltas in CPU_DELTAS:
            peers.set_turn(deltas, event_delay=concurrency / EVENT_BUDGET)
            before = cpu_seconds(pid)
            asyncio.run(closed_loop(peers.urls[name], peers.headers[name], concurrency, turns=turns))
            per_turn.append((cpu_seconds(pid) - before) / turns)
        (e1, e2), (c1, c2) = (d + OTHER_EVENTS for d in CPU_DELTAS), per_turn
        per_event = (c2 - c1) / (e2 - e1)
        split[name] = ((c1 - per_event * e1) * 1000, per_event * 1e6)
        print(f"CPU {name}: {split[name][0]:.2f} ms a turn + {split[name][1]:.1f} µs an event", flush=True)
    peers.set_turn(DELTAS)
    return split


def table(targets: list[str], levels: list[int], results: dict) -> list[str]:
    has = set(targets)
    head = ["concurrency", *(f"{LABELS[t]} turns/s" for t in targets)]
    if {"pooler", "litellm"} <= has:
        head.append("pooler ÷ LiteLLM")
    head += [f"first byte p50, {LABELS[t]}" for t in targets]
    gateways = [t for t in targets if t != "direct"]
    if "direct" in has and gateways:
        head.append("added first byte p50: " + " / ".join(LABELS[t] for t in gateways))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in levels:
        row = [str(c), *(f"{results[t, c][0]:.0f}" for t in targets)]
        if {"pooler", "litellm"} <= has:
            row.append(f"{results['pooler', c][0] / results['litellm', c][0]:.2f}×")
        row += [f"{results[t, c][1]:.1f} ms" for t in targets]
        if "direct" in has and gateways:
            row.append(" / ".join(f"{results[t, c][1] - results['direct', c][1]:+.1f} ms" for t in gateways))
        lines.append("| " + " | ".join(row) + " |")
    return lines


# The targets of issue #27: pooler ÷ LiteLLM at 1 and 10 clients, the pooler's share of the direct turns a second
# at 50, and what the pooler adds to the first byte p50 at 1 client.
RATIO_TARGET, SHARE_TARGET, ADDED_FIRST_BYTE_TARGET_MS = 3.0, 0.9, 2.0


def goals(results: dict) -> list[str]:
    """The run against the issue's targets, one line each (for both pooler routes where both were run)."""
    lines = []
    for name in (t for t in ("pooler", "codex") if (t, 1) in results):
        label = LABELS[name]
        if ("litellm", 1) in results and (name, 10) in results:
            ratios = [results[name, c][0] / results["litellm", c][0] for c in (1, 10)]
            met = all(r >= RATIO_TARGET for r in ratios)
            lines.append(
                f"- {label} ÷ LiteLLM at 1 and 10 clients: {ratios[0]:.2f}× and {ratios[1]:.2f}× "
                f"(target {RATIO_TARGET:g}×: {'met' if met else 'not met'})"
            )
        if ("direct", 50) in results and (name, 50) in results:
            share = results[name, 50][0] / results["direct", 50][0]
            lines.append(
                f"- {label} at 50 clients: {share:.0%} of the direct connection's turns a second "
                f"(target {SHARE_TARGET:.0%}: {'met' if share >= SHARE_TARGET else 'not met'})"
            )
        if ("direct", 1) in results:
            added = results[name, 1][1] - results["direct", 1][1]
            met = added <= ADDED_FIRST_BYTE_TARGET_MS
            lines.append(
                f"- {label}, first byte p50 added at 1 client: {added:+.1f} ms "
                f"(target +{ADDED_FIRST_BYTE_TARGET_MS:g} ms: {'met' if met else 'not met'})"
            )
    if ("floor", 1) in results and ("direct", 1) in results:
        added = results["floor", 1][1] - results["direct", 1][1]
        share = (
            f", at 50 clients {results['floor', 50][0] / results['direct', 50][0]:.0%} of direct"
            if (("floor", 50) in results and ("direct", 50) in results)
            else ""
        )
        lines.append(
            f"- {LABELS['floor']} (the same Daphne, Django handler, upstream client and relay, none of the pooler's "
            f"work): first byte p50 added at 1 client {added:+.1f} ms{share}"
        )
    return lines


def report(args, lines: list[str], cpu: dict, speed: list[float], goal_lines: list[str] = ()) -> list[str]:
    database = "PostgreSQL" if "postgres" in os.environ.get("DATABASE_URL", "") else "SQLite"
    out = [
        PEERS_START,
        "## Side by side: LiteLLM, the pooler and a direct connection",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; command: `make bench-peers` (`python -m bench.peers`)",
        f"- machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; the pooler on {database} with DEBUG off",
        f"- machine speed: a pure-Python reference loop (10^6 additions) took {speed[0]:.0f} ms at the start of the "
        f"run and {speed[1]:.0f} ms at its end (compare runs by it)",
        f"- turns: 40 KB request bodies, `stream: true`, {DELTAS} text deltas ({DELTAS + OTHER_EVENTS} SSE events) "
        "from `bench/fake_upstream.py`; N clients send turns back to back (closed loop, httpx), "
        f"{args.seconds:g} s per target and level, targets alternating, medians of {args.rounds} rounds",
        f"- LiteLLM's proxy (`{LITELLM}`, its own venv): one process (`--num_workers 1`), no database, no master "
        "key; the pooler: one Daphne process, five accounts, a Pool API key, auth, limits, routing and accounting on",
        "",
        *lines,
        "",
        *([*goal_lines, ""] if goal_lines else []),
        "Reading it: the load generator, the fake upstream, PostgreSQL and the gateway share the machine's two cores,",
        "so the direct column is the machine without a gateway, and at 50 clients a gateway's first byte is mostly",
        "waiting for a core. The throughput rows send each turn's events at once, as the issue's table did. The",
        "stack floor (`bench/floor.py`) is the pooler's serving stack forwarding without deciding anything (no key,",
        "database, routing or accounting): what it adds is what Daphne, Django and httpx cost here; what the pooler",
        "adds beyond it is the pooler's own work.",
        "",
    ]
    if cpu:
        out += [
            f"CPU of the gateway process, from {args.cpu_turns} turns at 10 clients with {CPU_DELTAS[0]} and "
            f"{CPU_DELTAS[1]} deltas, events paced ({EVENT_BUDGET} a second in all, so each arrives on its own as "
            "a model's tokens do), split by a straight line into a part per turn and a part per streamed event:",
            "",
            "| gateway | CPU per turn (without its events) | CPU per event | a turn of "
            f"{DELTAS + OTHER_EVENTS} events |",
            "|---|---|---|---|",
            *(
                f"| {LABELS[t]} | {a:.2f} ms | {b:.1f} µs | {a + b * (DELTAS + OTHER_EVENTS) / 1000:.2f} ms |"
                for t, (a, b) in cpu.items()
            ),
            "",
        ]
    return [*out, PEERS_END]


def write_section(section: list[str]) -> None:
    """Put the section into RESULTS.md in place of the last one (or at its end), keeping the rest."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if PEERS_START in text and PEERS_END in text:
        head, rest = text.split(PEERS_START, 1)
        text = head + "\n".join(section) + rest.split(PEERS_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n"
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"of {', '.join(TARGETS)}")
    parser.add_argument("--concurrency", default="1,10,50", help="levels, comma-separated")
    parser.add_argument("--seconds", type=float, default=8, help="per target, level and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-turns", type=int, default=200, help="turns per CPU measure")
    parser.add_argument("--no-cpu", dest="cpu", action="store_false", help="skip the per-event CPU split")
    args = parser.parse_args()
    targets = [t for t in TARGETS if t in args.targets.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    LOGS.mkdir(parents=True, exist_ok=True)
    speed = [reference_loop_ms()]
    peers = Peers(targets)
    try:
        results = throughput(peers, targets, levels, args.seconds, args.rounds)
        cpu = cpu_split(peers, targets, args.cpu_turns) if args.cpu else {}
    finally:
        peers.stop()
    speed.append(reference_loop_ms())
    section = report(args, table(targets, levels, results), cpu, speed, goals(results))
    print("\n".join(section))
    if targets == list(TARGETS) and levels == [1, 10, 50] and args.cpu:
        write_section(section)
        print(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
