"""A job's schedule read in its declared time zone, across daylight-saving changes; a jitter window widens the grace."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.test import Client
from django.utils import dateformat

from jobs import checks, timefmt
from jobs.health import describe, health, ledger_began, missed_runs
from jobs.models import JobRun, Status, Trigger
from jobs.registry import JOBS, Job
from tests.framework.testjobs import write

pytestmark = pytest.mark.django_db
SECRET = "s3cret-for-tests-0123456789abcdef"
# 09:00 in Berlin: 08:00 UTC in winter (CET), 07:00 UTC in summer (CEST). Clocks go forward on Sunday 2026-03-29
# and back on Sunday 2026-10-25.
BERLIN = Job("berlin", 990020, write, "Every morning at nine, Berlin time.", "0 9 * * *", timezone="Europe/Berlin")


@pytest.fixture(autouse=True)
def declared(monkeypatch, settings):
    monkeypatch.setitem(JOBS, BERLIN.name, BERLIN)
    settings.CRON_SECRET = SECRET


def ran(at: datetime, job: str = "berlin") -> JobRun:
    return JobRun.objects.create(job=job, trigger=Trigger.CRON, status=Status.SUCCEEDED, started_at=at, lock_id=1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("last_run", "due", "side"),
    [
        ("2026-03-27 08:00:07", "2026-03-28 08:00", "winter, the day before clocks go forward"),
        ("2026-03-28 08:00:07", "2026-03-29 07:00", "summer, the day clocks go forward"),
        ("2026-10-24 07:00:07", "2026-10-25 08:00", "winter again, the day clocks go back"),
    ],
)
def test_a_job_at_nine_in_berlin_is_late_at_the_right_utc_time_on_both_sides_of_a_dst_change(last_run, due, side):
    ran(at(last_run))
    due_at = at(due)
    assert health(BERLIN, due_at - timedelta(minutes=1)).next_run == due_at, side
    on_time = health(BERLIN, due_at + timedelta(minutes=59))  # within the hour's grace
    assert (on_time.verdict, on_time.late) == ("ok", False), side
    late = health(BERLIN, due_at + timedelta(hours=1, seconds=1))
    assert late.verdict == "late", side
    assert f"the run due at {due} UTC has not come" in late.note, side


def test_the_health_endpoint_says_late_and_the_next_run_in_utc_across_the_change():
    ran(at("2026-03-28 08:00:07"))
    with time_machine.travel(at("2026-03-29 08:00:30"), tick=False):
        response = Client().get("/api/jobs/health", headers={"Authorization": f"Bearer {SECRET}"})
    entry = json.loads(response.content)["jobs"]["berlin"]
    assert (entry["verdict"], entry["nextRunAt"]) == ("late", "2026-03-30T07:00:00Z")


def test_missed_runs_are_counted_against_berlin_mornings():
    ran(at("2026-03-26 08:00:07"))  # the ledger begins
    arrivals = [at("2026-03-28 08:00:07"), at("2026-03-29 07:00:07"), at("2026-03-30 07:00:07")]
    start, end, began = at("2026-03-27 12:00"), at("2026-03-30 12:00"), ledger_began()
    assert missed_runs(BERLIN, start, end, arrivals, began) == 0
    assert missed_runs(BERLIN, start, end, [arrivals[0], arrivals[2]], began) == 1
    # A call at 09:00 UTC would answer no Berlin morning of summer time in time: those are at 07:00 UTC.
    assert missed_runs(BERLIN, start, end, [at("2026-03-28 08:00:07"), at("2026-03-30 09:00:00")], began) == 1


def test_a_jitter_window_widens_the_grace(monkeypatch):
    jittery = Job("jittery", 990021, write, "Daily, started within 10 minutes.", "0 2 * * *",
                  jitter=timedelta(minutes=10))  # fmt: skip
    monkeypatch.setitem(JOBS, jittery.name, jittery)
    ran(at("2026-06-09 02:04:00"), job="jittery")
    due = at("2026-06-10 02:00")
    assert jittery.grace_period == timedelta(hours=1, minutes=10)
    assert health(jittery, due + timedelta(hours=1, minutes=9)).verdict == "ok"
    assert health(jittery, due + timedelta(hours=1, minutes=10, seconds=1)).verdict == "late"


def test_schedules_are_described_in_their_zone_and_an_unknown_zone_is_a_declaration_error(monkeypatch):
    assert describe(BERLIN.schedule, BERLIN.timezone) == "At 09:00 Europe/Berlin"
    monkeypatch.setattr(
        checks,
        "DECLARED",
        [
            BERLIN,
            Job("nowhere", 990022, write, "x", "0 9 * * *", timezone="Europe/Atlantis", jitter=timedelta(seconds=30)),
        ],
    )
    assert [m.id for m in checks.declarations_are_consistent(None)] == ["jobs.E005", "jobs.E006"]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kathmandu"])
def test_times_on_the_jobs_pages_read_as_django_s_formats_spell_them_in_utc(zone):
    """timefmt.utc spells with strftime what DATETIME_FORMAT / DATETIME_SECONDS_FORMAT say (the domain's pages
    use those through Django): a time reads one way on every page, whatever zone it was read in."""
    moment = datetime(2026, 3, 29, 0, 59, 7, 999_999, tzinfo=UTC).astimezone(ZoneInfo(zone))
    for seconds, spelled in ((False, timefmt.DATETIME_FORMAT), (True, timefmt.DATETIME_SECONDS_FORMAT)):
        assert timefmt.utc(moment, seconds=seconds) == dateformat.format(moment.astimezone(UTC), spelled)
    assert timefmt.utc(moment, seconds=True) == "2026-03-29 00:59:07 UTC"
