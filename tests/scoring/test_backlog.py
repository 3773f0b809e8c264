"""Each scoring job says how far behind it is; the health verdicts read it (jobs/health.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.context import Backlog
from jobs.health import health
from jobs.models import JobRun, Status, Trigger
from jobs.registry import JOBS
from scoring.models import Appointment, OfferStatus, Outcome, SlotOffer, WaitlistEntry
from tests import factories as make
from tests.factories import NOW

pytestmark = pytest.mark.django_db


def test_appointments_left_pending_longer_than_the_lag_make_resolve_outcomes_behind(settings):
    customer = make.customer()
    make.appointment(customer, NOW - timedelta(hours=10), Outcome.PENDING)  # due 9 h ago: a day may pass
    result = health(JOBS["resolve-outcomes"], NOW)
    assert (result.verdict, result.backlog.due) == ("never run", 1)
    oldest = make.appointment(customer, NOW - timedelta(days=4, hours=18), Outcome.PENDING)  # ended 4 d 17 h ago
    result = health(JOBS["resolve-outcomes"], NOW)
    assert (result.verdict, result.backlog.due, result.backlog.oldest) == (
        "behind",
        2,
        oldest.ends_at + timedelta(hours=1),
    )
    assert "Behind: 2 due, the oldest due since 2026-05-27 19:30 UTC (4 d, more than 26 h)." in result.note
    settings.JOBS_MAX_LAG_MINUTES = {"RESOLVE_OUTCOMES_MAX_LAG_MINUTES": 7 * 24 * 60}  # the operator allows a week
    assert health(JOBS["resolve-outcomes"], NOW).verdict == "never run"
    Appointment.objects.filter(pk=oldest.pk).update(outcome=Outcome.NO_SHOW, resolved_at=NOW)
    assert health(JOBS["resolve-outcomes"], NOW).backlog.due == 1


def test_offers_left_pending_past_their_expiry_make_expire_offers_behind():
    shop = make.shop()
    slot = make.appointment(make.customer(shop), NOW + timedelta(days=1), Outcome.PENDING)
    Appointment.objects.filter(pk=slot.pk).update(cancelled_at=NOW - timedelta(hours=2))
    waiting = make.customer(shop)
    entry = WaitlistEntry.objects.create(shop=shop, customer=waiting)
    SlotOffer.objects.create(slot=slot, entry=entry, customer=waiting, status=OfferStatus.PENDING,
                             offered_at=NOW - timedelta(hours=1), expires_at=NOW - timedelta(minutes=45))  # fmt: skip
    result = health(JOBS["expire-offers"], NOW)
    assert (result.verdict, result.backlog.due) == ("behind", 1)
    SlotOffer.objects.update(expires_at=NOW - timedelta(minutes=10))  # within the 30 minutes' lag
    assert health(JOBS["expire-offers"], NOW).verdict == "never run"


def test_recompute_scores_counts_the_customers_marked_and_not_rescored():
    make.customer()
    make.customer()
    assert health(JOBS["recompute-scores"], NOW).backlog.due == 2


ROUND_TRIPS = {"resolve-outcomes": 1, "expire-offers": 1, "recompute-scores": 2}


@pytest.mark.parametrize("job", ROUND_TRIPS)
def test_a_backlog_is_read_in_a_statement_or_two_whatever_is_due(job, django_assert_num_queries):
    """Health reads every scoring job's backlog on each call (uptime monitors: every minute): each is a round trip."""
    customer = make.customer()
    for days in range(1, 4):
        make.appointment(customer, NOW - timedelta(days=days), Outcome.PENDING)
    with django_assert_num_queries(ROUND_TRIPS[job]):
        JOBS[job].backlog(NOW)


def test_a_backlog_counts_up_to_a_bound_and_still_finds_the_oldest(monkeypatch):
    """Past Backlog.COUNTED the count says "more than": it reads a bounded number of rows, the oldest first."""
    monkeypatch.setattr(Backlog, "COUNTED", 3)
    customer = make.customer()
    for days in range(1, 6):
        make.appointment(customer, NOW - timedelta(days=days), Outcome.PENDING)
    oldest = make.appointment(customer, NOW - timedelta(days=9), Outcome.PENDING)  # the last row written
    found = JOBS["resolve-outcomes"].backlog(NOW)
    assert (found.due, found.oldest) == (4, oldest.ends_at + timedelta(hours=1))
    assert "Behind: more than 3 due, the oldest due since" in health(JOBS["resolve-outcomes"], NOW).note
    Appointment.objects.exclude(pk=oldest.pk).update(outcome=Outcome.NO_SHOW, resolved_at=NOW)
    assert str(JOBS["resolve-outcomes"].backlog(NOW)) == "1 due"
    assert Backlog.counted(Appointment.objects.all()) == 4  # 6 rows: counted up to the bound too


def test_health_with_the_scoring_jobs_makes_seven_round_trips(settings, client):
    """Every job on time, one behind: the framework's three statements (alert states, every job's latest runs, the
    outbox) and the backlogs' (1 + 1 + 2)."""
    settings.CRON_SECRET = "s3cret-for-tests-0123456789abcdef"
    make.appointment(make.customer(), NOW - timedelta(days=3), Outcome.PENDING)
    now = timezone.now()
    JobRun.objects.bulk_create(  # every job on time (a job never run reads when the ledger began, to say it is late)
        JobRun(job=name, trigger=Trigger.CRON, status=Status.SUCCEEDED, started_at=now, finished_at=now, lock_id=1)
        for name in JOBS
    )
    headers = {"Authorization": f"Bearer {settings.CRON_SECRET}"}
    client.get("/api/jobs/health", headers=headers)  # the first check opens what it finds: then the steady state
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/jobs/health", headers=headers).status_code == 503
    assert len(queries) == 3 + sum(ROUND_TRIPS.values()), "\n".join(query["sql"][:150] for query in queries)
