"""`make soak`: ten minutes of steady, moderate load; pooler memory and open files must stay flat."""

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import websockets

from bench.run import production_env, rss_kb, targets, turn_body
from bench.stack import REPO, free_port, start_stack


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def http_loop(target, deadline: float, counts: dict) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        i = 0
        while time.monotonic() < deadline:
            async with client.stream(
                "POST",
                f"{target.base_url}/responses",
                json=turn_body(i),
                headers={**target.headers, "session-id": f"soak-{i % 50}"},
            ) as response:
                async for _ in response.aiter_raw():
                    pass
                counts[response.status_code] = counts.get(response.status_code, 0) + 1
            i += 1


async def websocket_loop(url: str, key: str, deadline: float, counts: dict) -> None:
    while time.monotonic() < deadline:
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            for i in range(5):  # a few turns per connection, then a new one, like CLI sessions
                await ws.send(json.dumps({"type": "response.create", **turn_body(i)}))
                while json.loads(await ws.recv())["type"] not in ("response.completed", "response.failed", "error"):
                    pass
                counts["ws"] = counts.get("ws", 0) + 1


async def sample(pid: int, deadline: float, every: float, samples: list) -> None:
    while time.monotonic() < deadline:
        await asyncio.sleep(every)
        rss, _ = rss_kb(pid)
        samples.append((round(time.monotonic()), rss, open_files(pid)))
        print(f"rss {rss / 1024:.1f} MiB, open files {samples[-1][2]}", flush=True)


async def soak(stack, minutes: float, streams: int) -> tuple[list, dict]:
    _, pooled = targets(stack)
    pid = stack.processes[-1].pid
    deadline = time.monotonic() + minutes * 60
    counts: dict = {}
    samples: list = []
    ws_url = stack.codex_base_url.replace("http://", "ws://") + "/responses"
    await asyncio.gather(
        *(http_loop(pooled, deadline, counts) for _ in range(streams)),
        *(websocket_loop(ws_url, stack.api_key, deadline, counts) for _ in range(max(1, streams // 4))),
        sample(pid, deadline, max(5.0, minutes * 60 / 20), samples),
    )
    return samples, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--streams", type=int, default=8, help="concurrent HTTP clients (plus a quarter on ws)")
    args = parser.parse_args()
    logs = REPO / ".cache" / "soak"
    logs.mkdir(parents=True, exist_ok=True)
    db = logs / "soak.sqlite3"
    db.unlink(missing_ok=True)
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{db}")
    stack = start_stack(
        free_port(),
        "soak",
        3,
        sim_fields={"percent_per_turn": 0.0, "deltas": 30},
        logs=logs,
        pooler_env=production_env(),
    )
    try:
        samples, counts = asyncio.run(soak(stack, args.minutes, args.streams))
    finally:
        stack.stop()
    third = max(1, len(samples) // 3)
    early = [s for s in samples[1 : third + 1]] or samples[:1]
    late = samples[-third:]
    rss_growth = max(s[1] for s in late) / max(s[1] for s in early) - 1
    fd_growth = max(s[2] for s in late) - max(s[2] for s in early)
    print(f"turns: {counts}")
    print(f"memory growth, last third vs first third: {rss_growth:+.1%}; open files: {fd_growth:+d}")
    flat = rss_growth < 0.10 and fd_growth <= 10 and all(code == 200 for code in counts if code != "ws")
    Path(logs / "result.txt").write_text(f"{counts}\n{samples}\nflat={flat}\n")
    print("FLAT" if flat else "NOT FLAT")
    raise SystemExit(0 if flat else 1)


if __name__ == "__main__":
    main()
