from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring import scores
from scoring.models import Appointment, Customer, CustomerScore, Outcome, Tier
from scoring.rules import score_for
from tests import factories as make
from tests.factories import NOW
from tests.helpers import outside_a_run

pytestmark = pytest.mark.django_db
WINDOW = timedelta(days=180)


def recompute_scores(now, **kwargs):
    return outside_a_run(scores.recompute_scores, now, **kwargs)


def stored(customer: Customer) -> CustomerScore:
    return CustomerScore.objects.get(customer=customer)


def test_a_customer_without_history_scores_50_new():
    customer = make.customer()
    recompute_scores(now=NOW)
    score = stored(customer)
    assert (score.score, score.tier, score.attended, score.no_shows, score.late_cancels, score.cancellations) == (
        50, Tier.NEW, 0, 0, 0, 0,
    )  # fmt: skip
    assert score.last_appointment_at is None
    assert score.window_days == 180
    assert score.computed_at == NOW
    assert score.shop_id == customer.shop_id


def test_the_window_includes_its_start_and_excludes_now():
    customer = make.customer()
    make.appointment(customer, NOW - WINDOW)  # first instant of the window: counted
    make.appointment(customer, NOW - WINDOW - timedelta(microseconds=1), Outcome.NO_SHOW)  # just before
    make.appointment(customer, NOW, Outcome.NO_SHOW)  # now itself: not yet in the window
    make.appointment(customer, NOW - timedelta(days=1), Outcome.PENDING)  # pending: not scored
    make.appointment(customer, NOW - timedelta(days=2), Outcome.CANCELLED)  # reported, not scored
    recompute_scores(now=NOW)
    score = stored(customer)
    assert (score.attended, score.no_shows, score.late_cancels, score.cancellations) == (1, 0, 0, 1)
    assert score.last_appointment_at == NOW - timedelta(days=2)
    assert (score.score, score.tier) == score_for(1, 0, 0)


def test_it_counts_each_outcome_and_applies_the_rule():
    customer = make.customer()
    for days, outcome in enumerate(
        [Outcome.ATTENDED] * 3 + [Outcome.NO_SHOW] * 2 + [Outcome.LATE_CANCEL] + [Outcome.CANCELLED] * 4, start=1
    ):
        make.appointment(customer, NOW - timedelta(days=days), outcome)
    recompute_scores(now=NOW)
    score = stored(customer)
    assert (score.attended, score.no_shows, score.late_cancels, score.cancellations) == (3, 2, 1, 4)
    assert (score.score, score.tier) == (53, Tier.WATCH)  # 100 x 4 / (3 + 2 + 0.5 + 2) = 53.3


def test_a_second_run_with_the_same_now_changes_nothing():
    shop = make.shop()
    for i in range(5):
        make.appointment(make.customer(shop), NOW - timedelta(days=i + 1), Outcome.NO_SHOW)
    first = recompute_scores(now=NOW)
    before = list(CustomerScore.objects.order_by("pk").values())
    second = recompute_scores(now=NOW)  # incremental: nothing is marked
    full = recompute_scores(now=NOW, full=True)
    assert (first["total"], first["created"], first["updated"], first["unchanged"], first["full_pass"]) == (
        5,
        5,
        0,
        0,
        1,
    )
    assert (second["total"], second["dirty"], second["changed"], second["full_pass"]) == (0, 0, 0, 0)
    assert (full["total"], full["created"], full["updated"], full["unchanged"], full["drift"]) == (5, 0, 0, 5, 0)
    assert list(CustomerScore.objects.order_by("pk").values()) == before


def test_history_leaving_the_window_updates_the_score():
    customer = make.customer()
    make.appointment(customer, NOW - WINDOW + timedelta(days=1), Outcome.NO_SHOW)
    recompute_scores(now=NOW)
    assert stored(customer).no_shows == 1
    later = NOW + timedelta(days=2)
    counters = recompute_scores(now=later)
    score = stored(customer)
    assert (score.no_shows, score.score, score.last_appointment_at, score.computed_at) == (0, 50, None, later)
    assert (counters["updated"], counters["unchanged"]) == (1, 0)


