"""The round trips of the paths that run all day: a skipped run, health, the overview, a run's fixed cost.

Each path's statements are counted (BEGIN, COMMIT and savepoints included) and bounded, so that a regression
in round trips fails here; health and the overview must make as many on a ledger ten times larger. The times
are `make bench`'s (bench/paths.py): tests assert behaviour, benchmarks report figures.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.context import Context, Result
from jobs.models import JobRun, Status, Trigger
from jobs.registry import JOBS, Job
from jobs.runner import run_job
from tests.helpers import lock_held_elsewhere

pytestmark = pytest.mark.django_db
SECRET = "s3cret-for-tests-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {SECRET}"}
FREQUENT_LOCK = 990002

# Statements per path, PostgreSQL / SQLite (where the lease is a row). None grows with the number of jobs: every
# job's latest runs are one statement. Raise one only with a reason: each is a round trip on every call, all day.
SKIP = {"postgresql": 3, "sqlite": 3}  # is the lock held, and by whom; the run's row, skipped; the gate
CHECK = 3  # the alert states, every job's latest runs, the outbox
HEALTH = CHECK  # (the test jobs have no backlog)
RUN = {"postgresql": 10 + CHECK, "sqlite": 9 + CHECK}  # a run with nothing to do (is the lock held: 1 of those,
# the price of a skip in 3), then the alert check
OVERVIEW = 2  # every job's latest runs, strip and last failure; when the ledger began (for missed runs); + per job
# its 7-day rate


@pytest.fixture(autouse=True)
def configured(settings):
    settings.CRON_SECRET = SECRET
    settings.JOBS_ALERT_EMAILS = ["ops@example.com"]
    settings.JOBS_ALERT_WEBHOOK_URL = ""


def ran(job: str, status: Status, ago: timedelta, **fields: object) -> JobRun:
    started_at = timezone.now() - ago
    return JobRun(job=job, trigger=Trigger.CRON, status=status, started_at=started_at, finished_at=started_at,
                  duration_ms=5, lock_id=1, **fields)  # fmt: skip


def history(days: int) -> None:
    """A ledger every job of which is on time, with `days` days of history behind: every 5 minutes for `frequent`
    (a skipped duplicate for one call in ten, a failure now and then), daily for the others, and each day a dry
    run and runs narrowed to one part of the work, which never speak for a job's health."""
    rows = []
    for minutes in range(1, days * 24 * 12):
        ago = timedelta(minutes=5 * minutes - 4)
        rows.append(ran("frequent", Status.FAILED if minutes % 97 == 0 else Status.SUCCEEDED, ago))
        if minutes % 10 == 0:
            rows.append(ran("frequent", Status.SKIPPED, ago - timedelta(seconds=1), held_by="run #1"))
    for day in range(days):
        for job in JOBS:
            if job != "frequent":
                rows.append(ran(job, Status.SUCCEEDED, timedelta(days=day, minutes=3)))
        rows.append(
            ran("nightly", Status.SUCCEEDED, timedelta(days=day, hours=2), params={"dry_run": True}, real=False)
        )
        rows += [ran("nightly", Status.SUCCEEDED, timedelta(days=day, hours=3, minutes=n), params={"prefix": "p"},
                     real=False) for n in range(5)]  # fmt: skip
    JobRun.objects.bulk_create(rows)


def statements(path: str, client: Client, **headers: str) -> int:
    client.get(path, headers=headers)  # the first check opens what it finds (incidents): then the steady state
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path, headers=headers)
    assert response.status_code in (200, 503), response.content[:300]
    return len(queries)


def test_health_makes_three_round_trips_whatever_the_number_of_jobs_and_the_size_of_the_ledger():
    history(days=2)
    small = statements("/api/jobs/health", Client(), **BEARER)
    before = JobRun.objects.count()
    history(days=20)
    large = statements("/api/jobs/health", Client(), **BEARER)
    assert JobRun.objects.count() > 10 * before
    assert large == small <= HEALTH, (small, large)


def test_a_new_installation_reads_when_its_ledger_began_once_whatever_the_number_of_jobs_that_never_ran():
    ran("frequent", Status.SUCCEEDED, timedelta(minutes=1)).save()  # the first run: nothing else is due yet
    never = [job for job in JOBS.values() if job.schedule and job.name != "frequent"]
    assert len(never) > 1
    assert statements("/api/jobs/health", Client(), **BEARER) == HEALTH + 1


def test_the_overview_makes_one_round_trip_per_job_and_as_many_on_a_ledger_ten_times_larger():
    user = User.objects.create_superuser("boss", password="pw-123-long")
    client = Client()
    client.force_login(user)
    history(days=2)
    small = statements("/admin/jobs/", client)
    history(days=20)
    large = statements("/admin/jobs/", client)
    page = statements("/admin/auth/", client)  # the session, the user, the app list: the admin's own
    assert large == small <= page + OVERVIEW + len(JOBS), (small, large, page)


@pytest.fixture
def noop(monkeypatch: pytest.MonkeyPatch) -> Job:
    def nothing(ctx: Context) -> Result:
        return Result({"total": 0})

    job = Job("noop", 990099, nothing, "Does nothing: what a run costs besides its work.")
    monkeypatch.setitem(JOBS, job.name, job)
    return job


def test_a_run_with_nothing_to_do_makes_a_bounded_number_of_round_trips(noop, django_assert_max_num_queries):
    history(days=2)
    run_job(noop, trigger=Trigger.CLI)
    with django_assert_max_num_queries(RUN[connection.vendor]):
        run = run_job(noop, trigger=Trigger.CLI)
    assert run.status == Status.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_a_skipped_run_over_http_makes_six_round_trips_and_names_the_holder(django_assert_max_num_queries):
    history(days=1)  # `frequent` is on time: the skip changes no verdict, and checks no alert
    with lock_held_elsewhere(FREQUENT_LOCK):
        Client().get("/api/jobs/frequent", headers=BEARER)
        with django_assert_max_num_queries(SKIP[connection.vendor]):
            response = Client().get("/api/jobs/frequent", headers=BEARER)
    body = response.json()
    assert (body["skipped"], body["status"]) == (True, "skipped")
    run = JobRun.objects.get(pk=body["runId"])
    assert (run.status, run.real, run.finished_at is not None) == (Status.SKIPPED, True, True)
    assert (
        body["heldBy"] == run.held_by and run.skip_reason == f"lock {FREQUENT_LOCK} is held by another database session"
    )


@pytest.mark.django_db(transaction=True)
def test_a_skipped_run_of_an_overdue_job_still_alerts_that_it_is_blocked_by_itself():
    """Nothing else checks here: no health request, no other run. The skipped calls alone tell the operators."""
    JobRun.objects.bulk_create(
        [ran("frequent", Status.SUCCEEDED, timedelta(minutes=80))]
        + [ran("frequent", Status.SKIPPED, timedelta(minutes=m), held_by="another database session") for m in (75, 70)]
    )
    for job in JOBS:  # the others are on time, and quiet
        if job != "frequent":
            JobRun.objects.create(job=job, trigger=Trigger.CRON, status=Status.SUCCEEDED, lock_id=1,
                                  started_at=timezone.now(), finished_at=timezone.now(), duration_ms=1)  # fmt: skip
    with lock_held_elsewhere(FREQUENT_LOCK):
        run = run_job("frequent", trigger=Trigger.CRON)
    assert run.status == Status.SKIPPED
    assert [m.subject.split(":")[0] for m in mail.outbox] == ["[jobs] frequent is blocked"]
