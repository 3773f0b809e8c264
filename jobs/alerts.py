"""Operators are told, not only shown: one message when a job turns failing, blocked, behind or late, a reminder
every JOBS_ALERT_REPEAT_HOURS while it stays so, and one when it recovers.

Checked at the end of every run of any job and on every health request, so lateness is noticed
without a scheduler of our own (a run reads only its own job's backlog: a job turns `behind` at the end of its own
runs or on a health request). Each job's alert state is one JobAlert row, changed only by a
conditional update on its version: of several processes checking at once, exactly one decides each
message, and writes it to the outbox in the same transaction (jobs/outbox.py). Whoever checks next
delivers it, with a deadline, a lease and retries; a message that cannot be delivered never fails a job.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.urls import reverse

from jobs import outbox
from jobs.health import (
    FINISHED,
    JobHealth,
    ago,
    began_if_needed,
    health,
    latest_runs,
    ledger_began,
    missed_runs,
    overdue,
    real_runs,
)
from jobs.models import JobAlert, JobRun, Status
from jobs.outbox import Message, webhook_host
from jobs.registry import JOBS, Job
from jobs.timefmt import when

logger = logging.getLogger("jobs")
OK = "ok"


def check(
    now: datetime, *, send_for: float = outbox.REQUEST_SECONDS, backlogs: Collection[str] | None = None
) -> list[JobHealth]:
    """Compare every job's health with its alert state and queue what is due; then deliver what waits in the
    outbox for at most `send_for` seconds in all (0: not now). Return the healths.

    `backlogs`: the jobs whose backlog is read (the domain's queries); None: all. A job whose backlog is not read
    cannot turn `behind` in this check, nor recover: its open incident is then only reminded of or made worse (a
    check that reads the backlog, at its own runs' ends and on health requests, says whether it recovered).

    A message is written in the transaction of the conditional update that moves its job's alert state on:
    both are committed, or neither; and nothing is sent before they are.
    """
    states = {state.job: state for state in JobAlert.objects.filter(job__in=list(JOBS))}
    if len(states) < len(JOBS):  # a job's first check: its state row, once (another process may write it first)
        JobAlert.objects.bulk_create([JobAlert(job=name) for name in JOBS if name not in states], ignore_conflicts=True)
        states = {state.job: state for state in JobAlert.objects.filter(job__in=list(JOBS))}
    runs = latest_runs(JOBS.values())
    began = began_if_needed(runs)
    healths = []
    for job in JOBS.values():
        state = states[job.name]
        read = backlogs is None or job.name in backlogs
        current = health(job, now, runs[job.name], backlog=read, began=began)
        healths.append(current)
        bad = _bad(job, current)
        if not read and state.verdict != OK and not bad:
            continue  # it looks well without its backlog, but may be behind: its own runs and health requests decide
        due = decide(job, state, current, now, bad)
        if due is None:
            continue
        message, changes, channels = due
        with transaction.atomic():
            if JobAlert.objects.filter(job=job.name, version=state.version).update(version=F("version") + 1, **changes):
                outbox.queue(message, channels, now)
                where = ", ".join(channels) or "nowhere: no channel is configured"
                logger.info("alert for job %s decided, to be sent by %s: %s", job.name, where, message.text)
    if send_for > 0:
        try:
            outbox.send_due(now, send_for)
        except Exception:  # what is queued stays queued: the next check delivers it
            logger.exception("alert delivery failed; the next check tries again")
    return healths


def check_quietly(now: datetime, job: Job, *, skipped: bool = False) -> None:
    """check(), for the end of a run of `job`: an alert problem is logged, never the run's problem.

    Every job's verdict is checked (a job that missed its time is late whoever notices), but only this job's backlog
    is read: what a run changes is its own job's work, and the domain's backlog queries are the costly part of a
    check. (Health requests read them all; each job's own runs read its own, and decide its open incident.)
    After a skipped run (its lock held), only if its job is overdue: a skipped run changes no verdict but one, late
    to blocked, and only an overdue job can turn blocked. The run holding the lock checks when it ends.
    """
    try:
        if not skipped or overdue(job, now):
            check(now, backlogs=[job.name])
    except Exception:
        logger.exception("the alert check failed; it runs again after the next run or health request")


def decide(
    job: Job, state: JobAlert, current: JobHealth, now: datetime, bad: str
) -> tuple[Message, dict[str, Any], list[str]] | None:
    """What to send now, the state it leads to, and where; None: nothing is due. `bad`: what _bad() says."""
    channels = configured_channels()
    if state.verdict == OK:
        if bad:
            text = f"{job.name} is {bad}: {current.note}"
            began = _began(job, current, bad)
            changes: dict[str, Any] = {"verdict": bad, "opened_at": began, "notified_at": now, "undelivered": {}}
            return _message("opened", job, bad, OK, current, text), changes, channels
    elif current.verdict == OK and not current.late:
        text = recovery_text(job, state, current, now)
        changes = {"verdict": OK, "opened_at": None, "notified_at": now, "undelivered": {}}
        return _message("recovered", job, OK, state.verdict, current, text), changes, channels
    elif bad and state.notified_at and now - state.notified_at >= timedelta(hours=settings.JOBS_ALERT_REPEAT_HOURS):
        since = when(state.opened_at, now) if state.opened_at else "?"
        text = f"{job.name} is still {bad or state.verdict} (since {since}): {current.note}"
        changes = {"notified_at": now, "undelivered": {}}
        return _message("reminder", job, bad or state.verdict, state.verdict, current, text), changes, channels
    if state.undelivered:
        return Message(**state.undelivered["message"]), {"undelivered": {}}, state.undelivered["channels"]
    return None


def _bad(job: Job, current: JobHealth) -> str:
    """What opens an incident ("" if nothing): "failing" once JOBS_ALERT_AFTER_FAILURES runs in a row failed;
    "blocked", "behind" and "late" as soon as they are the verdict (or, for late, beside it)."""
    if current.verdict == "failing" and current.last_run is not None:
        if current.last_run.status == Status.RUNNING:  # it never finished
            return "failing"
        threshold = settings.JOBS_ALERT_AFTER_FAILURES
        success = current.last_success
        failed = [run for run in current.runs.finished if success is None or run.started_at > success.started_at]
        if len(failed) < len(current.runs.finished):  # the last success is among the runs read: all failures are
            if len(failed) >= threshold:
                return "failing"
        elif len(failed) >= threshold or _failures_since(job, success)[:threshold].count() >= threshold:
            return "failing"  # (counted only when more than the runs read failed: bounded by the threshold)
    if current.verdict in ("blocked", "behind"):
        return current.verdict
    return "late" if current.late else ""


def _began(job: Job, current: JobHealth, bad: str) -> datetime | None:
    """When the incident began: the first of the failures since the last success, the scheduled time that got
    no run (late, blocked), the oldest due item (behind)."""
    if bad == "failing" and current.last_run is not None:
        if current.last_run.status == Status.RUNNING:
            return current.last_run.started_at
        first = _failures_since(job, current.last_success).order_by("started_at")
        return first.values_list("started_at", flat=True).first()
    if bad == "behind":
        oldest = current.backlog.oldest if current.backlog else None
        return oldest or (current.last_run.started_at if current.last_run else None)
    return current.expected_at


def _failures_since(job: Job, success: JobRun | None) -> QuerySet[JobRun]:
    runs = real_runs(job).filter(status__in=FINISHED)
    return runs if success is None else runs.filter(started_at__gt=success.started_at)


def recovery_text(job: Job, state: JobAlert, current: JobHealth, now: datetime) -> str:
    """How long the incident lasted, how many runs failed, were skipped on a held lock, or never came."""
    success = current.last_success
    assert success is not None  # recovering means a success
    before = real_runs(job).filter(status=Status.SUCCEEDED, started_at__lt=success.started_at).first()
    start = before.started_at if before else (state.opened_at or success.started_at)
    runs = real_runs(job).filter(started_at__gte=start, started_at__lte=success.started_at)
    # A run stopped by its time budget (partial without errors) is resuming, not failing.
    failed = runs.filter(Q(status__in=[Status.FAILED, Status.ABANDONED]) | Q(status=Status.PARTIAL, error_count__gt=0))
    count = failed.count()
    skipped = runs.filter(status=Status.SKIPPED).count()
    arrivals = list(runs.values_list("started_at", flat=True))
    missed = missed_runs(job, start, success.started_at, arrivals, ledger_began())
    held = f", {skipped} skipped on a held lock" if skipped else ""
    return (
        f"{job.name} recovered after {ago(now - (state.opened_at or start))}: {count} run{'s' * (count != 1)} "
        f"failed{held}, {missed} missed. Run #{success.pk} succeeded."
    )


def _message(kind: str, job: Job, verdict: str, previous: str, current: JobHealth, text: str) -> Message:
    run = current.last_run
    path = (
        reverse("admin:jobs_jobrun_change", args=[run.pk])
        if run
        else reverse("admin:jobs_jobrun_changelist") + f"?job={job.name}"
    )
    reason = (run.errors[0] if run and run.errors else "") if verdict == "failing" else current.note
    return Message(kind, job.name, verdict, previous, run.pk if run else None, reason, text, settings.SITE_URL + path)


def configured_channels() -> list[str]:
    return ["email"] * bool(settings.JOBS_ALERT_EMAILS) + ["webhook"] * bool(settings.JOBS_ALERT_WEBHOOK_URL)


def destinations() -> str:
    """Where alerts go, in words (for `make demo` and the job_health command). A webhook's path is a secret."""
    where = []
    if settings.JOBS_ALERT_EMAILS:
        backend = settings.EMAIL_BACKEND.rsplit(".", 2)[-2]  # smtp, console, filebased, locmem, dummy
        where.append(f"e-mail to {', '.join(settings.JOBS_ALERT_EMAILS)} (through the {backend} backend)")
    if settings.JOBS_ALERT_WEBHOOK_URL:
        where.append(f"a JSON POST to {webhook_host()}")
    return " and ".join(where) or "nowhere yet (set JOBS_ALERT_EMAILS and/or JOBS_ALERT_WEBHOOK_URL)"
