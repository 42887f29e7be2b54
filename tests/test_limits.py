"""Key and pool limits on real rows: each refusal names its limit and says when to come back."""

import pytest
from django.utils import timezone

from accounts.models import AccountStatus, RequestLog
from accounts.tokens import RefreshFailed
from accounts.usage import key_usage
from proxy.accounting import mark_failure
from proxy.errors import RateLimited
from proxy.limits import admit, claim_account, release, stop_waiting, wait_for_slot
from proxy.routing import plan_turn
from proxy.turns import refresh_failure
from tests.factories import make_account, make_key, make_pool

pytestmark = pytest.mark.django_db


def test_requests_per_minute_of_a_key():
    key, _ = make_key(make_pool(), rpm=3)
    for i in range(3):
        release(admit(key, f"r{i}"))
    with pytest.raises(RateLimited) as error:
        admit(key, "r4")
    assert error.value.code == "key_rpm_limit" and 1 <= error.value.retry_after <= 60
    assert error.value.status == 429 and "3 requests per minute" in error.value.message


def test_a_prewarm_is_limited_but_does_not_use_up_the_minute():
    key, _ = make_key(make_pool(), rpm=2)
    for i in range(5):
        admit(key, f"prewarm-{i}", counted=False)
    admit(key, "a")
    admit(key, "b")
    with pytest.raises(RateLimited):
        admit(key, "prewarm-late", counted=False)  # the window is full: a prewarm waits like a turn


def test_pool_wide_cap_spans_keys():
    pool = make_pool(rpm_limit=2)
    first, _ = make_key(pool)
    second, _ = make_key(pool)
    admit(first, "a")
    admit(second, "b")
    with pytest.raises(RateLimited) as error:
        admit(first, "c")
    assert error.value.code == "pool_rpm_limit"


def test_concurrent_streams_free_on_release():
    key, _ = make_key(make_pool(), max_concurrent=2)
    slots = [admit(key, "a"), admit(key, "b")]
    with pytest.raises(RateLimited) as error:
        admit(key, "c")
    assert error.value.code == "key_concurrency_limit"
    release(slots[0])
    slots.append(admit(key, "c"))
    assert key_usage(key)["open_streams"] == 2


def test_tokens_per_day_counts_real_usage():
    key, _ = make_key(make_pool(), tokens_per_day=1000)
    admit(key, "a")
    RequestLog.objects.create(
        request_id="a", api_key=key, pool=key.pool, route="codex.responses", total_tokens=999, created_at=timezone.now()
    )
    release(admit(key, "b"))
    RequestLog.objects.create(
        request_id="b", api_key=key, pool=key.pool, route="codex.responses", total_tokens=1, created_at=timezone.now()
    )
    with pytest.raises(RateLimited) as error:
        admit(key, "c")
    assert error.value.code == "key_tokens_per_day_limit"
    assert key_usage(key)["tokens_today"] == 1000


def test_pool_defaults_apply_to_keys_without_their_own():
    key, _ = make_key(make_pool(default_rpm=1))
    admit(key, "a")
    with pytest.raises(RateLimited):
        admit(key, "b")


def test_an_account_cap_holds_its_concurrent_turns():
    pool = make_pool()
    capped = make_account(pool, max_concurrent=1)
    other = make_account(pool)
    key, _ = make_key(pool)
    first = claim_account(admit(key, "a"), key, "a", capped)
    assert first is not None
    assert claim_account(None, key, "b", capped) is None  # full: the router must try another account
    # A failover moves the slot: the capped account is free again, the other one counts the turn.
    assert claim_account(first, key, "a", other) == first
    assert claim_account(None, key, "b", capped) is not None


def test_routing_skips_an_account_at_its_cap():
    pool = make_pool()
    capped = make_account(pool, max_concurrent=1, primary_used_percent=0)
    spare = make_account(pool, primary_used_percent=50)
    key, _ = make_key(pool)
    assert plan_turn(pool, "m", None).accounts[0] == capped
    claim_account(None, key, "a", capped)
    assert plan_turn(pool, "m", None).accounts == [spare]


def test_a_refresh_that_fails_for_now_cools_down_and_a_dead_one_needs_a_login():
    pool = make_pool()
    flaky, dead = make_account(pool), make_account(pool)
    mark_failure(flaky, refresh_failure(RefreshFailed("auth server unreachable", dead=False)))
    mark_failure(dead, refresh_failure(RefreshFailed("refresh_token_reused", dead=True)))
    flaky.refresh_from_db()
    dead.refresh_from_db()
    assert flaky.status == AccountStatus.ACTIVE and flaky.cooldown_until > timezone.now()
    assert dead.status == AccountStatus.REAUTH_REQUIRED


def test_a_freed_slot_goes_to_the_waiting_key_that_holds_fewest():
    pool = make_pool()
    account = make_account(pool, max_concurrent=2)
    flood, _ = make_key(pool)
    steady, _ = make_key(pool)
    held = [claim_account(None, flood, f"f{i}", account) for i in range(2)]
    waiting = wait_for_slot(steady, "s", 10)
    release(held[0])
    assert claim_account(None, flood, "f3", account) is None  # the steady key waits holding none
    assert claim_account(None, steady, "s", account) is not None
    stop_waiting(waiting)
    release(held[1])
    assert claim_account(None, flood, "f4", account) is not None  # no one poorer waits any more