def test_unchanged_rows_are_not_rewritten():
    customer = make.customer()
    recompute_scores(now=NOW)
    counters = recompute_scores(now=NOW + timedelta(hours=1), full=True)
    assert counters["unchanged"] == 1
    assert stored(customer).computed_at == NOW  # the run that last changed it


def test_one_shop_leaves_the_others_alone():
    mine, other = make.shop("Mine"), make.shop("Other")
    mine_customer, other_customer = make.customer(mine), make.customer(other)
    counters = recompute_scores(now=NOW, shop=mine.pk)
    assert counters["total"] == 1
    assert CustomerScore.objects.filter(customer=mine_customer).exists()
    assert not CustomerScore.objects.filter(customer=other_customer).exists()


def test_small_batches_give_the_same_scores_as_one_batch():
    shop = make.shop()
    for i in range(7):
        customer = make.customer(shop)
        for j in range(i):
            make.appointment(customer, NOW - timedelta(days=j + 1), [Outcome.ATTENDED, Outcome.NO_SHOW][j % 2])
    one = recompute_scores(now=NOW)
    rows = list(CustomerScore.objects.order_by("pk").values_list("pk", "score", "tier"))
    CustomerScore.objects.all().delete()
    batched = recompute_scores(now=NOW, batch_size=2, full=True)
    assert list(CustomerScore.objects.order_by("pk").values_list("pk", "score", "tier")) == rows
    same = ("total", "created", "updated", "unchanged", "remaining", "tier_new", "tier_watch", "tier_risky", "drift")
    assert {key: batched[key] for key in same} == {key: one[key] for key in same}


def test_the_counters_report_tiers():
    shop = make.shop()
    reliable, risky = make.customer(shop), make.customer(shop)
    make.customer(shop)  # new
    for day in range(1, 4):
        make.appointment(reliable, NOW - timedelta(days=day), Outcome.ATTENDED)
        make.appointment(risky, NOW - timedelta(days=day), Outcome.NO_SHOW)
    counters = recompute_scores(now=NOW)
    assert counters == {
        "total": 3, "dirty": 3, "changed": 3, "created": 3, "updated": 0, "unchanged": 0, "drift": 0,
        "remaining": 0, "full_pass": 1, "tier_new": 1, "tier_reliable": 1, "tier_watch": 0, "tier_risky": 1,
        "errors": [],
    }  # fmt: skip


outcomes = st.sampled_from(list(Outcome))
offsets = st.integers(min_value=-200 * 24, max_value=10 * 24)  # hours from now: past and future
histories = st.lists(st.lists(st.tuples(offsets, outcomes), max_size=12), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories=histories)
def test_stored_scores_equal_the_pure_rule_over_random_histories(histories):
    with transaction.atomic():
        shop = make.shop()
        expected = {}
        for history in histories:
            customer = make.customer(shop)
            counts: Counter[str] = Counter()
            for hours, outcome in history:
                starts_at = NOW + timedelta(hours=hours)
                make.appointment(customer, starts_at, outcome)
                if NOW - WINDOW <= starts_at < NOW and outcome != Outcome.PENDING:
                    counts[outcome] += 1
            scored = counts[Outcome.ATTENDED], counts[Outcome.NO_SHOW], counts[Outcome.LATE_CANCEL]
            expected[customer.pk] = (*score_for(*scored), *scored, counts[Outcome.CANCELLED])
        recompute_scores(now=NOW, shop=shop.pk, batch_size=4)
        got = {
            row[0]: row[1:]
            for row in CustomerScore.objects.filter(shop=shop).values_list(
                "customer", "score", "tier", "attended", "no_shows", "late_cancels", "cancellations"
            )
        }
        assert got == expected
        transaction.set_rollback(True)


def test_appointments_are_only_scored_for_their_own_customer():
    shop = make.shop()
    busy, idle = make.customer(shop), make.customer(shop)
    make.appointment(busy, NOW - timedelta(days=1), Outcome.NO_SHOW)
    recompute_scores(now=NOW)
    assert stored(idle).no_shows == 0
    assert Appointment.objects.count() == 1
