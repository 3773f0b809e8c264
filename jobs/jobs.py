"""The framework's own job, declared as any app declares its jobs."""

from __future__ import annotations

from jobs.context import Context, Result
from jobs.registry import job
from jobs.retention import prune_job_runs


@job(
    name="prune-job-runs",
    lock_id=482177,
    schedule="30 4 * * *",
    description="Delete job runs older than the retention period.",
    counters=("deleted", "remaining", "messages_deleted"),
)
def prune(ctx: Context) -> Result:
    return prune_job_runs(ctx)
