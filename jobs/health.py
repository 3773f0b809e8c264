"""Is every job running when it should, and did it work? The staff overview's verdicts."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from cron_descriptor import ExpressionDescriptor
from cronsim import CronSim
from django.conf import settings
from django.db import connection
from django.db.models import Count, IntegerField, Min, Q, QuerySet, Window
from django.db.models.expressions import RawSQL

from jobs.context import Backlog
from jobs.models import JobRun, Status
from jobs.registry import JOBS, Job
from jobs.timefmt import ago, utc

FINISHED = [Status.SUCCEEDED, Status.PARTIAL, Status.FAILED, Status.ABANDONED]
RESUMING_LIMIT = 3  # runs in a row that ran out of time before "resuming" becomes "failing"
SHRINKING = 3  # finished runs whose `remaining` must go down, or the job is behind
# How bad each verdict is: health's status is the worst; only 0 answers 200. The rest are 0.
SEVERITY = {"late": 1, "behind": 2, "blocked": 3, "failing": 4}


@dataclass(frozen=True)
class JobHealth:
    job: Job
    verdict: str  # ok | running | never run | resuming | late | behind | blocked | failing
    late: bool  # the run due after the last one has not come (within its grace), whatever the verdict
    expected_at: datetime | None  # when that run was due, when late
    note: str
    last_run: JobRun | None
    last_success: JobRun | None
    next_run: datetime | None
    runs: Latest  # the latest runs the verdict was made from
    backlog: Backlog | None = None  # what the job has left to do, when it can tell (and was asked)

    @property
    def status(self) -> str:
        """The verdict as health's status counts it: ok, late, behind, blocked or failing."""
        return self.verdict if self.verdict in SEVERITY else "late" if self.late else "ok"

    @property
    def schedule_in_words(self) -> str:
        return describe(self.job.schedule, self.job.timezone)


def worst(healths: list[JobHealth]) -> str:
    """Health's top-level status: the worst of the jobs' (ok when none is late, behind, blocked or failing)."""
    return max((h.status for h in healths), key=lambda status: SEVERITY.get(status, 0), default="ok")


def describe(schedule: str | None, zone: str = "UTC") -> str:
    if schedule is None:
        return "Not scheduled: started by the app or by staff"
    return f"{ExpressionDescriptor(schedule, use_24hour_time_format=True).get_description()} {zone}"


def overview(now: datetime, *, recent: int = 0, began: datetime | None = None) -> list[JobHealth]:
    """One verdict per declared job: their latest runs in one statement, then what each job's backlog says.
    `began`: when the ledger began, if read already."""
    runs = latest_runs(JOBS.values(), recent=recent)
    began = began or began_if_needed(runs)
    return [health(job, now, runs[job.name], began=began) for job in JOBS.values()]


def began_if_needed(runs: dict[str, Latest]) -> datetime | None:
    """When the ledger began, if a scheduled job has no run yet (its lateness counts from there): read once for
    all of them. None when no job needs it."""
    return (
        ledger_began()
        if any(JOBS[name].schedule and latest.last_run is None for name, latest in runs.items())
        else None
    )


def real_runs(job: Job) -> QuerySet[JobRun]:
    """The runs that speak for the job's health: not dry runs, not runs narrowed to part of the work (JobRun.real).
    Newest first, in the order of the indexes that answer "the last real run" (jobs/models.py)."""
    return JobRun.objects.filter(job=job.name, real=True).order_by("-started_at", "-id")


@dataclass(frozen=True)
class Latest:
    """A job's latest runs, as health and the overview read them (newest first)."""

    last_run: JobRun | None = None  # its last real run that was not skipped (it may be running)
    finished: list[JobRun] = field(default_factory=list)  # its last finished real runs
    last_success: JobRun | None = None
    last_failure: JobRun | None = None  # failed, abandoned or partial (read for the overview)
    recent: list[JobRun] = field(default_factory=list)  # its last runs of any kind (the overview's strip)


def _real(*statuses: Status) -> str:
    return '"real" AND status IN (' + ", ".join(f"'{status}'" for status in statuses) + ")"


