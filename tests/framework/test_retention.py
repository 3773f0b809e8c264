from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.context import Context
from jobs.models import JobRun, Status, Trigger
from jobs.retention import prune_job_runs
from tests.helpers import outside_a_run

pytestmark = pytest.mark.django_db


def runs(job: str, days_ago: int, count: int = 1, status: Status = Status.SUCCEEDED) -> list[JobRun]:
    started_at = timezone.now() - timedelta(days=days_ago)
    return JobRun.objects.bulk_create(
        JobRun(job=job, trigger=Trigger.CRON, status=status, started_at=started_at, lock_id=1) for _ in range(count)
    )


def test_it_deletes_old_runs_in_batches_and_keeps_recent_running_and_latest_ones(settings):
    settings.JOB_RUNS_RETENTION_DAYS = 90
    old = runs("nightly", 100, count=25)
    recent = runs("nightly", 10)
    stuck = runs("frequent", 200, status=Status.RUNNING)
    only_old = runs("on-demand", 300, count=3)  # the latest of these stays

    counters = outside_a_run(prune_job_runs, timezone.now(), batch_size=10)

    assert counters == {"deleted": 27, "remaining": 0, "errors": []}
    left = set(JobRun.objects.values_list("id", flat=True))
    assert left == {recent[0].id, stuck[0].id, only_old[-1].id}
    assert not left & {run.id for run in old}


def test_out_of_time_it_stops_after_one_batch_and_says_how_many_remain():
    runs("nightly", 400, count=5)
    runs("nightly", 1)
    result = prune_job_runs(Context(now=timezone.now(), deadline=0.0), batch_size=2)
    assert (result.counters, result.remaining) == ({"deleted": 2}, 3)
