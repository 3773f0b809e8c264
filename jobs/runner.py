"""The one runner behind every way a job starts: Vercel Cron, the shell, the admin.

It locks, records, times and isolates; it knows nothing of HTTP statuses, exit
codes or HTML (jobs/report.py and each entry point render a run their own way).
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import connection, transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from jobs import alerts, checkins, locks
from jobs.context import Context, Held, Result, one_line
from jobs.forms import COMMON, clean
from jobs.health import real_runs
from jobs.locks import retrying
from jobs.models import JobLease, JobRun, Status, Trigger
from jobs.registry import Job, get_job
from jobs.timefmt import utc

logger = logging.getLogger("jobs")
CHECKPOINT = "resume_after"  # where a run's checkpoint is kept among its counters (and shown in its JSON)


def run_job(
    job: Job | str,
    params: Mapping[str, Any] | None = None,
    *,
    trigger: Trigger,
    user: User | AnonymousUser | None = None,
    origin: str = "",
) -> JobRun:
    """Run a declared job under its lock and record the run; return the run.

    `params` are cleaned values of the job's form (jobs.forms.clean); any not given take the form's defaults.

    1. Resolve the lock id: the lock_id parameter, else the <NAME>_LOCK_ID variable, else the declaration's.
    2. If the lock is held now (one statement that takes nothing), record the run `skipped`, with who holds it,
       done: a skip costs that and its row. Otherwise record the run as `running`, committed, so staff see it now
       and a kill leaves a trace.
    3. Take the lock without waiting. If it is held (taken since 2.): `skipped`, with who holds it, done.
       (So is a run whose job finds a named lock it takes with ctx.hold held by another run.)
       On PostgreSQL the rest runs in the lock's transaction, with constraint checks
       made statement by statement (a row deleted meanwhile costs one item, not the COMMIT).
    4. Call the job with its Context: the run's `now`, the deadline of the time budget, the
       parameters, and the checkpoint of the last full run that stopped for lack of time (read if the job asks).
       Items isolate themselves (ctx.item), so one failing item costs only that item.
       A dry run is rolled back.
    5. Mark older `running` rows of this job `abandoned`: they cannot be alive, or they would
       hold the lock. Each ends when its process was last seen: the last renewal of its lease
       (read before this run took the lease over), else its start. (Last, so that the row locks
       this takes on PostgreSQL last only as long as the commit: a live run that has just been
       skipped is never kept waiting on its row.)
    6. Record the outcome: succeeded, partial (item errors, or the time budget ran out with
       work remaining), or failed (the job raised: its one-line reason in `errors`, the
       traceback stored). On PostgreSQL this write is part of the run's transaction: the
       work and its record commit together, or the row stays `running` and is later
       marked `abandoned`. The lock is released on leaving the block, whatever happened.
    Check-ins (jobs/checkins.py): a real run (not dry, not scoped) whose job has a monitor sends its start once
    it holds the lock (3.), waiting at most one attempt's deadline, and queues its end once recorded (6.).
    7. Check every job's health (reading only this job's backlog), queue the alerts that are due (jobs/alerts.py),
       and deliver what waits in the outbox for at most 2 s (jobs/outbox.py): an attempt that takes longer
       finishes in its thread.
       A skipped run does so only when its job is overdue (then it may be `blocked`): otherwise it changed no
       verdict, and the run holding the lock checks at its end (one indexed read instead of the whole check).
    """
    job = get_job(job) if isinstance(job, str) else job
    run = _run(job, {**clean(job.name, job.form, {}), **(params or {})}, trigger, user, origin)
    checkins.ended(job, run)  # the end signal, if it has a monitor; 7. delivers it
    # 7. tell operators if this job, or any other, turned failing or late (a skipped run: only if its job is overdue)
    alerts.check_quietly(timezone.now(), job, skipped=run.status == Status.SKIPPED)
    return run


def _run(job: Job, params: dict[str, Any], trigger: Trigger, user: User | AnonymousUser | None, origin: str) -> JobRun:
    lock_id = next(
        choice
        for choice in (params["lock_id"], settings.JOBS_LOCK_IDS.get(job.lock_setting), job.lock_id)
        if choice is not None
    )
    now = timezone.now()
    held, holder = locks.taken(lock_id)  # held now: the run is recorded skipped at once, in one statement
    ended = timezone.now() if held else None
    run = retrying(
        lambda: JobRun.objects.create(
            job=job.name,
            trigger=trigger,
            status=Status.SKIPPED if held else Status.RUNNING,
            started_at=now,
            finished_at=ended,
            duration_ms=_ms(now, ended) if ended else None,
            params=_recorded(now, lock_id, params),
            lock_id=lock_id,
            held_by=_held_by(holder) if held else "",
            user=user if isinstance(user, User) else None,
            origin=origin[:255],
        )
    )
    if held:
        logger.info("job %s run #%s %s in %d ms", run.job, run.pk, run.status, run.duration_ms)
        return run
    try:
        seen = _lease_renewed(lock_id)  # before this run takes the lease over (and overwrites it)
        with locks.hold(lock_id, owner=f"run #{run.pk}") as lock:
            if not lock.held:
                run.held_by = _held_by(lock.holder)
                return _finish(run, Status.SKIPPED)
            checkins.started(job, run, params)  # the start signal, if it has a monitor: at most one deadline
            run.started_at = timezone.now()  # the work starts under the lock ...
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:  # constraint checks fail the statement, not the COMMIT
                    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            ctx = Context(
                now=now,
                params={name: value for name, value in params.items() if name not in COMMON},
                deadline=time.monotonic() + settings.JOBS_TIME_BUDGET_SECONDS,
                dry_run=params["dry_run"],
                resume=(lambda: None) if job.scoped(params) else lambda: _checkpoint(job, run),
                keep_alive=lock.renew,
                hold=lock.also,
                run_id=run.pk,
            )
            result = _call(job, run, ctx)
            _mark_abandoned(run, seen)
            run.finished_at = timezone.now()  # ... and ends before it goes: runs never overlap in the ledger
            if isinstance(result, Held):
                run.held, run.held_by = result.what[:100], _held_by(result.holder)
                return _finish(run, Status.SKIPPED)
            if isinstance(result, Crash):
                return _finish(run, Status.FAILED, errors=[result.reason], tb=result.traceback)
            errors = [*ctx.errors, *result.errors]
            out_of_time = bool(result.remaining) and time.monotonic() >= ctx.deadline  # no lease renewal now
            status = Status.PARTIAL if errors or out_of_time else Status.SUCCEEDED
            # On PostgreSQL this write commits with the work, or neither does.
            return _finish(run, status, _counters(job, result), errors, tb="\n".join(ctx.tracebacks))
    except Exception as error:  # the lock, the commit or the ledger failed: on PostgreSQL the work is gone too
        logger.exception("job %s run #%s failed outside the job", job.name, run.pk)
        run.finished_at = None
        return _finish(run, Status.FAILED, errors=[one_line(error)], tb=traceback.format_exc())


def _ms(start: datetime, end: datetime) -> int:
    return int((end - start).total_seconds() * 1000)


def _held_by(holder: str | None) -> str:
    """Who holds the lock: one of our runs (it names itself in the lease, or as its session's
    application_name on PostgreSQL), or another session."""
    if holder and holder.startswith("run #"):
        return " ".join(holder.split()[:2])
    return "another database session"


def _recorded(now: datetime, lock_id: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """The run's parameters as stored on it, in JSON: what was used (a UUID as its text)."""
    given = {
        name: value if isinstance(value, str | int | float | bool) else str(value)
        for name, value in params.items()
        if name not in COMMON and value is not False and value not in (None, "")
    }
    return {"now": now.isoformat(), "lock_id": lock_id, **given, **({"dry_run": True} if params["dry_run"] else {})}


