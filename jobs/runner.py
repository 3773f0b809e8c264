"""The one runner behind every way a job starts: Vercel Cron, the shell, the admin."""

from __future__ import annotations

import logging
import re
import time
import traceback
import uuid
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import connection, transaction
from django.utils import timezone

from jobs import locks
from jobs.models import JobRun, Status, Trigger
from jobs.registry import JOBS, Job
from scoring.models import Shop

logger = logging.getLogger("jobs")

LIMIT_DEFAULT = 200
LIMIT_MAX = 1000
_TRUE, _FALSE = {"", "1", "true", "yes"}, {"0", "false", "no"}


class UnknownJob(LookupError):
    pass


class ParamError(ValueError):
    """A parameter a caller got wrong; `param` is its canonical name (shop, limit, ...)."""

    def __init__(self, param: str, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.param, self.message, self.status = param, message, status


@dataclass(frozen=True)
class Params:
    shop: uuid.UUID | None = None
    limit: int = LIMIT_DEFAULT
    lock_id: int | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class RunResult:
    run: JobRun
    body: dict[str, Any]

    @property
    def http_status(self) -> int:
        return 500 if self.run.status == Status.FAILED else 200

    @property
    def exit_code(self) -> int:
        return {Status.SUCCEEDED: 0, Status.SKIPPED: 75}.get(Status(self.run.status), 1)


def get_job(name: str) -> Job:
    try:
        return JOBS[name]
    except KeyError:
        raise UnknownJob(name) from None


def parse_params(job: Job, raw: Mapping[str, str | None]) -> Params:
    """Turn text parameters (query string, command line) into checked values.

    Keys are the canonical names: shop, limit, lock_id, dry_run. Missing or
    None means "not given". Raises ParamError naming the parameter.
    """
    shop = lock_id = None
    limit = LIMIT_DEFAULT
    if (text := raw.get("shop")) is not None:
        if "shop" not in job.accepts:
            raise ParamError("shop", f"{job.name} does not take a shop")
        try:
            shop = uuid.UUID(text)
        except ValueError:
            raise ParamError("shop", "must be a shop's UUID") from None
        if not Shop.objects.filter(pk=shop).exists():
            raise ParamError("shop", "no shop has this id", status=404)
    if (text := raw.get("limit")) is not None:
        if "limit" not in job.accepts:
            raise ParamError("limit", f"{job.name} does not take a limit")
        limit = min(_integer("limit", text, low=1), LIMIT_MAX)
    if (text := raw.get("lock_id")) is not None:
        lock_id = _integer("lock_id", text, low=-(2**63), high=2**63 - 1)
    dry_run = False
    if (text := raw.get("dry_run")) is not None:
        if text.strip().lower() not in _TRUE | _FALSE:
            raise ParamError("dry_run", "must be true or false")
        dry_run = text.strip().lower() in _TRUE
    return Params(shop=shop, limit=limit, lock_id=lock_id, dry_run=dry_run)


def _integer(param: str, text: str, *, low: int, high: int | None = None) -> int:
    if not re.fullmatch(r"-?[0-9]+", text):
        raise ParamError(param, "must be a whole number")
    digits = text.lstrip("-")
    sign = -1 if text.startswith("-") else 1
    value = int(text) if len(digits) <= 20 else sign * 10**20  # any longer is out of range anyway
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ParamError(param, f"must be {bounds}")
    return value


def run_job(
    name: str,
    *,
    trigger: Trigger,
    params: Params | None = None,
    user: User | AnonymousUser | None = None,
    origin: str = "",
) -> RunResult:
    """Run a registered job under its lock and record the run.

    1. Resolve the lock id: parameter, else the <NAME>_LOCK_ID setting, else the registry's.
    2. Record the run as `running`, committed, so staff see it now and a kill leaves a trace.
    3. Take the lock without waiting. If another run holds it: `skipped`, done.
    4. Call the job with the keyword arguments it takes. It isolates its own
       items (jobs.items.item), so one failing item costs only that item.
       A dry run is rolled back.
    5. Mark older `running` rows of this job `abandoned`: they cannot be alive,
       or they would hold the lock. (Last, so that the row locks this takes on
       PostgreSQL last only as long as the commit: a live run that has just
       been skipped, or has just committed, is never kept waiting on its own row.)
    6. Record the outcome: succeeded, partial (item errors, or the time budget
       ran out with work remaining), or failed (the job raised: traceback
       stored, caller told only the run id). The lock is released on leaving
       the block, whatever happened.
    """
    job = get_job(name)
    params = params or Params()
    lock_id = next(
        choice
        for choice in (params.lock_id, getattr(settings, job.lock_setting, None), job.lock_id)
        if choice is not None
    )
    now = timezone.now()
    recorded = {
        "now": now.isoformat(),
        "lock_id": lock_id,
        **({"shop": str(params.shop)} if params.shop else {}),
        **({"limit": params.limit} if "limit" in job.accepts else {}),
        **({"dry_run": True} if params.dry_run else {}),
    }
    run = JobRun.objects.create(
        job=job.name,
        trigger=trigger,
        started_at=now,
        params=recorded,
        lock_id=lock_id,
        user=user if isinstance(user, User) else None,
        origin=origin[:255],
    )
    try:
        with locks.hold(lock_id) as held:
            if not held:
                return _finish(run, Status.SKIPPED)
            run.started_at = timezone.now()  # the work starts under the lock ...
            deadline = time.monotonic() + settings.JOBS_TIME_BUDGET_SECONDS
            counters, tb = _call(job, run, params, now, deadline)
            _mark_abandoned(run)
            run.finished_at = timezone.now()  # ... and ends before it goes: runs never overlap in the ledger
    except Exception:  # the lock or the commit failed: the job's writes are gone
        return _finish(run, Status.FAILED, tb=traceback.format_exc())
    if tb:
        return _finish(run, Status.FAILED, tb=tb)
    errors = [str(error) for error in counters.pop("errors", [])]
    out_of_time = bool(counters.get("remaining")) and time.monotonic() >= deadline
    return _finish(run, Status.PARTIAL if errors or out_of_time else Status.SUCCEEDED, counters, errors)


def _call(job: Job, run: JobRun, params: Params, now: datetime, deadline: float) -> tuple[dict[str, Any], str]:
    offered = {
        "now": now,
        "shop": params.shop,
        "limit": params.limit,
        "deadline": deadline,
        "resume_after": _resume_point(job, run, params),
    }
    kwargs = {key: value for key, value in offered.items() if key in job.accepts}
    # Inside the lock's transaction (PostgreSQL) a savepoint lets a crashed job
    # undo its own writes and still commit step 5. A dry run needs a transaction
    # to roll back. Otherwise (SQLite) each item commits on its own.
    scope = transaction.atomic() if params.dry_run or connection.in_atomic_block else nullcontext()
    try:
        with scope:
            counters = dict(job.func(**kwargs))
            if params.dry_run:
                transaction.set_rollback(True)
    except Exception:
        logger.exception("job %s run #%s failed", job.name, run.pk)
        return {}, traceback.format_exc()
    return counters, ""


def _resume_point(job: Job, run: JobRun, params: Params) -> uuid.UUID | None:
    """Where the last real run of the same scope stopped for lack of time, if it did."""
    if "resume_after" not in job.accepts:
        return None
    same_scope: dict[str, Any] = {"params__shop": str(params.shop)} if params.shop else {"params__shop__isnull": True}
    last = (
        JobRun.objects.filter(job=job.name, status__in=[Status.SUCCEEDED, Status.PARTIAL], **same_scope)
        .filter(params__dry_run__isnull=True)  # dry runs record dry_run: true; their work was rolled back
        .exclude(pk=run.pk)
        .order_by("-id")
        .values_list("counters", flat=True)
        .first()
    )
    resume = (last or {}).get("resume_after")
    return uuid.UUID(resume) if resume else None


def _mark_abandoned(run: JobRun) -> None:
    noticed = timezone.now()
    count = JobRun.objects.filter(job=run.job, status=Status.RUNNING, id__lt=run.pk).update(
        status=Status.ABANDONED,
        finished_at=noticed,
        errors=[f"abandoned: its process died mid-run; noticed by run #{run.pk}"],
        error_count=1,
    )
    if count:
        logger.warning("job %s: marked %d dead run(s) abandoned", run.job, count)


def _finish(
    run: JobRun,
    status: Status,
    counters: dict[str, Any] | None = None,
    errors: list[str] | None = None,
    tb: str = "",
) -> RunResult:
    run.status = status
    run.finished_at = run.finished_at or timezone.now()
    run.duration_ms = int((run.finished_at - run.started_at).total_seconds() * 1000)
    run.counters = counters or {}
    run.errors = errors or []
    run.error_count = len(run.errors)
    run.traceback = tb
    run.save(
        update_fields=[
            "status",
            "started_at",
            "finished_at",
            "duration_ms",
            "counters",
            "errors",
            "error_count",
            "traceback",
        ]
    )
    logger.info("job %s run #%s %s in %d ms", run.job, run.pk, status, run.duration_ms)
    return RunResult(run, _body(run))


def _body(run: JobRun) -> dict[str, Any]:
    head = {"job": run.job, "runId": run.pk, "status": run.status}
    if run.status == Status.SKIPPED:
        return {**head, "skipped": True, "reason": "locked"}
    if run.status == Status.FAILED:
        return {**head, "error": "Job failed; the traceback is on the run in the admin."}
    dry_run: dict[str, Any] = {"dryRun": True} if run.params.get("dry_run") else {}
    return {**head, **dry_run, **run.counters, "errors": run.errors}
