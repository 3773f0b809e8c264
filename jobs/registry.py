"""Every job, declared once. vercel.json, URLs, commands and the admin derive from it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from jobs.retention import prune_job_runs
from scoring import services


@dataclass(frozen=True)
class Job:
    name: str
    lock_id: int  # default PostgreSQL advisory lock key; the setting <NAME>_LOCK_ID overrides it
    func: Callable[..., Mapping[str, Any]]
    schedule: str | None  # 5-field cron, UTC; None: not called by Vercel Cron
    description: str
    auth: Literal["cron", "internal"] = "cron"

    @property
    def lock_setting(self) -> str:
        return self.name.upper().replace("-", "_") + "_LOCK_ID"

    @property
    def path(self) -> str:
        return f"/api/jobs/{self.name}"

    @cached_property
    def accepts(self) -> frozenset[str]:
        """The keyword arguments the job's function takes (shop, limit, deadline, ...)."""
        return frozenset(inspect.signature(self.func).parameters)


JOBS: dict[str, Job] = {
    job.name: job
    for job in [
        Job(
            name="resolve-outcomes",
            lock_id=482173,
            func=services.resolve_outcomes,
            schedule="0 0 * * *",
            description="Give finished appointments their outcome (attended, no-show, cancellations).",
        ),
        Job(
            name="expire-offers",
            lock_id=482174,
            func=services.expire_offers,
            schedule="*/5 * * * *",
            description="Expire unanswered slot offers and offer those slots to the next in line.",
        ),
        Job(
            name="recompute-scores",
            lock_id=482175,
            func=services.recompute_scores,
            schedule="0 2 * * *",
            description="Recompute every customer's reliability score over the scoring window.",
        ),
        Job(
            name="offer-loop",
            lock_id=482176,
            func=services.offer_loop,
            schedule=None,
            auth="internal",
            description="Offer each open slot to the best-ranked waiting customer (called by the app).",
        ),
        Job(
            name="prune-job-runs",
            lock_id=482177,
            func=prune_job_runs,
            schedule="30 4 * * *",
            description="Delete job runs older than the retention period.",
        ),
    ]
}
