"""The stored scores stay right when something around them changes: the window, the rule or the clock while
a full pass is cut short, a TRUNCATE, a deleted score, SQLite's INSERT OR REPLACE."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from jobs.models import JobRun, Status, Trigger
from jobs.runner import run_job
from scoring import rules
from scoring.models import Appointment, CustomerScore, Outcome, ScoringState
from tests import factories as make
from tests.scoring.test_incremental import dirty, full_recompute, stored

pytestmark = pytest.mark.django_db
CUSTOMERS = 14


@pytest.fixture
def history() -> None:
    """14 customers whose appointments lie between 10 and 170 days ago: a 90-day window sees fewer of them."""
    shop = make.shop()
    now = timezone.now()
    for i in range(CUSTOMERS):
        customer = make.customer(shop)
        for n in range(i % 6):
            outcome = [Outcome.ATTENDED, Outcome.NO_SHOW, Outcome.LATE_CANCEL][(i + n) % 3]
            make.appointment(customer, now - timedelta(days=10 + 30 * n + i), outcome)


@pytest.fixture
def one_batch_a_run(settings) -> None:
    """A time budget spent as soon as a run starts: every run scores one batch of 3, then stops."""
    settings.JOBS_TIME_BUDGET_SECONDS = 0
    settings.RECOMPUTE_SCORES_BATCH_SIZE = 3


def run() -> JobRun:
    return run_job("recompute-scores", trigger=Trigger.CRON)


def runs_until_done() -> list[JobRun]:
    runs = [run()]
    while runs[-1].status == Status.PARTIAL:
        runs.append(run())
        assert len(runs) < 20, "never finished"
    assert runs[-1].status == Status.SUCCEEDED, runs[-1].errors
    return runs


def at(run: JobRun) -> datetime:
    return datetime.fromisoformat(run.params["now"])


def test_a_window_changed_while_a_pass_is_cut_short_starts_a_new_pass_at_the_new_window(
    history, one_batch_a_run, settings
):
    first = run()  # a first full pass, at 180 days, cut short after its first batch
    assert (first.status, first.counters["total"], first.counters["remaining"]) == ("partial", 3, CUSTOMERS - 3)
    settings.RECOMPUTE_SCORES_WINDOW_DAYS = 90  # a deploy changes the window
    runs = runs_until_done()
    assert stored() == full_recompute(at(runs[-1]))  # every score at 90 days, none left at 180
    assert sum(r.counters["total"] for r in runs) == CUSTOMERS  # from the first customer again
    assert set(CustomerScore.objects.values_list("window_days", flat=True)) == {90}
    assert runs[-1].counters["drift"] == 0  # a new window is not drift


def test_a_rule_changed_while_a_pass_is_cut_short_starts_a_new_pass(history, one_batch_a_run, monkeypatch):
    assert run().status == Status.PARTIAL
    monkeypatch.setattr(rules, "RULE_VERSION", rules.RULE_VERSION + 1)
    runs = runs_until_done()
    assert sum(r.counters["total"] for r in runs) == CUSTOMERS
    assert ScoringState.objects.get().rule_version == rules.RULE_VERSION
    assert stored() == full_recompute(at(runs[-1]))


def test_a_clock_gone_back_while_a_pass_is_cut_short_starts_a_new_pass(history, one_batch_a_run):
    with time_machine.travel(timezone.now() + timedelta(days=2), tick=True):
        assert run().status == Status.PARTIAL  # begun at a `now` two days ahead
    runs = runs_until_done()
    assert sum(r.counters["total"] for r in runs) == CUSTOMERS
    assert stored() == full_recompute(at(runs[-1]))


def test_a_pass_cut_short_under_the_same_window_and_rule_goes_on_where_it_stopped(history, one_batch_a_run):
    assert run().status == Status.PARTIAL
    runs = runs_until_done()
    assert sum(r.counters["total"] for r in runs) == CUSTOMERS - 3  # the control: no restart without a change
    assert stored() == full_recompute(at(runs[-1]))


@pytest.mark.postgres
@pytest.mark.parametrize("table", ["scoring_appointment", "scoring_customerscore", "scoring_customerchange"])
def test_a_truncate_makes_the_next_run_a_full_pass(history, table):
    assert run().counters["full_pass"] == 1
    changed = Appointment.objects.filter(outcome=Outcome.ATTENDED).first()
    Appointment.objects.filter(pk=changed.pk).update(outcome=Outcome.NO_SHOW, checked_in_at=None)
    before = run()  # incremental: rescores the one customer marked
    assert (before.counters["full_pass"], before.counters["dirty"]) == (0, 1)
    Appointment.objects.filter(pk=changed.pk).update(outcome=Outcome.ATTENDED, checked_in_at=changed.starts_at)
    with connection.cursor() as cursor:  # marks the customer; a TRUNCATE of the marks would lose that
        cursor.execute(f"TRUNCATE {table} CASCADE")
    after = run()
    assert after.counters["full_pass"] == 1
    assert stored() == full_recompute(at(after))


def test_a_deleted_score_is_written_again_by_the_next_run(history):
    run()
    gone = list(CustomerScore.objects.order_by("customer_id").values_list("customer_id", flat=True)[:5])
    with connection.cursor() as cursor:  # raw SQL, as a hand at the database would
        ids = ", ".join(["%s"] * len(gone))
        prep = CustomerScore._meta.pk.get_db_prep_value
        cursor.execute(f"DELETE FROM scoring_customerscore WHERE customer_id IN ({ids})",
                       [prep(pk, connection) for pk in gone])  # fmt: skip
    after = run()
    assert (after.counters["full_pass"], after.counters["created"]) == (0, 5)
    assert stored() == full_recompute(at(after))


def test_on_sqlite_an_insert_or_replace_that_sets_an_appointment_back_to_pending_marks_its_customer(history):
    if connection.vendor != "sqlite":
        pytest.skip("INSERT OR REPLACE is SQLite's")
    run()
    resolved = Appointment.objects.exclude(outcome=Outcome.PENDING).first()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT OR REPLACE INTO scoring_appointment (id, shop_id, customer_id, starts_at, ends_at, checked_in_at,"
            " cancelled_at, outcome, resolved_at, created_at) SELECT id, shop_id, customer_id, starts_at, ends_at,"
            " NULL, NULL, 'pending', NULL, created_at FROM scoring_appointment WHERE id = %s",
            [resolved.pk.hex],
        )
    after = run()
    assert after.counters["dirty"] >= 1
    assert stored() == full_recompute(at(after))


@pytest.mark.django_db(transaction=True)  # as in production: on SQLite no transaction around a run but its own
def test_a_run_that_fails_after_the_slide_leaves_the_window_the_scores_and_the_marks_as_they_were(
    history, monkeypatch, settings
):
    leaving = make.customer()  # a no-show that leaves the window during the next day
    make.appointment(leaving, timezone.now() - timedelta(days=settings.RECOMPUTE_SCORES_WINDOW_DAYS, hours=-12),
                     Outcome.NO_SHOW)  # fmt: skip
    first = run()
    marked = make.customer()
    make.appointment(marked, timezone.now() - timedelta(days=1), Outcome.NO_SHOW)
    before, end = stored(), ScoringState.objects.get().last_now

    def broken(self, *args, **kwargs):
        raise RuntimeError("the disk is full")

    with time_machine.travel(timezone.now() + timedelta(days=1)):
        with monkeypatch.context() as patch:
            patch.setattr(ScoringState, "save", broken)  # the window's new end, recorded after the slide
            failed = run()
        assert (failed.status, failed.errors) == (Status.FAILED, ["RuntimeError: the disk is full"])
        assert stored() == before  # the slide undone with it: no score is a day ahead of the window's end
        assert ScoringState.objects.get().last_now == end == at(first)
        assert marked.pk in dirty()  # the marks kept, wherever the move left them
        after = run()
    assert after.status == Status.SUCCEEDED
    assert stored() == full_recompute(at(after))
    assert CustomerScore.objects.get(customer=leaving).no_shows == 0
