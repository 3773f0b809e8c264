"""System checks: the declarations are consistent; deploy: the job secrets are set."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from jobs.registry import DECLARED, JOBS

RESERVED = {"health"}  # paths under /api/jobs/ that are not jobs


@register()
def declarations_are_consistent(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    for name, count in Counter(job.name for job in DECLARED).items():
        if count > 1:
            problems.append(Error(f"{count} jobs are declared with the name {name!r}.", id="jobs.E001"))
    for lock_id, count in Counter(job.lock_id for job in DECLARED).items():
        if count > 1:
            names = ", ".join(job.name for job in DECLARED if job.lock_id == lock_id)
            problems.append(Error(f"Jobs {names} share lock id {lock_id}.", id="jobs.E002"))
    for job in DECLARED:
        if job.schedule is not None and len(job.schedule.split()) != 5:
            problems.append(Error(f"Job {job.name}: schedule must have 5 fields.", id="jobs.E003"))
        if job.name in RESERVED or "/" in job.name:
            problems.append(Error(f"{job.name!r} cannot be a job's name.", id="jobs.E004"))
        if not _zone_known(job.timezone):
            problems.append(Error(f"Job {job.name}: {job.timezone!r} is not an IANA time zone.", id="jobs.E005"))
        if job.jitter < timedelta(0) or job.jitter % timedelta(minutes=1):
            problems.append(Error(f"Job {job.name}: jitter must be whole minutes, 0 or more.", id="jobs.E006"))
    suffixes = ("LOCK_ID", "CRON_GRACE_MINUTES", "MAX_LAG_MINUTES", "CHECKIN_URL")
    known = {job.variable(suffix) for job in JOBS.values() for suffix in suffixes}
    variables = [
        *settings.JOBS_LOCK_IDS, *settings.JOBS_CRON_GRACE_MINUTES, *settings.JOBS_MAX_LAG_MINUTES,
        *settings.JOBS_CHECKIN_URLS,
    ]  # fmt: skip
    for variable in variables:
        if variable not in known:
            problems.append(Warning(f"{variable} is set, but no job is called that.", id="jobs.W003"))
    return problems


def _zone_known(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


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
