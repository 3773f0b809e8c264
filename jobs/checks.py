"""System checks: the registry is consistent; deploy: the job secrets are set."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from jobs.registry import JOBS


@register()
def registry_is_consistent(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    lock_ids = [job.lock_id for job in JOBS.values()]
    if len(set(lock_ids)) != len(lock_ids):
        problems.append(Error("Two jobs share a lock id.", id="jobs.E001"))
    for job in JOBS.values():
        if not hasattr(settings, job.lock_setting):
            problems.append(Error(f"settings.{job.lock_setting} is missing for job {job.name}.", id="jobs.E002"))
        if job.schedule is not None and len(job.schedule.split()) != 5:
            problems.append(Error(f"Job {job.name}: schedule must have 5 fields.", id="jobs.E003"))
    return problems


@register(Tags.security, deploy=True)
def job_secrets_are_set(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    for setting in ("CRON_SECRET", "INTERNAL_SECRET"):
        value = getattr(settings, setting)
        if not value:
            problems.append(Warning(f"{setting} is not set: its job endpoints answer 500.", id="jobs.W001"))
        elif len(value) < 32:
            problems.append(
                Warning(f"{setting} is shorter than 32 characters.", hint="openssl rand -hex 32", id="jobs.W002")
            )
    return problems
