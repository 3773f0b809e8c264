"""Is every job running when it should, and did it work? The staff overview's verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cron_descriptor import ExpressionDescriptor
from cronsim import CronSim
from django.conf import settings
from django.db.models import QuerySet

from jobs.models import JobRun, Status
from jobs.registry import JOBS, Job
from jobs.timefmt import ago

FINISHED = [Status.SUCCEEDED, Status.PARTIAL, Status.FAILED, Status.ABANDONED]
RESUMING_LIMIT = 3  # runs in a row that ran out of time before "resuming" becomes "failing"


@dataclass(frozen=True)
class JobHealth:
    job: Job
    verdict: str  # ok | failing | late | running | never run | resuming
    late: bool  # no run arrived since the schedule's last expected time (plus grace), whatever the verdict
    expected_at: datetime | None  # that expected time, when late
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
    """One verdict per declared job, from a few indexed look-ups each."""
    return [health(job, now) for job in JOBS.values()]


def real_runs(job: Job) -> QuerySet[JobRun]:
    """The runs that speak for the job's health: not dry runs, not runs narrowed to part of the work."""
    full = {f"params__{name}__isnull": True for name in job.form.scope}
    return JobRun.objects.filter(job=job.name, params__dry_run__isnull=True, **full).order_by("-started_at", "-id")


def health(job: Job, now: datetime) -> JobHealth:
    runs = real_runs(job)
    last_run = runs.exclude(status=Status.SKIPPED).first()
    finished = list(runs.filter(status__in=FINISHED)[:RESUMING_LIMIT])
    last_success = runs.filter(status=Status.SUCCEEDED).first()
    next_run = next(iter(CronSim(job.schedule, now)), None) if job.schedule else None
    verdict, note = _verdict(now, last_run, finished)
    expected_at, late_note = _lateness(job, now, last_run, last_success)
    if expected_at and verdict in ("ok", "never run"):
        verdict, note = "late", f"{note} {late_note}" if verdict == "never run" else late_note
    elif expected_at:
        note = f"{note} {late_note}"
    return JobHealth(job, verdict, expected_at is not None, expected_at, note, last_run, last_success, next_run)


def out_of_time(run: JobRun) -> bool:
    """A partial run that did all it could and stopped on its time budget (the next run resumes)."""
    return run.status == Status.PARTIAL and not run.errors and bool(run.counters.get("remaining"))


def reason(run: JobRun) -> str:
    """Why a run did not succeed, in one line."""
    if out_of_time(run):
        return f"stopped on its time budget with {run.counters.get('remaining', 0):,} left"
    if not run.errors:
        return ""
    more = f" (and {run.error_count - 1:,} more)" if run.error_count > 1 else ""
    return f"{run.errors[0]}{more}"


def _verdict(now: datetime, last_run: JobRun | None, finished: list[JobRun]) -> tuple[str, str]:
    if last_run is None:
        return "never run", "No run recorded yet."
    if last_run.status == Status.RUNNING:
        age = now - last_run.started_at
        if age < timedelta(seconds=settings.JOBS_TIME_BUDGET_SECONDS + settings.JOBS_LEASE_SECONDS):
            return "running", f"Started {ago(age)} ago."
        return "failing", f"Run #{last_run.pk} started {ago(age)} ago and never finished: its process likely died."
    last = finished[0]
    if last.status == Status.SUCCEEDED:
        return "ok", ""
    if out_of_time(last):
        if len(finished) == RESUMING_LIMIT and all(out_of_time(run) for run in finished):
            return (
                "failing",
                f"Cannot finish within the time budget: the last {RESUMING_LIMIT} runs ran out of time.",
            )
        return "resuming", f"Run #{last.pk} {reason(last)}; the next run resumes there."
    why = reason(last)
    return "failing", f"Last run #{last.pk} {last.status}" + (f": {why}" if why else ".")


def _lateness(
    job: Job, now: datetime, last_run: JobRun | None, last_success: JobRun | None
) -> tuple[datetime | None, str]:
    """The schedule's last expected time, if no run has arrived since (allowing the job's grace)."""
    if job.schedule is None:
        return None, ""
    expected = next(iter(CronSim(job.schedule, now - job.grace_period, reverse=True)))
    if last_run is not None and last_run.started_at >= expected:
        return None, ""
    ledger_began = JobRun.objects.order_by("id").values_list("started_at", flat=True).first()
    if last_run is None and (ledger_began is None or ledger_began >= expected):
        return None, ""  # a new installation: not late before its first expected run
    since = f"last success {ago(now - last_success.started_at)} ago" if last_success else "no success yet"
    return expected, f"Expected a run at {expected:%Y-%m-%d %H:%M} UTC; {since}, expected {cadence(job.schedule)}."


def cadence(schedule: str) -> str:
    """How often a schedule fires, in words ("daily", "every 5 minutes")."""
    first, second = [fire for fire, _ in zip(CronSim(schedule, datetime(2026, 1, 5)), range(2), strict=False)]
    gap = second - first
    if gap == timedelta(days=1):
        return "daily"
    return f"every {ago(gap)}"
