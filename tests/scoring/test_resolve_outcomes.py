from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from jobs.models import Trigger
from jobs.runner import run_job
from scoring import outcomes
from scoring.models import Appointment, Outcome
from tests import factories as make
from tests.factories import NOW
from tests.helpers import outside_a_run

GRACE = timedelta(minutes=60)


def resolve_outcomes(now, **kwargs):
    return outside_a_run(outcomes.resolve_outcomes, now, **{"limit": 200, **kwargs})


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