@dataclass(frozen=True)
class Crash:
    reason: str
    traceback: str


def _call(job: Job, run: JobRun, ctx: Context) -> Result | Held | Crash:
    # Inside the lock's transaction (PostgreSQL) a savepoint lets a crashed job
    # undo its own writes and still commit step 5. A dry run needs a transaction
    # to roll back. Otherwise (SQLite) each item commits on its own.
    scope = transaction.atomic() if ctx.dry_run or connection.in_atomic_block else nullcontext()
    try:
        with scope:
            result = job.func(ctx)
            if ctx.dry_run:
                transaction.set_rollback(True)
    except Held as held:  # something the job needs is another run's: it did nothing (its savepoint is undone)
        return held
    except Exception as error:
        logger.exception("job %s run #%s failed", job.name, run.pk)
        return Crash(one_line(error), traceback.format_exc())
    return result


def _counters(job: Job, result: Result) -> dict[str, Any]:
    """The result's counters in the job's declared order (others after), then its checkpoint."""
    remaining = {"remaining": result.remaining} if result.remaining is not None else {}
    counters = job.ordered({**result.counters, **remaining})
    return {**counters, CHECKPOINT: result.checkpoint} if result.checkpoint is not None else counters


def _checkpoint(job: Job, run: JobRun) -> str | None:
    """Where the last real full run stopped for lack of time, if it did (dry and scoped runs don't count)."""
    last = (
        real_runs(job)
        .filter(status__in=[Status.SUCCEEDED, Status.PARTIAL])
        .exclude(pk=run.pk)
        .values_list("counters", flat=True)
        .first()
    )
    return (last or {}).get(CHECKPOINT)