# What latest_runs() reads of a job, each from one of the partial indexes of JobRun (jobs/models.py): the condition
# and how many rows, for its last run that was not skipped, its last finished runs, its last success, and (for the
# overview) its last failure and its last runs of any kind. The last: their ids first, from jobrun_job_recent alone
# (for whole rows, the planner would rather read the ledger's time index, in the table's order, and filter: all of it
# for a job that runs rarely).
_PARTS = [
    (f"\"real\" AND status <> '{Status.SKIPPED}'", 1),
    (_real(*FINISHED), max(RESUMING_LIMIT, SHRINKING)),
    (_real(Status.SUCCEEDED), 1),
]
_OVERVIEW = [
    (_real(Status.FAILED, Status.ABANDONED, Status.PARTIAL), 1),
    ("id IN (SELECT id FROM jobs_jobrun WHERE job = {job} ORDER BY started_at DESC, id DESC LIMIT {rows})", 0),
]


def latest_runs(jobs: Iterable[Job], *, recent: int = 0) -> dict[str, Latest]:
    """The latest runs of every one of `jobs`, in one statement whatever their number and the size of the ledger:
    a few LIMITed reads of an index per job (with `recent`, also the job's last failure and its last `recent` runs
    of any kind), in a UNION ALL. On PostgreSQL the reads are planned once for all jobs (a LATERAL join over their
    names: a UNION of every job's reads took longer to plan than to run). The runs come without their traceback
    (deferred)."""
    parts = _PARTS + ([_OVERVIEW[0], (_OVERVIEW[1][0], recent)] if recent else [])
    names = [job.name for job in jobs]
    columns = ", ".join(f'"{f.column}"' for f in JobRun._meta.concrete_fields if f.name != "traceback")

    def reads(job: str) -> str:
        return " UNION ALL ".join(
            f"SELECT * FROM (SELECT {columns}, {number} AS part FROM {JobRun._meta.db_table} WHERE job = {job} AND"
            f" {condition.format(job=job, rows=rows)} ORDER BY started_at DESC, id DESC LIMIT {rows}) part{number}"
            for number, (condition, rows) in enumerate(parts)
        )

    if connection.vendor == "postgresql":
        sql = f"SELECT runs.* FROM unnest(%s::varchar[]) AS jobs (name) CROSS JOIN LATERAL ({reads('jobs.name')}) runs"
        params: list[Any] = [names]
    else:
        sql = " UNION ALL ".join(reads("%s") for _ in names)
        params = [name for name in names for condition, _ in parts for _ in range(1 + condition.count("{job}"))]
    found: dict[str, list[list[JobRun]]] = {name: [[] for _ in parts] for name in names}
    for run in JobRun.objects.raw(sql, params) if names else []:
        found[run.job][getattr(run, "part")].append(run)  # noqa: B009  (a column of the query, not of the model)
    order = lambda run: (run.started_at, run.pk)  # noqa: E731  (a UNION keeps no order)
    latest = {}
    for name, read in found.items():
        runs = [sorted(part, key=order, reverse=True) for part in read]
        runs += [[]] * (len(_PARTS) + len(_OVERVIEW) - len(runs))  # the overview's parts, when not read
        first = [part[0] if part else None for part in runs]
        latest[name] = Latest(first[0], runs[1], first[2], first[3], runs[4])
    return latest


def overdue(job: Job, now: datetime) -> bool:
    """Whether the run due after the job's last one has not come within its grace (late, or blocked by a held lock):
    one indexed read while it is on time."""
    if job.schedule is None:
        return False
    last_run = real_runs(job).exclude(status=Status.SKIPPED).first()
    return bool(_lateness(job, now, last_run)[1])


