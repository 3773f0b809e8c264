"""Is every job running when it should, and did it work? The staff overview's verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cron_descriptor import ExpressionDescriptor
from cronsim import CronSim
from django.conf import settings

from jobs.models import JobRun, Status
from jobs.registry import JOBS, Job

# Vercel may start a cron late (on Hobby, anywhere within the hour): allow that before calling it late.
GRACE = timedelta(hours=1)
FINISHED = [Status.SUCCEEDED, Status.PARTIAL, Status.FAILED, Status.ABANDONED]


@dataclass(frozen=True)
class JobHealth:
    job: Job
    verdict: str  # ok | failing | late | running | never run
    note: str
    last_run: JobRun | None
    last_success: JobRun | None
    next_run: datetime | None

    @property
    def schedule_in_words(self) -> str:
        return describe(self.job.schedule)


def describe(schedule: str | None) -> str:
    if schedule is None:
        return "Not scheduled: started by the app or by staff"
    return f"{ExpressionDescriptor(schedule, use_24hour_time_format=True).get_description()} UTC"


def overview(now: datetime) -> list[JobHealth]:
    """One verdict per registered job, from three indexed look-ups each."""
    return [health(job, now) for job in JOBS.values()]


def health(job: Job, now: datetime) -> JobHealth:
    runs = JobRun.objects.filter(job=job.name).order_by("-started_at", "-id")
    last_run = runs.exclude(status=Status.SKIPPED).first()
    last_finished = runs.filter(status__in=FINISHED).first()
    last_success = runs.filter(status=Status.SUCCEEDED).first()
    next_run = next(iter(CronSim(job.schedule, now)), None) if job.schedule else None
    verdict, note = _verdict(job, now, last_run, last_finished, last_success)
    return JobHealth(job, verdict, note, last_run, last_success, next_run)


def _verdict(
    job: Job,
    now: datetime,
    last_run: JobRun | None,
    last_finished: JobRun | None,
    last_success: JobRun | None,
) -> tuple[str, str]:
    if last_run is None:
        return "never run", "No run recorded yet."
    if last_run.status == Status.RUNNING:
        age = now - last_run.started_at
        if age < timedelta(seconds=settings.JOBS_LEASE_SECONDS):
            return "running", f"Started {ago(age)} ago."
        return "failing", f"Run #{last_run.pk} started {ago(age)} ago and never finished: its process likely died."
    if last_finished is not None and last_finished.status != Status.SUCCEEDED:
        return "failing", f"Last run #{last_finished.pk} {last_finished.status}."
    if job.schedule is not None:
        expected = next(iter(CronSim(job.schedule, now - GRACE, reverse=True)))
        if last_success is None or last_success.started_at < expected:
            since = f"last success {ago(now - last_success.started_at)} ago" if last_success else "no success yet"
            return (
                "late",
                f"Expected a run at {expected:%Y-%m-%d %H:%M} UTC; {since}, expected {cadence(job.schedule)}.",
            )
    return "ok", ""


def cadence(schedule: str) -> str:
    """How often a schedule fires, in words ("daily", "every 5 minutes")."""
    first, second = [fire for fire, _ in zip(CronSim(schedule, datetime(2026, 1, 5)), range(2), strict=False)]
    gap = second - first
    if gap == timedelta(days=1):
        return "daily"
    return f"every {ago(gap)}"


def ago(delta: timedelta) -> str:
    """A short human duration: 45 s, 12 min, 26 h, 3 d."""
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 120 * 60:
        return f"{seconds // 60} min"
    if seconds < 72 * 3600:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"
