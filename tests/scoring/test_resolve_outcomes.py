from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections, models
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.models import JobRun, Status, Trigger
from jobs.runner import run_job
from scoring import outcomes
from scoring.jobs import LIMIT_MAX
from scoring.models import Appointment, Outcome
from tests import factories as make
from tests.factories import NOW
from tests.helpers import outside_a_run

GRACE = timedelta(minutes=60)


def resolve_outcomes(now, **kwargs):
    return outside_a_run(outcomes.resolve_outcomes, now, **kwargs)


def pending(who, ends_ago: timedelta, **fields) -> Appointment:
    ends_at = NOW - ends_ago
    return Appointment.objects.create(
        shop_id=who.shop_id, customer=who, starts_at=ends_at - timedelta(minutes=30), ends_at=ends_at, **fields
    )


@pytest.mark.django_db
def test_it_resolves_each_kind_of_finished_appointment():
    who = make.customer()
    late = pending(who, timedelta(hours=2), cancelled_at=NOW - timedelta(hours=5))
    early = pending(who, timedelta(hours=3), cancelled_at=NOW - timedelta(days=3))
    came = pending(who, timedelta(hours=4), checked_in_at=NOW - timedelta(hours=4, minutes=30))
    missed = pending(who, timedelta(hours=5))
    recent = pending(who, GRACE - timedelta(minutes=1))  # still within the grace period

    counters = resolve_outcomes(now=NOW)

    assert counters == {"total": 4, "resolved": 2, "skipped": 0, "backfilled": 2, "remaining": 0, "errors": []}
    outcomes = dict(Appointment.objects.values_list("id", "outcome"))
    assert outcomes == {
        late.pk: Outcome.LATE_CANCEL, early.pk: Outcome.CANCELLED, came.pk: Outcome.ATTENDED,
        missed.pk: Outcome.NO_SHOW, recent.pk: Outcome.PENDING,
    }  # fmt: skip
    assert set(Appointment.objects.exclude(pk=recent.pk).values_list("resolved_at", flat=True)) == {NOW}


@pytest.mark.django_db
def test_a_cancellation_exactly_24_hours_ahead_is_not_late():
    who = make.customer()
    appointment = pending(who, timedelta(hours=2))
    appointment.cancelled_at = appointment.starts_at - timedelta(hours=24)
    appointment.save()
    resolve_outcomes(now=NOW)
    appointment.refresh_from_db()
    assert appointment.outcome == Outcome.CANCELLED


@pytest.mark.django_db
def test_it_takes_the_oldest_first_up_to_the_limit_and_says_what_remains():
    who = make.customer()
    rows = [pending(who, timedelta(hours=2 + i)) for i in range(5)]
    counters = resolve_outcomes(now=NOW, limit=2)
    assert (counters["total"], counters["resolved"], counters["remaining"]) == (2, 2, 3)
    resolved = set(Appointment.objects.exclude(outcome=Outcome.PENDING).values_list("id", flat=True))
    assert resolved == {rows[4].pk, rows[3].pk}  # the two that ended first


@pytest.mark.django_db
def test_without_a_limit_it_resolves_every_due_appointment_batch_after_batch():
    who = make.customer()
    rows = [pending(who, timedelta(hours=2, minutes=i)) for i in range(25)]
    pending(who, GRACE - timedelta(minutes=1))  # not due yet
    counters = resolve_outcomes(now=NOW, batch_size=10)
    assert (counters["total"], counters["resolved"], counters["remaining"]) == (25, 25, 0)
    assert Appointment.objects.filter(pk__in=[row.pk for row in rows], outcome=Outcome.NO_SHOW).count() == 25


@pytest.mark.django_db
def test_a_cron_run_takes_every_due_appointment_more_than_a_limit_could(settings):
    settings.RESOLVE_OUTCOMES_BATCH_SIZE = 300
    who = make.customer()
    ends = [NOW - timedelta(hours=2, minutes=i) for i in range(LIMIT_MAX + 1)]
    Appointment.objects.bulk_create(
        Appointment(shop_id=who.shop_id, customer=who, starts_at=end - timedelta(minutes=30), ends_at=end)
        for end in ends
    )
    run = run_job("resolve-outcomes", trigger=Trigger.CRON)
    assert (run.status, run.counters["total"], run.counters["remaining"]) == ("succeeded", LIMIT_MAX + 1, 0)


@pytest.mark.django_db
def test_a_given_limit_caps_the_run_across_batches_oldest_first():
    who = make.customer()
    rows = [pending(who, timedelta(hours=2, minutes=i)) for i in range(25)]
    counters = resolve_outcomes(now=NOW, limit=12, batch_size=5)
    assert (counters["total"], counters["resolved"], counters["remaining"]) == (12, 12, 13)
    resolved = set(Appointment.objects.exclude(outcome=Outcome.PENDING).values_list("id", flat=True))
    assert resolved == {row.pk for row in rows[-12:]}  # the twelve that ended first


@pytest.mark.django_db
def test_a_batch_costs_the_same_queries_whatever_its_size():
    who = make.customer()
    for i in range(200):
        pending(who, timedelta(hours=2, minutes=i))
    with CaptureQueriesContext(connection) as small:
        resolve_outcomes(now=NOW, limit=20, batch_size=10)  # 2 batches of 10
    with CaptureQueriesContext(connection) as big:
        resolve_outcomes(now=NOW, limit=180, batch_size=90)  # 2 batches of 90
    assert len(big) == len(small) <= 12


