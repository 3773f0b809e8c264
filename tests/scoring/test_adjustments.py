"""Forgiveness, pinned tiers, a shop's grace rule and their append-only log (scoring.adjustments)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import DatabaseError, connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.context import Context
from scoring import adjustments, offers, scores
from scoring import jobs as scoring_jobs
from scoring.adjustments import AdjustmentError, effective_tier, effective_tier_expression
from scoring.models import (
    Adjustment,
    Appointment,
    Customer,
    CustomerChange,
    CustomerScore,
    DirtyCustomer,
    Outcome,
    SlotOffer,
    Tier,
    WaitlistEntry,
)
from scoring.rules import score_for
from tests import factories as make
from tests.factories import NOW
from tests.helpers import outside_a_run
from tests.scoring.test_incremental import full_recompute, stored

pytestmark = pytest.mark.django_db
WINDOW = timedelta(days=180)


def recompute(now, **kwargs) -> dict:
    return outside_a_run(scores.recompute_scores, now, **kwargs)


def score_of(customer: Customer) -> tuple[int, str, int, int]:
    row = CustomerScore.objects.get(customer=customer)
    return row.score, row.tier, row.attended, row.no_shows


def marked() -> set:
    return set(CustomerChange.objects.values_list("customer_id", flat=True)) | set(
        DirtyCustomer.objects.values_list("customer_id", flat=True)
    )


def regular_with_a_no_show() -> tuple[Customer, Appointment]:
    customer = make.customer()
    for day in (3, 4, 5):
        make.appointment(customer, NOW - timedelta(days=day), Outcome.ATTENDED)
    return customer, make.appointment(customer, NOW - timedelta(days=2), Outcome.NO_SHOW)


# Forgive


def test_forgiving_a_no_show_rescores_at_once_and_the_next_runs_agree_with_it():
    customer, no_show = regular_with_a_no_show()
    # enters the window after the last run and before the forgiveness: counted once, whoever counts it
    make.appointment(customer, NOW + timedelta(minutes=30), Outcome.ATTENDED)
    recompute(NOW)
    assert score_of(customer) == (*score_for(3, 1, 0), 3, 1)
    later = NOW + timedelta(hours=1)

    now = adjustments.forgive(no_show.pk, by="ada", reason="Flat tyre, called ahead", now=later)

    assert score_of(customer) == (*score_for(4, 0, 0), 4, 0)  # stored at once, at the forgiveness's `now`
    assert (now.score, now.tier) == score_for(4, 0, 0)
    assert customer.pk in marked()  # exact at another `now` than the other scores: the next run rescores it
    entry = Adjustment.objects.get()
    assert (entry.action, entry.by, entry.reason, entry.appointment_id) == ("forgive", "ada", "Flat tyre, called ahead",
                                                                            no_show.pk)  # fmt: skip
    nxt = NOW + timedelta(hours=2)
    assert recompute(nxt)["full_pass"] == 0
    assert stored() == full_recompute(nxt)
    assert recompute(nxt, full=True)["drift"] == 0


def test_undoing_a_forgiveness_restores_the_score_with_a_new_entry():
    customer, no_show = regular_with_a_no_show()
    recompute(NOW)
    before = score_of(customer)
    adjustments.forgive(no_show.pk, by="ada", reason="called ahead", now=NOW + timedelta(minutes=5))
    assert score_of(customer) != before
    adjustments.forgive(no_show.pk, by="ben", reason="no, they did not", undo=True, now=NOW + timedelta(minutes=10))
    assert score_of(customer) == before
    assert list(Adjustment.objects.order_by("id").values_list("action", "by")) == [("forgive", "ada"),
                                                                                  ("unforgive", "ben")]  # fmt: skip
    nxt = NOW + timedelta(hours=1)
    recompute(nxt)
    assert stored() == full_recompute(nxt)
    assert recompute(nxt, full=True)["drift"] == 0


def test_only_a_no_show_or_late_cancel_is_forgiven_and_always_with_a_reason():
    customer = make.customer()
    visit = make.appointment(customer, NOW - timedelta(days=1), Outcome.ATTENDED)
    late = make.appointment(customer, NOW - timedelta(days=2), Outcome.LATE_CANCEL)
    with pytest.raises(AdjustmentError, match="Only a no-show or a late cancel"):
        adjustments.forgive(visit.pk, by="ada", reason="why not")
    with pytest.raises(AdjustmentError, match="A reason is required"):
        adjustments.forgive(late.pk, by="ada", reason="   ")
    with pytest.raises(AdjustmentError, match="nothing to undo"):
        adjustments.forgive(late.pk, by="ada", reason="oops", undo=True)
    adjustments.forgive(late.pk, by="ada", reason="the shop cancelled")
    with pytest.raises(AdjustmentError, match="already forgiven"):
        adjustments.forgive(late.pk, by="ada", reason="twice")
    assert Adjustment.objects.count() == 1


def test_a_change_of_forgiveness_marks_the_customer_whoever_writes():
    customer, no_show = regular_with_a_no_show()
    booking = make.appointment(customer, NOW + timedelta(days=2), Outcome.PENDING)
    recompute(NOW)
    assert marked() == set()
    Appointment.objects.filter(pk=booking.pk).update(forgiven=True)  # pending: counts in no score
    assert marked() == set()
    with connection.cursor() as cursor:  # raw SQL, as another service would write
        pk = Appointment._meta.get_field("id").get_db_prep_value(no_show.pk, connection)
        cursor.execute(f"UPDATE {Appointment._meta.db_table} SET forgiven = %s WHERE id = %s", [True, pk])
    assert marked() == {customer.pk}


def test_the_window_slides_over_forgiven_appointments_without_counting_them():
    customer = make.customer()
    leaving = make.appointment(customer, NOW - timedelta(days=179, hours=12), Outcome.NO_SHOW)
    entering = make.appointment(customer, NOW + timedelta(hours=12), Outcome.LATE_CANCEL)  # resolved ahead
    make.appointment(customer, NOW - timedelta(days=3), Outcome.ATTENDED)
    Appointment.objects.filter(pk__in=[leaving.pk, entering.pk]).update(forgiven=True)
    recompute(NOW)
    later = NOW + timedelta(days=1)
    counters = recompute(later)
    assert (counters["full_pass"], counters["changed"]) == (0, 0)  # both crossed an edge, and count in no score
    assert score_of(customer)[2:] == (1, 0)
    assert stored() == full_recompute(later)


outcomes = st.sampled_from(list(Outcome))
offsets = st.integers(min_value=-200 * 24, max_value=10 * 24)  # hours from now: past and future
histories = st.lists(st.lists(st.tuples(offsets, outcomes, st.booleans()), max_size=10), min_size=1, max_size=5)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(histories=histories)
def test_forgiven_appointments_count_in_no_score_over_random_histories(histories):
    with transaction.atomic():
        shop = make.shop()
        expected = {}
        for history in histories:
            customer = make.customer(shop)
            counts = dict.fromkeys(Outcome, 0)
            for hours, outcome, forgiven in history:
                starts_at = NOW + timedelta(hours=hours)
                visit = make.appointment(customer, starts_at, outcome)
                Appointment.objects.filter(pk=visit.pk).update(forgiven=forgiven)
                if NOW - WINDOW <= starts_at < NOW and outcome != Outcome.PENDING and not forgiven:
                    counts[outcome] += 1
            scored = counts[Outcome.ATTENDED], counts[Outcome.NO_SHOW], counts[Outcome.LATE_CANCEL]
            expected[customer.pk] = (*score_for(*scored), *scored, counts[Outcome.CANCELLED])
        recompute(NOW, full=True)
        got = CustomerScore.objects.values_list("customer_id", "score", "tier", "attended", "no_shows",
                                                "late_cancels", "cancellations")  # fmt: skip
        assert {row[0]: row[1:] for row in got} == expected
        transaction.set_rollback(True)


# Pin


def ranked_candidates(now) -> list:
    """The offer loop's order of the waiting customers of the first shop."""
    batch = [{"id": None, "shop_id": WaitlistEntry.objects.values_list("shop_id", flat=True).first()}]
    return [customer for _, customer in next(iter(offers._candidates(batch, adjustments.today_utc(now)).values()))]


