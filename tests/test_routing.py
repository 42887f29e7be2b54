"""Account choice on real rows: eligibility, stickiness, migration policy and the pool strategies."""

from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import SessionAffinity
from proxy.errors import NoEligibleAccount, RateLimited
from proxy.migration import NOTICE_ITEM, compactions, has_account_bound, is_compaction_turn, strip_account_bound
from proxy.routing import plan_turn, remember_session, sticky_key
from tests.factories import make_account, make_pool

pytestmark = pytest.mark.django_db


def test_ineligible_accounts_are_never_candidates():
    pool = make_pool()
    now = timezone.now()
    later = now + timedelta(hours=1)
    ok = make_account(pool, label="ok")
    make_account(pool, label="exhausted", primary_used_percent=100.0, primary_resets_at=later)
    make_account(pool, label="cooling", cooldown_until=later)
    make_account(pool, label="paused", status="paused")
    make_account(pool, label="reauth", status="reauth_required")
    make_account(pool, label="other-model", model_slugs=["gpt-other"])
    make_account(pool, label="off", membership={"enabled": False})
    assert [a.label for a in plan_turn(pool, "gpt-5.2", None).accounts] == [ok.label]


def test_a_window_whose_reset_passed_counts_as_empty():
    pool = make_pool()
    account = make_account(pool, primary_used_percent=100.0, primary_resets_at=timezone.now() - timedelta(seconds=1))
    assert plan_turn(pool, "m", None).accounts == [account]


def test_least_used_prefers_headroom():
    pool = make_pool()
    make_account(pool, label="busy", primary_used_percent=70.0)
    make_account(pool, label="idle", primary_used_percent=10.0)
    make_account(pool, label="mid", primary_used_percent=10.0, secondary_used_percent=50.0)
    assert [a.label for a in plan_turn(pool, "m", None).accounts] == ["idle", "mid", "busy"]


def test_all_exhausted_gives_429_with_soonest_reset_and_none_gives_503():
    pool = make_pool()
    now = timezone.now()
    make_account(pool, primary_used_percent=100.0, primary_resets_at=now + timedelta(seconds=600))
    make_account(pool, cooldown_until=now + timedelta(seconds=120), cooldown_reason="usage_limit_reached")
    with pytest.raises(RateLimited) as error:
        plan_turn(pool, "m", None, now)
    assert 119 <= error.value.retry_after <= 122
    with pytest.raises(NoEligibleAccount):
        plan_turn(make_pool(), "m", None)


def test_a_session_sticks_to_its_account_and_moves_only_when_it_must():
    pool = make_pool()
    first, second = make_account(pool, label="a"), make_account(pool, label="b", primary_used_percent=50.0)
    plan = plan_turn(pool, "m", "session-1")
    remember_session(plan, pool, second)  # say b served it
    for _ in range(5):
        assert plan_turn(pool, "m", "session-1").accounts[0] == second
    second.primary_used_percent, second.primary_resets_at = 100.0, timezone.now() + timedelta(hours=1)
    second.save()
    moved = plan_turn(pool, "m", "session-1")
    assert moved.accounts == [first] and moved.owner == second and moved.owner_unavailable == "quota_exhausted"
    remember_session(moved, pool, first, "quota_exhausted")
    affinity = SessionAffinity.objects.get()
    assert (affinity.account, affinity.previous_account, affinity.move_reason, affinity.moves) == (
        first,
        second,
        "quota_exhausted",
        1,
    )


def test_hold_policy_answers_429_with_the_owner_reset():
    pool = make_pool(session_migration="hold")
    owner, _ = make_account(pool), make_account(pool)
    remember_session(plan_turn(pool, "m", "s"), pool, owner)
    reset = timezone.now() + timedelta(seconds=900)
    owner.primary_used_percent, owner.primary_resets_at = 100.0, reset
    owner.save()
    with pytest.raises(RateLimited) as error:
        plan_turn(pool, "m", "s")
    assert 899 <= error.value.retry_after <= 902


def test_a_prompt_cache_key_prefers_its_account_but_is_never_held():
    pool = make_pool(session_migration="hold")
    cached, other = make_account(pool, primary_used_percent=60.0), make_account(pool, primary_used_percent=10.0)
    key = sticky_key({}, {"prompt_cache_key": "shared-prefix"})
    remember_session(plan_turn(pool, "m", key), pool, cached)
    assert plan_turn(pool, "m", key).accounts[0] == cached  # locality beats headroom while it can serve
    cached.primary_used_percent = 100.0
    cached.save()
    plan = plan_turn(pool, "m", key)  # a stateless request moves on instead of waiting for the reset
    assert plan.accounts == [other] and not plan.hold


def test_fill_first_drains_in_priority_order_until_the_reserve():
    pool = make_pool(strategy="fill_first")
    second = make_account(pool, label="second", membership={"priority": 2}, reserve_percent=80.0)
    first = make_account(
        pool, label="first", membership={"priority": 1}, reserve_percent=80.0, primary_used_percent=79.0
    )
    assert plan_turn(pool, "m", None).accounts[0] == first
    first.primary_used_percent = 80.0
    first.save()
    assert plan_turn(pool, "m", None).accounts == [second]


