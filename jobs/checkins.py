"""Check-ins: a start and an end signal for every real run of a job, to the outside monitor teams already use.

`<JOB_NAME>_CHECKIN_URL` (any declared job) names the monitor; its URL shows the protocol:

| protocol | URL | start, success, failure | pairs them |
|---|---|---|---|
| Sentry Crons | `/api/<project>/cron/<slug>/<key>/` | `status=in_progress`, `ok`, `error` | `check_in_id=` |
| Cronitor | host `cronitor.link`, or `/ping/<key>/<monitor>` | `state=run`, `complete`, `fail` | `series=` |
| healthchecks.io (any other URL) | `<url>` | `<url>/start`, `<url>`, `<url>/fail` | `rid=` |

A run that succeeded is a success; one that failed, or finished partial with item errors, a failure (as our own
verdict `failing`); one stopped by its time budget with no error (resuming) a success. The pairing id is a UUID
derived from the run's id. Only real runs signal: not a dry run, not one narrowed to part of the work (scoped),
not a skipped one (which did nothing), so that a monitor sees what the job's health sees.

Both signals are outbox rows (jobs/outbox.py), delivered with its deadline, lease and retries, in order per job
(an end never overtakes its start). The start is sent as the run begins, under the lock: the run waits for it at
most one attempt's deadline (JOBS_ALERT_SEND_SECONDS); an attempt still going then finishes in its thread. The end
is written when the run is recorded and delivered by the alert check that ends every run (at most 2 s); the signals
of the job's earlier runs still waiting then are dropped. A check-in that cannot be delivered never fails a run. The
URL is read from the settings when sent, never stored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from jobs import outbox
from jobs.models import Channel, JobRun, OutboxMessage, Status
from jobs.monitors import Signal, url_of
from jobs.registry import Job

logger = logging.getLogger("jobs")


def signal_for(run: JobRun) -> Signal:
    """How a finished run ends for a monitor: failed, or partial with errors, is a failure (as health's `failing`)."""
    if run.status == Status.FAILED or (run.status == Status.PARTIAL and run.errors):
        return "fail"
    return "success"


def real(job: Job, params: Mapping[str, Any]) -> bool:
    """A run that speaks for the job: not a dry run, not one narrowed to part of the work."""
    return not params.get("dry_run") and not job.scoped(params)


def started(job: Job, run: JobRun, params: Mapping[str, Any]) -> None:
    """Send the start signal of a real run that holds its lock, if the job has a monitor: wait for it at most one
    attempt's deadline. Never raises."""
    if not url_of(job.name) or not real(job, params):
        return  # no query, no thread: a job without a monitor pays nothing
    try:
        now = timezone.now()
        # A savepoint inside the run's transaction (PostgreSQL): a failed write costs the check-in, not the run.
        # There, the row commits with the run; if the attempt outlives the wait, the row is found again after
        # its lease and sent again (at least once), before the run's end.
        with transaction.atomic():
            row = _queue(job, run, "start", now)
            if not outbox.claim(row, now):
                return
        attempt = outbox.Attempt(row, now)
        attempt.start()
        report = attempt.wait(outbox.send_seconds())
        if report is None:
            logger.warning("check-in for job %s: the start of run #%s is still being sent", job.name, run.pk)
    except Exception:
        logger.exception("check-in for job %s: the start of run #%s was not sent", job.name, run.pk)


def ended(job: Job, run: JobRun) -> None:
    """Queue the end signal of a real run that started (succeeded, partial or failed), if the job has a monitor;
    the alert check that ends every run delivers it. Never raises."""
    if run.status not in (Status.SUCCEEDED, Status.PARTIAL, Status.FAILED) or not url_of(job.name):
        return
    if not real(job, run.params):  # as recorded: `dry_run` only when true, scope fields only when given
        return
    try:
        _queue(job, run, signal_for(run), timezone.now())
        # Signals of earlier runs that never got through are stale now: dropped, so that a monitor down for days
        # leaves one run's signals waiting per job, never a pile that would crowd the alerts out of the outbox.
        OutboxMessage.objects.filter(
            channel=Channel.CHECKIN, job=job.name, delivered_at__isnull=True, content__run_id__lt=run.pk
        ).delete()
    except Exception:
        logger.exception("check-in for job %s: the end of run #%s was not queued", job.name, run.pk)


def _queue(job: Job, run: JobRun, signal: Signal, now: datetime) -> OutboxMessage:
    text = f"{job.name} run #{run.pk} " + ("started" if signal == "start" else f"{run.status}")
    content = {"job": job.name, "run_id": run.pk, "signal": signal, "verdict": signal, "text": text}
    return OutboxMessage.objects.create(
        job=job.name, kind=signal, channel=Channel.CHECKIN, content=content, created_at=now, next_attempt_at=now
    )
