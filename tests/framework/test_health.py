from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobs.health import ago, cadence, describe, health
from jobs.models import JobRun, Status, Trigger
from jobs.registry import JOBS

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)  # the daily 02:00 run is 10 h past


def ran(job: str, status: Status, hours_ago: float) -> JobRun:
    return JobRun.objects.create(
        job=job, trigger=Trigger.CRON, status=status, started_at=NOW - timedelta(hours=hours_ago), lock_id=1
    )


def verdict(job: str = "nightly") -> tuple[str, str]:
    result = health(JOBS[job], NOW)
    return result.verdict, result.note


def test_a_job_without_runs_is_never_run():
    assert verdict()[0] == "never run"


def test_a_daily_job_that_succeeded_after_its_last_expected_time_is_ok():
    ran("nightly", Status.SUCCEEDED, hours_ago=9.5)
    assert verdict() == ("ok", "")


def test_a_daily_job_without_success_since_its_last_expected_time_is_late():
    ran("nightly", Status.SUCCEEDED, hours_ago=34)
    assert verdict() == ("late", "Expected a run at 2026-06-10 02:00 UTC; last success 34 h ago, expected daily.")


def test_a_late_start_within_the_grace_is_not_late_yet():
    ran("nightly", Status.SUCCEEDED, hours_ago=24)
    assert health(JOBS["nightly"], datetime(2026, 6, 10, 2, 30, tzinfo=UTC)).verdict == "ok"


@pytest.mark.parametrize("status", [Status.FAILED, Status.PARTIAL, Status.ABANDONED])
def test_a_job_whose_last_finished_run_did_not_succeed_is_failing(status):
    ran("nightly", Status.SUCCEEDED, hours_ago=20)
    last = ran("nightly", status, hours_ago=9)
    ran("nightly", Status.SKIPPED, hours_ago=1)  # a skip says nothing about health
    assert verdict() == ("failing", f"Last run #{last.pk} {status}.")


def test_a_live_run_is_running_and_a_run_that_never_finished_is_failing():
    ran("nightly", Status.RUNNING, hours_ago=0.01)
    assert verdict()[0] == "running"
    JobRun.objects.update(started_at=NOW - timedelta(hours=3))
    assert verdict()[0] == "failing" and "never finished" in verdict()[1]


def test_a_frequent_job_is_late_once_it_misses_runs_for_longer_than_the_grace():
    ran("frequent", Status.SUCCEEDED, hours_ago=0.5)
    assert verdict("frequent")[0] == "ok"
    JobRun.objects.update(started_at=NOW - timedelta(hours=2))
    assert verdict("frequent")[0] == "late" and "expected every 5 min" in verdict("frequent")[1]


def test_an_unscheduled_job_is_never_late():
    ran("on-demand", Status.SUCCEEDED, hours_ago=24 * 30)
    assert verdict("on-demand")[0] == "ok"


def test_words_for_schedules_and_durations():
    assert describe("0 2 * * *") == "At 02:00 UTC"
    assert describe(None).startswith("Not scheduled")
    assert (cadence("0 0 * * *"), cadence("*/5 * * * *")) == ("daily", "every 5 min")
    assert [ago(timedelta(seconds=s)) for s in (5, 600, 26 * 3600, 5 * 86400)] == ["5 s", "10 min", "26 h", "5 d"]


def test_the_next_expected_run_follows_the_schedule():
    assert health(JOBS["nightly"], NOW).next_run == datetime(2026, 6, 11, 2, 0, tzinfo=UTC)
    assert health(JOBS["on-demand"], NOW).next_run is None
