"""`make profile`: where the pooler spends its CPU while it relays 50 paced streams.

Samples the pooler process with py-spy (only threads that hold the GIL, so the shares add up to the
process's CPU) and writes the functions with the largest inclusive share to bench/PROFILE.md.
"""

import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

from bench.run import EVENTS_PER_TURN, REPO, production_env, run_turns, set_event_delay, targets, write_report
from bench.stack import free_port, start_stack

PROFILE = REPO / "bench" / "PROFILE.md"
STREAMS, TURNS, SECONDS = 50, 400, 20


# Frames every sample passes through (the server's loop, the worker threads' plumbing): no information.
_PLUMBING = (
    "runpy",
    "daphne/cli.py",
    "daphne/server.py:155",
    "asyncioreactor.py:257",
    "base_events.py",
    "asyncio/events.py",
    "threading.py",
    "concurrent/futures",
    "asgiref/sync.py",
    "channels/db.py",
    "__main__",
)


def shares(raw: Path, top: int) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """(percent of samples, frame): the frames most often on a sampled stack, and most often on top of it."""
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            if not any(part in frame for part in _PLUMBING):
                inclusive[frame] += int(count)

    def percent(counter):
        return [(100 * n / max(total, 1), frame) for frame, n in counter.most_common(top)]

    return percent(inclusive), percent(own)


def main() -> None:
    logs = REPO / ".cache" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{logs / 'profile.sqlite3'}")
    stack = start_stack(
        free_port(), "bench", 3, sim_fields={"percent_per_turn": 0.0, "deltas": 60}, pooler_env=production_env()
    )
    _, pooled = targets(stack)
    raw = Path(tempfile.mkdtemp()) / "profile.txt"
    try:
        turn_seconds = max(1.0, STREAMS * EVENTS_PER_TURN / 1500)
        set_event_delay(stack, turn_seconds / EVENTS_PER_TURN, 10 * TURNS)
        asyncio.run(run_turns(pooled, STREAMS, STREAMS))  # warm up connections and caches
        spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--gil", "--format", "raw", "--rate", "250"]
        spy += ["--duration", str(SECONDS), "--pid", str(stack.processes[-1].pid), "--output", str(raw)]
        sampler = threading.Thread(target=subprocess.run, args=(spy,), kwargs={"check": True, "capture_output": True})
        sampler.start()
        asyncio.run(run_turns(pooled, STREAMS, TURNS))
        sampler.join()
    finally:
        stack.stop()
    inclusive, own = shares(raw, 30)
    lines = [
        "# Where the pooler's CPU goes",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; command: `make profile` (`python -m bench.profile`)",
        f"- {STREAMS} paced streams of {EVENTS_PER_TURN} events, 40 KB bodies; py-spy samples of GIL-holding "
        f"threads for {SECONDS} s, so a share is a share of the pooler's CPU",
        "",
        "| share | function and what it calls |",
        "|---|---|",
        *[f"| {share:.1f}% | `{frame}` |" for share, frame in inclusive],
        "",
        "| share | function itself |",
        "|---|---|",
        *[f"| {share:.1f}% | `{frame}` |" for share, frame in own],
        "",
    ]
    write_report(PROFILE, lines)


if __name__ == "__main__":
    main()