def test_a_pin_changes_the_effective_tier_and_the_offer_loops_order_and_lapses_after_its_last_day():
    shop = make.shop()
    sloppy, newcomer = make.customer(shop, "Sloppy"), make.customer(shop, "Newcomer")
    for day, outcome in enumerate([Outcome.ATTENDED, Outcome.NO_SHOW, Outcome.NO_SHOW, Outcome.NO_SHOW], start=1):
        make.appointment(sloppy, NOW - timedelta(days=day), outcome)  # 100 x 2 / 6 = 33: risky
    for day in (1, 2):
        make.appointment(newcomer, NOW - timedelta(days=day), Outcome.NO_SHOW)  # 100 x 1 / 4 = 25: new
    recompute(NOW)
    for customer in (sloppy, newcomer):
        WaitlistEntry.objects.create(shop=shop, customer=customer)
    assert score_of(sloppy)[:2] == (33, Tier.RISKY)
    assert ranked_candidates(NOW) == [newcomer.pk, sloppy.pk]  # risky last, whatever the score

    with time_machine.travel(NOW, tick=False):
        adjustments.pin_tier(sloppy.pk, Tier.RELIABLE, until=NOW.date() + timedelta(days=7), by="ada",
                             reason="a regular for ten years")  # fmt: skip
        sloppy.refresh_from_db()
        assert effective_tier(sloppy) == Tier.RELIABLE
        assert score_of(sloppy)[:2] == (33, Tier.RISKY)  # the computed score stays
    annotated = Customer.objects.annotate(tier=effective_tier_expression(today=NOW.date())).order_by("name")
    assert list(annotated.values_list("name", "tier")) == [("Newcomer", "new"), ("Sloppy", "reliable")]
    assert ranked_candidates(NOW) == [sloppy.pk, newcomer.pk]  # no longer last: 33 before 25
    slot = make.appointment(make.customer(shop, "Gone"), NOW + timedelta(days=1), Outcome.PENDING)
    Appointment.objects.filter(pk=slot.pk).update(cancelled_at=NOW)
    offers.offer_loop(Context(now=NOW), limit=10)  # the real loop gives the slot to the first in that order
    assert list(SlotOffer.objects.values_list("customer_id", flat=True)) == [sloppy.pk]
    SlotOffer.objects.all().delete()

    last_day = NOW + timedelta(days=7)
    assert ranked_candidates(last_day) == [sloppy.pk, newcomer.pk]  # the last day is inclusive
    with time_machine.travel(last_day + timedelta(days=1), tick=False):
        assert effective_tier(sloppy) == Tier.RISKY  # lapsed by itself
        assert adjustments.standing(sloppy.pk).pinned_until is None
    assert ranked_candidates(last_day + timedelta(days=1)) == [newcomer.pk, sloppy.pk]