def test_weighted_spreads_in_proportion():
    pool = make_pool(strategy="weighted")
    make_account(pool, label="w1", membership={"weight": 1})
    make_account(pool, label="w3", membership={"weight": 3})
    counts = Counter(plan_turn(pool, "m", None).accounts[0].label for _ in range(300))
    assert 0.65 <= counts["w3"] / 300 <= 0.85


def test_round_robin_takes_the_least_recently_used():
    pool = make_pool(strategy="round_robin")
    now = timezone.now()
    make_account(pool, label="recent", last_used_at=now)
    make_account(pool, label="older", last_used_at=now - timedelta(minutes=5))
    make_account(pool, label="never")
    assert [a.label for a in plan_turn(pool, "m", None).accounts] == ["never", "older", "recent"]


def test_sticky_key_prefers_session_headers_then_prompt_cache_key():
    assert sticky_key({"session-id": "h"}, {"prompt_cache_key": "p"}) == "h"
    assert sticky_key({"conversation_id": "old"}, {}) == "old"
    assert sticky_key({}, {"prompt_cache_key": "p"}) == "cache:p"
    assert sticky_key({}, {"prompt_cache_key": 5}) is None


def test_migration_strips_only_account_bound_history():
    body = {
        "model": "m",
        "previous_response_id": "resp_1",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA..."},
            {"type": "compaction", "encrypted_content": "gAAAA..."},
            {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
        ],
    }
    assert has_account_bound(body)
    stripped = strip_account_bound(body)
    assert "previous_response_id" not in stripped
    # The compaction's place is taken by a notice to the model: the context it held stayed behind.
    assert stripped["input"][1] == NOTICE_ITEM
    assert [item["type"] for item in stripped["input"]] == ["message", "message", "function_call"]
    assert not has_account_bound(stripped) and len(body["input"]) == 4
    assert compactions(body) == 1 and compactions(body, before=2) == 0 and compactions(stripped) == 0
    assert strip_account_bound(body, before=2)["input"][1:] == body["input"][2:]


def test_compaction_turns_are_recognised():
    trigger = {"input": [{"type": "message", "role": "user", "content": "x"}, {"type": "compaction_trigger"}]}
    assert is_compaction_turn(trigger)
    assert not is_compaction_turn({"input": [{"type": "compaction_trigger"}, {"type": "message"}]})
    assert not is_compaction_turn({"input": "text"}) and not is_compaction_turn({})


def test_hold_compacted_holds_only_sessions_with_a_compaction():
    pool = make_pool(session_migration="hold_compacted")
    owner, other = make_account(pool, label="owner"), make_account(pool, label="other")
    remember_session(plan_turn(pool, "m", "s"), pool, owner)
    owner.primary_used_percent, owner.primary_resets_at = 100.0, timezone.now() + timedelta(seconds=900)
    owner.save()
    assert plan_turn(pool, "m", "s").accounts == [other]  # only sealed reasoning is lost: it moves
    with pytest.raises(RateLimited) as error:
        plan_turn(pool, "m", "s", compacted=True)  # everything before the compaction would be lost: it waits
    assert 899 <= error.value.retry_after <= 902
    # The pin remembers a compaction, for turns that carry no history (a websocket's prewarm).
    remember_session(plan_turn(pool, "m", "s2"), pool, owner, compacted=True)
    with pytest.raises(RateLimited):
        plan_turn(pool, "m", "s2")


def test_a_compaction_near_the_owners_limit_is_made_where_the_session_can_stay(settings):
    settings.POOLER_COMPACT_ELSEWHERE_PERCENT = 80.0
    pool = make_pool()
    owner = make_account(pool, label="owner", primary_used_percent=85.0)
    roomy = make_account(pool, label="roomy", primary_used_percent=5.0)
    remember_session(plan_turn(pool, "m", "s"), pool, owner)
    assert plan_turn(pool, "m", "s").accounts[0] == owner  # an ordinary turn stays
    plan = plan_turn(pool, "m", "s", compaction=True)
    assert plan.accounts == [roomy, owner] and plan.owner_unavailable == "compacted_near_limit"
    roomy.primary_used_percent = 90.0
    roomy.save()
    assert plan_turn(pool, "m", "s", compaction=True).accounts[0] == owner  # no account has more room
    held = make_pool(session_migration="hold")
    held_owner = make_account(held, primary_used_percent=85.0)
    make_account(held, primary_used_percent=5.0)
    remember_session(plan_turn(held, "m", "h"), held, held_owner)
    assert plan_turn(held, "m", "h", compaction=True).accounts[0] == held_owner  # held sessions never move


def test_after_a_compaction_the_moved_sessions_history_is_its_own_again():
    pool = make_pool()
    first, second = make_account(pool, label="a"), make_account(pool, label="b")
    remember_session(plan_turn(pool, "m", "s"), pool, first)
    first.status = "paused"
    first.save()
    moved = plan_turn(pool, "m", "s")
    remember_session(moved, pool, second, "paused", foreign_items=12)
    assert SessionAffinity.objects.get().foreign_items == 12
    remember_session(plan_turn(pool, "m", "s", compaction=True), pool, second, foreign_items=0)
    assert SessionAffinity.objects.get().foreign_items == 0
