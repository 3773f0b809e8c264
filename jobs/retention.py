"""prune-job-runs: keep the ledger from growing without bound."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import TypedDict

from django.conf import settings
from django.db.models import Max

from jobs.items import item
from jobs.models import JobRun, Status

BATCH_SIZE = 1000


class PruneCounters(TypedDict):
    deleted: int
    remaining: int
    errors: list[str]


def prune_job_runs(*, now: datetime, deadline: float | None = None, batch_size: int = BATCH_SIZE) -> PruneCounters:
    """Delete runs older than JOB_RUNS_RETENTION_DAYS, a bounded batch at a time.

    Never deletes a `running` row or the latest run of any job, so the
    overview always has something to show.
    """
    cutoff = now - timedelta(days=settings.JOB_RUNS_RETENTION_DAYS)
    latest = JobRun.objects.values("job").annotate(latest=Max("id")).values_list("latest", flat=True)
    old = JobRun.objects.filter(started_at__lt=cutoff).exclude(status=Status.RUNNING).exclude(id__in=list(latest))
    counters = PruneCounters(deleted=0, remaining=0, errors=[])
    while True:  # at least one batch, however small the budget
        ids = list(old.order_by("id").values_list("id", flat=True)[:batch_size])
        if not ids:
            break
        errors_before = len(counters["errors"])
        with item(counters["errors"], f"runs {ids[0]}..{ids[-1]}"):
            counters["deleted"] += JobRun.objects.filter(id__in=ids).delete()[0]
        if len(counters["errors"]) > errors_before:
            break  # the same batch would fail again: stop, and say so
        if deadline is not None and time.monotonic() >= deadline:
            break
    counters["remaining"] = old.count()
    return counters