@pytest.mark.django_db
def test_out_of_time_it_stops_between_batches_and_the_next_runs_go_on(settings):
    settings.JOBS_TIME_BUDGET_SECONDS = 0  # spent as soon as the run starts: one batch per run
    settings.RESOLVE_OUTCOMES_BATCH_SIZE = 4
    who = make.customer()
    for i in range(10):
        pending(who, timedelta(hours=2, minutes=i))
    runs = [run_job("resolve-outcomes", trigger=Trigger.CRON) for _ in range(3)]
    assert [(run.status, run.counters["total"], run.counters["remaining"]) for run in runs] == [
        ("partial", 4, 6), ("partial", 4, 2), ("succeeded", 2, 0),
    ]  # fmt: skip
    assert not any(run.errors for run in runs)


@pytest.mark.django_db
def test_a_row_that_fails_is_taken_once_and_the_run_goes_on_past_it():
    who = make.customer()
    bad = pending(who, timedelta(hours=10))  # the oldest: in the first batch
    for i in range(6):
        pending(who, timedelta(hours=2, minutes=i))
    _refuse_updates_of(bad)
    counters = resolve_outcomes(now=NOW, batch_size=3)
    assert (counters["total"], counters["resolved"], counters["skipped"], counters["remaining"]) == (7, 6, 0, 1)
    assert len(counters["errors"]) == 1 and counters["errors"][0].startswith(f"appointment {bad.pk}: ")


@pytest.mark.django_db
def test_a_rerun_resolves_nothing_twice():
    who = make.customer()
    pending(who, timedelta(hours=2))
    resolve_outcomes(now=NOW)
    assert resolve_outcomes(now=NOW + timedelta(hours=1))["total"] == 0


def _refuse_updates_of(appointment: Appointment) -> None:
    """A real database error for one row: a trigger that rejects its update."""
    table = Appointment._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_update() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'refused by test trigger'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER refuse BEFORE UPDATE ON {table} FOR EACH ROW "
                f"WHEN (OLD.id = '{appointment.pk}') EXECUTE FUNCTION refuse_update()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER refuse BEFORE UPDATE ON {table} WHEN OLD.id = '{appointment.pk.hex}' "
                "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
            )


@pytest.mark.django_db
def test_an_appointment_that_fails_does_not_stop_the_batch():
    who = make.customer()
    good = [pending(who, timedelta(hours=2 + i)) for i in range(3)]
    bad = pending(who, timedelta(hours=10))
    _refuse_updates_of(bad)

    counters = resolve_outcomes(now=NOW)

    assert (counters["total"], counters["resolved"], counters["skipped"], counters["remaining"]) == (4, 3, 0, 1)
    assert len(counters["errors"]) == 1
    assert (
        counters["errors"][0].startswith(f"appointment {bad.pk}: ")
        and "refused by test trigger" in counters["errors"][0]
    )
    assert all(Appointment.objects.get(pk=a.pk).outcome == Outcome.NO_SHOW for a in good)


@pytest.mark.django_db(transaction=True)
def test_two_overlapping_runs_never_resolve_an_appointment_twice():
    """Two runs on different lock ids (so both really run) race over the same candidates."""
    who = make.customer()
    now = timezone.now()
    Appointment.objects.bulk_create(
        Appointment(
            shop_id=who.shop_id,
            customer=who,
            starts_at=now - timedelta(days=2, minutes=i),
            ends_at=now - timedelta(days=1, minutes=i),
        )
        for i in range(600)
    )
    results = []
    go = threading.Barrier(2)

    def run(lock_id: int) -> None:
        try:
            go.wait()
            results.append(run_job("resolve-outcomes", {"limit": 1000, "lock_id": lock_id}, trigger=Trigger.CLI))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(lock_id,)) for lock_id in (990101, 990102)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and all(r.status in ("succeeded", "partial") for r in results), results
    counted = sum(r.counters["resolved"] + r.counters["backfilled"] for r in results)
    assert counted == 600 == Appointment.objects.exclude(outcome=Outcome.PENDING).count()
    assert sum(r.counters["skipped"] for r in results) == sum(r.counters["total"] for r in results) - 600


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_daily_run_clears_100000_due_appointments_in_one_call():
    """The shipped schedule: once a day, no limit. 100,000 due (about six months of a 520-a-day backlog)."""
    who = make.customer()
    with connection.cursor() as cursor:  # a quarter of each outcome; every one ended at least 2 hours ago
        cursor.execute(
            f"""INSERT INTO {Appointment._meta.db_table}
                (id, shop_id, customer_id, starts_at, ends_at, checked_in_at, cancelled_at, outcome, created_at)
            SELECT gen_random_uuid(), %(shop)s, %(customer)s, e - interval '30 minutes', e,
                CASE WHEN i %% 4 = 2 THEN e - interval '25 minutes' END,
                CASE i %% 4 WHEN 0 THEN e - interval '2 hours' WHEN 1 THEN e - interval '3 days' END,
                'pending', %(now)s
            FROM generate_series(1, 100000) i,
                LATERAL (SELECT %(now)s - interval '2 hours' - i * interval '1 minute') t(e)
            """,
            {"shop": who.shop_id, "customer": who.pk, "now": timezone.now()},
        )
    started = time.monotonic()
    run = run_job("resolve-outcomes", trigger=Trigger.CRON)
    seconds = time.monotonic() - started
    print(f"\nresolve-outcomes: 100,000 due appointments in {seconds:.2f} s (run #{run.pk}: {run.counters})")
    assert run.status == Status.SUCCEEDED, run.errors
    assert run.counters == {"total": 100000, "resolved": 50000, "skipped": 0, "backfilled": 50000, "remaining": 0}
    assert dict(Appointment.objects.values_list("outcome").annotate(n=models.Count("*")).order_by()) == {
        Outcome.LATE_CANCEL: 25000, Outcome.CANCELLED: 25000, Outcome.ATTENDED: 25000, Outcome.NO_SHOW: 25000,
    }  # fmt: skip
    assert JobRun.objects.get().params.get("limit") is None
