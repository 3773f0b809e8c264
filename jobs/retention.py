"""prune-job-runs: keep the ledger from growing without bound."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Max

from jobs.context import Context, Result
from jobs.models import JobRun, OutboxMessage, Status

BATCH_SIZE = 1000


def prune_job_runs(ctx: Context, *, batch_size: int = BATCH_SIZE) -> Result:
    """Delete runs older than JOB_RUNS_RETENTION_DAYS, a bounded batch at a time (at least one per run), and the
    alert messages delivered before then (a few a day: one statement).

    Never deletes a `running` row or the latest run of any job, so the
    overview always has something to show; nor a message still to deliver.
    """
    cutoff = ctx.now - timedelta(days=settings.JOB_RUNS_RETENTION_DAYS)
    messages = 0
    with ctx.item("delivered alert messages"):
        messages = OutboxMessage.objects.filter(delivered_at__lt=cutoff).delete()[0]
    latest = JobRun.objects.values("job").annotate(latest=Max("id")).values_list("latest", flat=True)
    old = JobRun.objects.filter(started_at__lt=cutoff).exclude(status=Status.RUNNING).exclude(id__in=list(latest))
    deleted = 0
    while ids := list(old.order_by("id").values_list("id", flat=True)[:batch_size]):
        errors_before = len(ctx.errors)
        with ctx.item(f"runs {ids[0]}..{ids[-1]}"):
            deleted += JobRun.objects.filter(id__in=ids).delete()[0]
        if len(ctx.errors) > errors_before or ctx.out_of_time():
            break  # a failed batch would fail again: stop, and say so
    return Result({"deleted": deleted, "messages_deleted": messages}, remaining=old.count())
