from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.context import Context
from jobs.models import JobRun, OutboxMessage, Status, Trigger
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

    assert counters == {"deleted": 27, "messages_deleted": 0, "remaining": 0, "errors": []}
    left = set(JobRun.objects.values_list("id", flat=True))
    assert left == {recent[0].id, stuck[0].id, only_old[-1].id}
    assert not left & {run.id for run in old}


def test_out_of_time_it_stops_after_one_batch_and_says_how_many_remain():
    runs("nightly", 400, count=5)
    runs("nightly", 1)
    result = prune_job_runs(Context(now=timezone.now(), deadline=0.0), batch_size=2)
    assert (result.counters, result.remaining) == ({"deleted": 2, "messages_deleted": 0}, 3)


def test_alert_messages_delivered_before_the_retention_period_go_and_undelivered_ones_stay(settings):
    settings.JOB_RUNS_RETENTION_DAYS = 90
    now = timezone.now()

    def message(days_ago: int, delivered: bool) -> OutboxMessage:
        at = now - timedelta(days=days_ago)
        return OutboxMessage.objects.create(job="nightly", kind="opened", channel="email", content={}, created_at=at,
                                            next_attempt_at=at, delivered_at=at if delivered else None)  # fmt: skip

    message(100, delivered=True)
    recent, stuck = message(10, delivered=True), message(100, delivered=False)
    assert outside_a_run(prune_job_runs, now)["messages_deleted"] == 1
    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {recent.pk, stuck.pk}