def health(
    job: Job, now: datetime, runs: Latest | None = None, *, backlog: bool = True, began: datetime | None = None
) -> JobHealth:
    """The job's verdict: the worst of what its last runs say (failing, resuming, running), whether the run
    due after the last one has come (late, or blocked when it came and found the lock held), and whether
    its work piles up (behind: its backlog is read unless `backlog` is false).

    `runs`: its latest runs, when read already (latest_runs); `began`: when the ledger began, if read already."""
    runs = runs or latest_runs([job])[job.name]
    last_run, finished = runs.last_run, runs.finished
    next_run = scheduled(job, now, now)[0] if job.schedule else None
    verdict, note = _verdict(now, last_run, finished)
    expected_at, overdue, overdue_note = _lateness(job, now, last_run, began)
    left = job.backlog(now) if job.backlog and backlog else None
    behind = _behind(job, now, left, finished)
    if overdue and last_run is None:
        note = ""  # the overdue note says "No run yet" itself
    # The worst verdict wins; a live run explains skips and lateness.
    found = [(verdict, note)] + [(overdue, overdue_note)] * bool(overdue) + [("behind", behind)] * bool(behind)
    if verdict != "running":
        verdict, note = max(found, key=lambda pair: SEVERITY.get(pair[0], 0))
    notes = [text for name, text in found if text and name != verdict]
    note = " ".join([note, *notes]).strip()
    return JobHealth(
        job, verdict, overdue == "late", expected_at, note, last_run, runs.last_success, next_run, runs, left
    )


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
    job: Job, now: datetime, last_run: JobRun | None, began: datetime | None = None
) -> tuple[datetime | None, str, str]:
    """When the run due after the last one was due, if it has not come within the job's grace: "late" when no
    call came, "blocked" when calls came and were skipped on a held lock; and a note saying which."""
    if job.schedule is None:
        return None, "", ""
    if last_run is not None:
        since = last_run.started_at
    else:  # a new installation: nothing is due before the ledger's first run
        began = began or ledger_began()
        if began is None:
            return None, "", ""
        since = began
    due = scheduled(job, since, since)[0]
    if now < due + job.grace_period:
        return None, "", ""
    # The last call since, with how many there were and when the first came: one read.
    last_skip = (
        real_runs(job)
        .filter(status=Status.SKIPPED, started_at__gte=due)
        .annotate(count=Window(Count("id")), first=Window(Min("started_at")))
        .only("started_at", "held", "held_by", "lock_id")
        .first()
    )
    last = f"No run since {utc(since)} (#{last_run.pk})" if last_run else "No run yet"
    if last_skip is None:
        return due, "late", f"{last}; the run due at {utc(due)} has not come (expected {cadence(job.schedule)})."
    count = last_skip.count
    return (
        due,
        "blocked",
        (
            f"{last}: {count} call{'s' * (count != 1)} since {utc(last_skip.first)} found {last_skip.skip_reason}"
            f" (last at {utc(last_skip.started_at)})."
        ),
    )


def _behind(job: Job, now: datetime, backlog: Backlog | None, finished: list[JobRun]) -> str:
    """Why the job's work piles up ("" if it does not): its oldest due item waited longer than the job's lag,
    or its last runs left as much work as before or more."""
    if backlog and backlog.oldest and job.max_lag and now - backlog.oldest > job.max_lag:
        return (
            f"Behind: {backlog}, the oldest due since {utc(backlog.oldest)} ({ago(now - backlog.oldest)},"
            f" more than {ago(job.max_lag)})."
        )
    last = finished[:SHRINKING]
    left = [run.counters.get("remaining") for run in last]
    if (
        len(left) == SHRINKING
        and not any(out_of_time(run) for run in last)  # those are resuming, or failing after three
        and all(isinstance(n, int) and n > 0 for n in left)
        and left == sorted(left, reverse=True)
    ):
        shown = " -> ".join(f"{n:,}" for n in reversed(left))
        return f"Behind: the last {SHRINKING} runs left {shown}: the work is not going down."
    return ""


def missed_runs(job: Job, start: datetime, end: datetime, arrivals: list[datetime], began: datetime | None) -> int:
    """Scheduled times after `start` up to `end` that no call answered (a call, even a skipped one, answers the
    last scheduled time at or before it). Linear in the times and calls. `began`: see _due()."""
    times = _due(job, start, end, began)
    arrivals = sorted(arrivals)
    missed = 0
    for fire, after in pairwise(times):
        first = bisect_left(arrivals, fire)  # the first call at or after this time
        missed += not (first < len(arrivals) and arrivals[first] < after)
    return missed


def ledger_began() -> datetime | None:
    """When the ledger's first run started (None: no run yet): nothing is due before a new installation began."""
    return JobRun.objects.order_by("id").values_list("started_at", flat=True).first()