def _lease_renewed(lock_id: int) -> tuple[int, datetime] | None:
    """The run that last held this lock's lease and when it last renewed it (its expiry less JOBS_LEASE_SECONDS).

    None where there is no lease (PostgreSQL's advisory locks), or when its owner is not one of our runs.
    """
    if connection.vendor == "postgresql":
        return None
    lease = JobLease.objects.filter(lock_id=lock_id).values_list("owner", "expires_at").first()
    holder = re.match(r"run #(\d+) ", lease[0]) if lease else None
    if lease is None or holder is None:
        return None
    return int(holder[1]), lease[1] - timedelta(seconds=settings.JOBS_LEASE_SECONDS)


def _mark_abandoned(run: JobRun, seen: tuple[int, datetime] | None) -> None:
    """End the dead runs at the last time their process was seen, not when this run noticed them.

    That is the last renewal of the lease, for the run that held it (`seen`: other databases than
    PostgreSQL), and otherwise the run's start: on PostgreSQL a run is one transaction, and nothing it
    does shows before it commits. How long they ran stays unknown (no duration).
    """
    noticed = timezone.now()
    # Only runs that would hold our lock: a run of the same job under another lock id may well be alive.
    dead = JobRun.objects.filter(job=run.job, lock_id=run.lock_id, status=Status.RUNNING, id__lt=run.pk)
    marked = {
        "status": Status.ABANDONED,
        "duration_ms": None,
        "errors": [f"abandoned: its process died mid-run; noticed by run #{run.pk} at {utc(noticed, seconds=True)}"],
        "error_count": 1,
    }
    count = 0
    if seen is not None:
        holder, renewed = seen
        last_seen = Greatest("started_at", Value(renewed, output_field=DateTimeField()))
        count += dead.filter(pk=holder).update(finished_at=last_seen, **marked)
    count += dead.update(finished_at=F("started_at"), **marked)
    if count:
        logger.warning("job %s: marked %d dead run(s) abandoned", run.job, count)


def _finish(
    run: JobRun,
    status: Status,
    counters: dict[str, Any] | None = None,
    errors: list[str] | None = None,
    tb: str = "",
) -> JobRun:
    run.status = status
    run.finished_at = run.finished_at or timezone.now()
    run.duration_ms = _ms(run.started_at, run.finished_at)
    run.counters = counters or {}
    run.errors = errors or []
    run.error_count = len(run.errors)
    run.traceback = tb
    fields = ["status", "started_at", "finished_at", "duration_ms", "counters", "errors", "error_count", "traceback"]
    retrying(lambda: run.save(update_fields=[*fields, "held_by", "held"]))
    logger.info("job %s run #%s %s in %d ms", run.job, run.pk, status, run.duration_ms)
    return run
