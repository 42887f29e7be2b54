"""Routing decision time against the number of accounts in a pool (in-process, real database)."""

import os
import statistics
import time

import django


def measure(sizes=(10, 1000, 10000), rounds: int = 200) -> list[dict]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pooler.settings")
    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.utils import timezone

    from accounts.models import Pool, PoolMembership, UpstreamAccount
    from proxy.routing import _load_snapshot, _proposals, _snapshot, plan_turn

    call_command("migrate", verbosity=0)
    import pooler.asgi  # noqa: F401  (the process as the server runs it: its garbage collector settings)

    results = []
    for size in sizes:
        pool = Pool.objects.create(name=f"bench-routing-{size}-{int(time.time())}")
        accounts = UpstreamAccount.objects.bulk_create(
            UpstreamAccount(
                label=f"{pool.name}-{i}",
                chatgpt_account_id=f"{pool.name}-{i}",
                primary_used_percent=(i * 7) % 100,
                secondary_used_percent=(i * 3) % 100,
            )
            for i in range(size)
        )
        PoolMembership.objects.bulk_create(PoolMembership(pool=pool, account=a) for a in accounts)
        plan_turn(pool, "gpt-5.2", None)  # warm caches and connections
        timings = []
        for i in range(rounds):
            start = time.perf_counter()
            plan_turn(pool, "gpt-5.2", f"session-{i % 20}")
            timings.append((time.perf_counter() - start) * 1000)
        timings.sort()
        # The choice alone: which accounts, in which order, from the pool's snapshot (what grows with the
        # pool); plan_turn adds its read of the chosen rows and the session pin as they are now.
        choices = []
        for _ in range(rounds):
            start = time.perf_counter()
            now = timezone.now()
            _proposals(_snapshot(pool, now), "gpt-5.2", now, settings.POOLER_MAX_ATTEMPTS + 2)
            choices.append((time.perf_counter() - start) * 1000)
        choices.sort()
        start = time.perf_counter()
        _load_snapshot(pool, timezone.now())  # what a turn waits for when the process re-reads the pool
        snapshot_ms = (time.perf_counter() - start) * 1000
        results.append(
            {
                "accounts": size,
                "p50_ms": statistics.median(timings),
                "p99_ms": timings[int(len(timings) * 0.99) - 1],
                "choice_p50_ms": statistics.median(choices),
                "choice_p99_ms": choices[int(len(choices) * 0.99) - 1],
                "snapshot_ms": snapshot_ms,
            }
        )
        UpstreamAccount.objects.filter(pk__in=[a.pk for a in accounts]).delete()
        pool.delete()
    return results


if __name__ == "__main__":
    for row in measure():
        print(row)
