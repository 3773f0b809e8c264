"""Why a customer has their score (scoring/explain.py): the numbers are the rule's, every appointment is accounted
for, and the page costs the same few queries whatever the customer's history."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from fractions import Fraction

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring import scores
from scoring.explain import LISTED, explain
from scoring.models import Action, Adjustment, Appointment, CustomerScore, Outcome, ScoreChange, Tier
from scoring.rules import score_for, score_formula
from tests import factories as make
from tests.factories import NOW
from tests.helpers import outside_a_run

pytestmark = pytest.mark.django_db
WINDOW = timedelta(days=180)


def recompute(now, **kwargs):
    return outside_a_run(scores.recompute_scores, now, **kwargs)


def evaluate(formula: str) -> tuple[str, Fraction, int]:
    """The general form, the exact value of the filled-in expression, and the result the formula states."""
    general, filled, result = formula.split(" = ")
    match = re.fullmatch(r"100 x (\d+) / \((\d+)\+(\d+)\+(\d+(?:\.5)?)\+2\)", filled)
    assert match, filled
    top, a, n, half = match.groups()
    return general, Fraction(100 * int(top)) / (int(a) + int(n) + Fraction(half) + 2), int(result)


def test_the_formula_is_written_out_as_the_issue_shows_it():
    assert score_formula(0, 2, 3) == "100 x (A+1) / (A+N+L/2+2) = 100 x 1 / (0+2+1.5+2) = 18"


@given(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000))
def test_the_filled_in_formula_rounds_half_up_to_the_rules_score(attended, no_shows, late_cancels):
    general, exact, stated = evaluate(score_formula(attended, no_shows, late_cancels))
    assert general == "100 x (A+1) / (A+N+L/2+2)"
    assert int(exact + Fraction(1, 2)) == stated == score_for(attended, no_shows, late_cancels).score


outcomes = st.sampled_from(list(Outcome))
offsets = st.integers(min_value=-200 * 24, max_value=10 * 24)  # hours from the run: past and future
histories = st.lists(st.tuples(offsets, outcomes), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories, later=st.integers(0, 72))
def test_the_explained_numbers_are_the_stored_score_and_the_rule_for_random_histories(history, later):
    with transaction.atomic():
        customer = make.customer()
        for hours, outcome in history:
            make.appointment(customer, NOW + timedelta(hours=hours), outcome)
        recompute(NOW)
        stored = CustomerScore.objects.get(customer=customer)
        e = explain(customer.pk, NOW + timedelta(hours=later))  # looked at some hours after the run

        assert (e.window_start, e.window_end) == (NOW - WINDOW, NOW)
        counts = (e.counts.attended, e.counts.no_shows, e.counts.late_cancels, e.counts.cancellations)
        assert counts == (stored.attended, stored.no_shows, stored.late_cancels, stored.cancellations)
        assert e.counts.score == score_for(*counts[:3]) == (stored.score, stored.tier)
        assert e.agrees and not e.marked
        assert evaluate(e.counts.formula)[2] == stored.score
        # Every appointment is listed once, and those that count are exactly what the counts count.
        listed = e.counted + e.not_counted + e.unresolved
        assert sorted(line.appointment.pk for line in listed) == sorted(
            Appointment.objects.values_list("pk", flat=True)
        )
        tally = Counter(line.appointment.outcome for line in e.counted)
        assert (tally[Outcome.ATTENDED], tally[Outcome.NO_SHOW], tally[Outcome.LATE_CANCEL]) == counts[:3]
        in_window = [line for line in e.not_counted if NOW - WINDOW <= line.appointment.starts_at < NOW]
        assert all(line.appointment.outcome in (Outcome.CANCELLED, Outcome.PENDING) for line in in_window)
        assert sum(line.appointment.outcome == Outcome.CANCELLED for line in in_window) == counts[3]
        transaction.set_rollback(True)


def test_the_window_includes_its_start_and_excludes_its_end_as_the_job_s():
    customer = make.customer()
    first = make.appointment(customer, NOW - WINDOW, Outcome.NO_SHOW)
    before = make.appointment(customer, NOW - WINDOW - timedelta(microseconds=1), Outcome.NO_SHOW)
    end = make.appointment(customer, NOW, Outcome.NO_SHOW)
    recompute(NOW)
    e = explain(customer.pk, NOW + timedelta(hours=2))
    assert [line.appointment.pk for line in e.counted] == [first.pk]
    assert {line.appointment.pk for line in e.not_counted} == {before.pk, end.pk}
    assert e.counts.no_shows == CustomerScore.objects.get(customer=customer).no_shows == 1


def test_each_appointment_that_does_not_count_says_why():
    customer = make.customer()
    old = make.appointment(customer, NOW - WINDOW - timedelta(days=1), Outcome.NO_SHOW)
    cancelled = make.appointment(customer, NOW - timedelta(days=3), Outcome.CANCELLED)
    forgiven = make.appointment(customer, NOW - timedelta(days=4), Outcome.NO_SHOW)
    booked = make.appointment(customer, NOW + timedelta(days=2), Outcome.PENDING)
    unresolved = make.appointment(customer, NOW - timedelta(hours=5), Outcome.PENDING)
    since = make.appointment(customer, NOW + timedelta(hours=1), Outcome.ATTENDED)  # after the last run's window
    late = make.appointment(customer, NOW - timedelta(days=5), Outcome.LATE_CANCEL)
    recompute(NOW)
    Appointment.objects.filter(pk=forgiven.pk).update(forgiven=True)
    entry = Adjustment.objects.create(by="mia", action=Action.FORGIVE, shop_id=customer.shop_id, customer=customer,
                                      appointment=forgiven, reason="Snowed in")  # fmt: skip

    e = explain(customer.pk, NOW + timedelta(hours=3))
    why = {line.appointment.pk: line.why for line in e.not_counted}
    assert why == {
        old.pk: "before the window",
        cancelled.pk: "cancelled in time: reported, not scored",
        forgiven.pk: "forgiven",
        booked.pk: "booked: it has not happened yet",
        since.pk: "after the window's end: the next run counts it",
    }
    assert [line.appointment.pk for line in e.unresolved] == [unresolved.pk]
    assert [(line.appointment.pk, line.why) for line in e.counted] == [(late.pk, "Late cancel")]
    assert next(line for line in e.not_counted if line.appointment.pk == forgiven.pk).adjustments == [entry]
    assert e.counts.no_shows == 0  # a forgiven no-show counts in no score
    assert [line.appointment.pk for line in e.not_counted] == [
        booked.pk,
        since.pk,
        cancelled.pk,
        forgiven.pk,
        old.pk,
    ]  # newest first


def test_a_pin_is_the_effective_tier_until_its_date_with_the_latest_pin_entry():
    customer = make.customer()
    for days in (1, 2, 3):
        make.appointment(customer, NOW - timedelta(days=days), Outcome.NO_SHOW)
    recompute(NOW)
    customer.pinned_tier, customer.pinned_until = Tier.RELIABLE, NOW.date() + timedelta(days=10)
    customer.save()
    pin = lambda reason, days: Adjustment.objects.create(  # noqa: E731
        by="mia", action=Action.PIN, shop_id=customer.shop_id, customer=customer, tier=Tier.RELIABLE,
        until=customer.pinned_until, reason=reason, at=NOW - timedelta(days=days),
    )  # fmt: skip
    pin("first", 5)
    latest = pin("a regular", 1)

    e = explain(customer.pk, NOW)
    assert (e.tier, e.effective, e.pin) == (Tier.RISKY, Tier.RELIABLE, latest)
    last_day = explain(customer.pk, NOW + timedelta(days=10))
    assert (last_day.effective, last_day.pin) == (Tier.RELIABLE, latest)  # until is inclusive
    lapsed = explain(customer.pk, NOW + timedelta(days=11))
    assert (lapsed.effective, lapsed.pin) == (Tier.RISKY, None)


def test_a_change_since_the_last_run_is_said_and_what_the_next_run_stores():
    customer = make.customer()
    make.appointment(customer, NOW - timedelta(days=1), Outcome.ATTENDED)
    recompute(NOW)
    make.appointment(customer, NOW - timedelta(days=2), Outcome.NO_SHOW)  # marks the customer
    e = explain(customer.pk, NOW)
    assert e.marked and not e.agrees
    assert (e.counts.attended, e.counts.no_shows) == (1, 1)
    recompute(NOW)
    after = explain(customer.pk, NOW)
    assert after.agrees and not after.marked and after.score.score == e.counts.score.score


def test_a_customer_not_scored_yet_is_new_over_a_window_ending_now():
    customer = make.customer()
    make.appointment(customer, NOW - timedelta(days=1), Outcome.NO_SHOW)
    e = explain(customer.pk, NOW)
    assert (e.score, e.tier, e.effective, e.window_end, e.counts.no_shows) == (None, Tier.NEW, Tier.NEW, NOW, 1)


@pytest.mark.parametrize("appointments", [3, LISTED + 30])
def test_explaining_costs_seven_queries_whatever_the_history(appointments, django_assert_num_queries):
    customer = make.customer()
    for i in range(appointments):
        make.appointment(customer, NOW - timedelta(days=i % 300, hours=i), [Outcome.ATTENDED, Outcome.NO_SHOW][i % 2])
    recompute(NOW)
    ScoreChange.objects.create(  # a score history: its days are looked up, then the customer's changes on them
        customer=customer, at=NOW - timedelta(days=3), previous_score=50, previous_tier="new", score=40, tier="new"
    )
    with django_assert_num_queries(7):
        e = explain(customer.pk, NOW)
    assert [change.score for change in e.history] == [40]
    assert e.more == (appointments > LISTED)
    assert len(e.counted) + len(e.not_counted) + len(e.unresolved) == min(appointments, LISTED)
    stored = CustomerScore.objects.get(customer=customer)
    assert (e.counts.attended, e.counts.no_shows) == (stored.attended, stored.no_shows)  # the whole window