def test_pinning_a_tier_validates_and_ending_a_pin_is_logged():
    customer = make.customer()
    with pytest.raises(AdjustmentError, match="Unknown tier"):
        adjustments.pin_tier(customer.pk, "gold", until=NOW.date(), by="ada", reason="x", now=NOW)
    with pytest.raises(AdjustmentError, match="has passed"):
        adjustments.pin_tier(customer.pk, "risky", until=NOW.date() - timedelta(days=1), by="ada", reason="x", now=NOW)
    with pytest.raises(AdjustmentError, match="no pin to end"):
        adjustments.unpin_tier(customer.pk, by="ada", reason="x", now=NOW)
    adjustments.pin_tier(customer.pk, "risky", until=NOW.date(), by="ada", reason="shouted at staff", now=NOW)
    assert adjustments.standing(customer.pk, today=NOW.date()).effective_tier == Tier.RISKY
    ended = adjustments.unpin_tier(customer.pk, by="ben", reason="apologised", now=NOW)
    assert (ended.effective_tier, ended.pinned_until) == (Tier.NEW, None)
    log = Adjustment.objects.order_by("id").values_list("action", "tier", "until", "by")
    assert list(log) == [("pin", "risky", NOW.date(), "ada"), ("unpin", "risky", NOW.date(), "ben")]


# The grace rule


def test_a_shops_grace_rule_forgives_the_first_no_show_in_its_days_and_leaves_staffs_decisions_alone():
    generous, strict = make.shop("Generous"), make.shop("Strict")
    generous.grace_days = 30
    generous.save()
    ada, ben = make.customer(generous, "Ada"), make.customer(strict, "Ben")
    first = make.appointment(ada, NOW - timedelta(days=100), Outcome.NO_SHOW)
    make.appointment(ada, NOW - timedelta(days=90), Outcome.NO_SHOW)  # 10 days after another: not forgiven
    again = make.appointment(ada, NOW - timedelta(days=40), Outcome.NO_SHOW)  # 50 days after the last: forgiven
    late = make.appointment(ada, NOW - timedelta(days=5), Outcome.LATE_CANCEL)  # not a no-show
    long_ago = make.appointment(ada, NOW - timedelta(days=300), Outcome.NO_SHOW)  # outside the window
    make.appointment(ben, NOW - timedelta(days=10), Outcome.NO_SHOW)  # a shop without the rule
    ctx = Context(now=NOW, params={"shop": None, "full": False})

    result = scoring_jobs.recompute_scores(ctx)

    assert result.counters["forgiven"] == 2
    forgiven = set(Appointment.objects.filter(forgiven=True).values_list("pk", flat=True))
    assert forgiven == {first.pk, again.pk}
    assert late.pk not in forgiven and long_ago.pk not in forgiven
    log = Adjustment.objects.values_list("appointment_id", "by", "action", "reason")
    reason = "The shop's grace rule: the first no-show in 30 days."
    assert set(log) == {(first.pk, "grace rule", "forgive", reason), (again.pk, "grace rule", "forgive", reason)}
    assert score_of(ada)[2:] == (0, 1)  # scored in the same run, without them
    # Staff undo one: the rule never forgives it again, and a second run changes nothing.
    adjustments.forgive(again.pk, by="ada", reason="it was not their first", undo=True, now=NOW)
    result = scoring_jobs.recompute_scores(Context(now=NOW + timedelta(hours=1), params={"shop": None, "full": False}))
    assert result.counters["forgiven"] == 0
    assert set(Appointment.objects.filter(forgiven=True).values_list("pk", flat=True)) == {first.pk}
    assert Adjustment.objects.count() == 3
    assert stored() == full_recompute(NOW + timedelta(hours=1))


# The append-only log


@pytest.mark.parametrize(
    "statement", ["UPDATE scoring_adjustment SET reason = 'rewritten'", "DELETE FROM scoring_adjustment"]
)
def test_the_database_refuses_to_change_or_delete_a_log_entry(statement):
    _customer, no_show = regular_with_a_no_show()
    adjustments.forgive(no_show.pk, by="ada", reason="called ahead")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        Adjustment.objects.all().update(by="someone else")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        Adjustment.objects.all().delete()
    assert list(Adjustment.objects.values_list("by", "reason")) == [("ada", "called ahead")]
