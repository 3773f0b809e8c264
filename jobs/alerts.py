"""Operators are told, not only shown: one message when a job turns failing, blocked, behind or late, a reminder
every JOBS_ALERT_REPEAT_HOURS while it stays so, and one when it recovers.

Checked at the end of every run of any job and on every health request, so lateness is noticed
without a scheduler of our own. Each job's alert state is one JobAlert row, changed only by a
conditional update on its version: of several processes checking at once, exactly one decides each
message, and writes it to the outbox in the same transaction (jobs/outbox.py). Whoever checks next
delivers it, with a deadline, a lease and retries; a message that cannot be delivered never fails a job.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.urls import reverse

from jobs import outbox
from jobs.health import FINISHED, JobHealth, ago, health, missed_runs, overdue, real_runs
from jobs.models import JobAlert, Status
from jobs.outbox import Message, webhook_host
from jobs.registry import JOBS, Job
from jobs.timefmt import when

logger = logging.getLogger("jobs")
OK = "ok"


def check(now: datetime, *, send_for: float = outbox.REQUEST_SECONDS) -> list[JobHealth]:
    """Compare every job's health with its alert state and queue what is due; then deliver what waits in the
    outbox for at most `send_for` seconds in all (0: not now). Return the healths.

    A message is written in the transaction of the conditional update that moves its job's alert state on:
    both are committed, or neither; and nothing is sent before they are.
    """
    states = {state.job: state for state in JobAlert.objects.filter(job__in=list(JOBS))}
    if len(states) < len(JOBS):  # a job's first check: its state row, once (another process may write it first)
        JobAlert.objects.bulk_create([JobAlert(job=name) for name in JOBS if name not in states], ignore_conflicts=True)
        states = {state.job: state for state in JobAlert.objects.filter(job__in=list(JOBS))}
    healths = []
    for job in JOBS.values():
        current = health(job, now)
        healths.append(current)
        state = states[job.name]
        due = decide(job, state, current, now)
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


def check_quietly(now: datetime, *, skipped: Job | None = None) -> None:
    """check(), for the end of a run: an alert problem is logged, never the run's problem.

    After a run of `skipped` that found its lock held, only if that job is overdue: a skipped run changes no verdict
    but one, late to blocked, and only an overdue job can turn blocked. A run holding the lock checks when it ends.
    """
    try:
        if skipped is None or overdue(skipped, now):
            check(now)
    except Exception:
        logger.exception("the alert check failed; it runs again after the next run or health request")


def decide(
    job: Job, state: JobAlert, current: JobHealth, now: datetime
) -> tuple[Message, dict[str, Any], list[str]] | None:
    """What to send now, the state it leads to, and where; None: nothing is due."""
    channels = configured_channels()
    bad, began = _bad(job, current)
    if state.verdict == OK:
        if bad:
            text = f"{job.name} is {bad}: {current.note}"
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


def _bad(job: Job, current: JobHealth) -> tuple[str, datetime | None]:
    """What opens an incident ("" if nothing), and since when: "failing" once JOBS_ALERT_AFTER_FAILURES runs
    in a row failed; "blocked", "behind" and "late" as soon as they are the verdict (or, for late, beside it)."""
    if current.verdict == "failing" and current.last_run is not None:
        if current.last_run.status == Status.RUNNING:  # it never finished
            return "failing", current.last_run.started_at
        since_success = real_runs(job).filter(status__in=FINISHED)
        if current.last_success is not None:
            since_success = since_success.filter(started_at__gt=current.last_success.started_at)
        threshold = settings.JOBS_ALERT_AFTER_FAILURES
        if since_success[:threshold].count() >= threshold:  # bounded: never more than the threshold's rows
            first = since_success.order_by("started_at").values_list("started_at", flat=True).first()
            return "failing", first  # the incident began with the first of them
    if current.verdict == "blocked":
        return "blocked", current.expected_at
    if current.verdict == "behind":
        oldest = current.backlog.oldest if current.backlog else None
        return "behind", oldest or (current.last_run.started_at if current.last_run else None)
    if current.late:
        return "late", current.expected_at  # the scheduled time that got no run
    return "", None


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
    missed = missed_runs(job, start, success.started_at, list(runs.values_list("started_at", flat=True)))
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