def _due(job: Job, start: datetime, end: datetime, began: datetime | None) -> list[datetime]:
    """The job's scheduled times after `start` up to `end`, and the one after those; none before the ledger
    `began` (ledger_began(): read once by a caller that asks for several jobs)."""
    if job.schedule is None or began is None:
        return []
    return scheduled(job, max(start, began), end)


# Each schedule's times over a window, kept by the process: the overview and health ask for nearly the same window
# again and again (7 days of a job every 5 minutes is 2,016 times, 30 ms of cron arithmetic each time).
_SCHEDULED: dict[tuple[str, str], tuple[datetime, list[datetime]]] = {}
_AHEAD = timedelta(hours=1)  # how far past the window asked for a new one reaches, so that the next asks find it


def scheduled(job: Job, start: datetime, end: datetime) -> list[datetime]:
    """The times the job's schedule fires after `start` up to `end`, and the one after those (in UTC)."""
    assert job.schedule is not None
    key = (job.schedule, job.timezone)
    since, times = _SCHEDULED.get(key, (end, []))
    if not (since <= start and times and times[-1] > end):
        since, times = start, []
        for fire in job.fires(start):
            times.append(fire)
            if fire > end + _AHEAD:
                break
        _SCHEDULED[key] = since, times
    first, last = bisect_right(times, start), bisect_right(times, end)
    return times[first : last + 1]


def week(job: Job, now: datetime, began: datetime | None) -> str:
    """The last 7 days in one phrase: how many of the runs due or made succeeded, and how many never came.
    `began`: when the ledger began (ledger_began())."""
    start = now - timedelta(days=7)
    runs = real_runs(job).filter(started_at__gte=start)  # a 7-day window, whatever the size of the ledger
    counts = {"finished": Count("id", filter=Q(status__in=FINISHED)),
              "succeeded": Count("id", filter=Q(status=Status.SUCCEEDED))}  # fmt: skip
    if job.schedule is None:  # nothing is ever missed: the counts are enough
        found = runs.aggregate(**counts)
        finished, succeeded, missed = found["finished"], found["succeeded"], 0
    elif connection.vendor == "postgresql":
        # The database says which of the intervals between scheduled times a call falls in (width_bucket: call k
        # answers times[k - 1]) and counts the intervals answered, rather than sending every call here (a job
        # every 5 minutes makes 2,016 a week: 35 ms to read). missed_runs() is the same count, in Python.
        times = _due(job, start, now - job.grace_period, began)
        edges = ",".join(str(int(time.timestamp())) for time in times)  # one text, not 2,016 parameters (5 ms)
        slot = RawSQL("width_bucket(EXTRACT(EPOCH FROM started_at), %s::float8[])", [f"{{{edges}}}"], IntegerField())
        between = Q(started_at__gte=times[0], started_at__lt=times[-1]) if times else Q(pk=None)
        found = runs.aggregate(**counts, answered=Count(slot, distinct=True, filter=between))
        finished, succeeded = found["finished"], found["succeeded"]
        missed = max(len(times) - 1, 0) - found["answered"]
    else:  # one read: the calls answer the scheduled times, and their statuses count
        calls = list(runs.values_list("started_at", "status"))
        finished = sum(status in FINISHED for _, status in calls)
        succeeded = sum(status == Status.SUCCEEDED for _, status in calls)
        missed = missed_runs(job, start, now - job.grace_period, [started_at for started_at, _ in calls], began)
    total = finished + missed
    if not total:
        return "no finished runs"
    return f"{share(succeeded, total)} of {total} succeeded" + (f" ({missed} never came)" if missed else "")


def share(part: int, whole: int) -> str:
    """`part` of `whole` as a whole percentage that is never 0 % or 100 % when it is not (1 of 598: "<1%")."""
    if 0 < part < whole / 100:
        return "<1%"
    if whole - whole / 100 < part < whole:
        return ">99%"
    return f"{part / whole:.0%}"


def cadence(schedule: str) -> str:
    """How often a schedule fires, in words ("daily", "every 5 minutes")."""
    first, second = [fire for fire, _ in zip(CronSim(schedule, datetime(2026, 1, 5)), range(2), strict=False)]
    gap = second - first
    if gap == timedelta(days=1):
        return "daily"
    return f"every {ago(gap)}"
