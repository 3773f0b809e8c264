from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import takewhile

import pytest

from jobs.health import ago, cadence, describe, health, ledger_began, overview, scheduled, share, week, worst
from jobs.models import JobRun, Status, Trigger
from jobs.registry import JOBS

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)  # the daily 02:00 run is 10 h past


def ran(job: str, status: Status, hours_ago: float, **fields: object) -> JobRun:
    return JobRun.objects.create(
        job=job, trigger=Trigger.CRON, status=status, started_at=NOW - timedelta(hours=hours_ago), lock_id=1, **fields
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
    last = JobRun.objects.get()
    assert verdict() == (
        "late",
        f"No run since 2026-06-09 02:00 UTC (#{last.pk}); the run due at 2026-06-10 02:00 UTC has not come "
        "(expected daily).",
    )


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


def test_dry_runs_and_scoped_runs_never_count_for_the_verdict():
    failed = ran("nightly", Status.FAILED, hours_ago=9)
    JobRun.objects.create(job="nightly", trigger=Trigger.CLI, status=Status.SUCCEEDED, lock_id=1,
                          started_at=NOW - timedelta(hours=1), params={"dry_run": True})  # fmt: skip
    JobRun.objects.create(job="nightly", trigger=Trigger.ADMIN, status=Status.SUCCEEDED, lock_id=1,
                          started_at=NOW - timedelta(hours=0.5), params={"prefix": "x"})  # fmt: skip
    result = health(JOBS["nightly"], NOW)
    assert (result.verdict, result.last_run.pk, result.last_success) == ("failing", failed.pk, None)


def test_a_failed_run_says_why_in_the_verdict():
    ran("nightly", Status.FAILED, hours_ago=9, errors=["OperationalError: lock timeout", "item 2: x"], error_count=2)
    assert verdict() == ("failing", f"Last run #{JobRun.objects.get().pk} failed: OperationalError: lock timeout "
                                    "(and 1 more)")  # fmt: skip


def out_of_time(hours_ago: float) -> JobRun:
    return ran("nightly", Status.PARTIAL, hours_ago, counters={"total": 5, "remaining": 7, "resume_after": "5"})


def test_a_run_stopped_by_its_time_budget_is_resuming_and_three_in_a_row_are_failing():
    out_of_time(hours_ago=9.9)
    assert verdict()[0] == "resuming" and "stopped on its time budget with 7 left" in verdict()[1]
    out_of_time(hours_ago=9.8)
    assert verdict()[0] == "resuming"
    out_of_time(hours_ago=9.7)
    assert verdict() == ("failing", "Cannot finish within the time budget: the last 3 runs ran out of time.")
    ran("nightly", Status.SUCCEEDED, hours_ago=9.6)
    assert verdict()[0] == "ok"


def test_late_is_never_hidden_behind_another_verdict():
    ran("nightly", Status.FAILED, hours_ago=40)
    result = health(JOBS["nightly"], NOW)
    assert (result.verdict, result.late) == ("failing", True)
    assert "the run due at 2026-06-09 02:00 UTC has not come" in result.note
    out_of_time(hours_ago=48)
    assert health(JOBS["nightly"], NOW).late


def test_a_new_installation_is_not_late_before_its_first_expected_run():
    ran("frequent", Status.SUCCEEDED, hours_ago=0.1)  # the ledger began 6 minutes ago
    assert health(JOBS["nightly"], NOW).late is False


def test_the_7_day_rate_counts_the_days_a_daily_run_never_came():
    ran("frequent", Status.SUCCEEDED, hours_ago=24 * 9)  # the ledger began 9 days ago
    for day in (0, 1, 2, 4, 5):  # at 02:00:36 each day; none 3 and 6 days ago
        ran("nightly", Status.SUCCEEDED, hours_ago=24 * day + 10 - 0.01)
    assert week(JOBS["nightly"], NOW, ledger_began()) == "71% of 7 succeeded (2 never came)"


def test_health_is_as_bad_as_its_worst_job():
    ran("nightly", Status.SUCCEEDED, hours_ago=34)  # late
    assert worst(overview(NOW)) == "late"
    ran("frequent", Status.FAILED, hours_ago=0.01)
    assert worst(overview(NOW)) == "failing"


def test_the_scheduled_times_kept_by_the_process_are_those_of_the_schedule_for_any_window_asked_in_any_order():
    job = JOBS["frequent"]  # every 5 minutes
    rng = random.Random(7)
    start = NOW
    for _ in range(300):  # mostly a window sliding forward, as the overview asks; now and then a jump, either way
        jump = rng.random() < 0.1
        start = start.replace(second=0) + timedelta(minutes=rng.randrange(-9_000, 9_000) if jump else rng.randrange(3))
        start += timedelta(seconds=rng.choice([0, 0, 1, 59]))
        end = start + timedelta(minutes=rng.choice([0, 4, 5, 61, 7 * 24 * 60]))
        expected = list(takewhile(lambda fire, end=end: fire <= end, job.fires(start)))
        expected.append(next(job.fires(expected[-1] if expected else start)))  # and the one after
        assert scheduled(job, start, end) == expected, (start, end)


def test_a_rate_reads_0_or_100_percent_only_when_it_is():
    assert [share(n, 598) for n in (0, 1, 5, 6, 592, 597, 598)] == ["0%", "<1%", "<1%", "1%", "99%", ">99%", "100%"]
    assert [share(n, 7) for n in (0, 5, 7)] == ["0%", "71%", "100%"]
