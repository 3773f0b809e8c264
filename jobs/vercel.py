"""vercel.json from the job declarations, as Cron Jobs (`crons`, the default) or as Vercel Schedules (`schedules`).

Cron Jobs: `{"path", "schedule"}` per call, in UTC. Schedules (vercel.com/docs/schedules/configuration): an object
keyed by the schedule's name, each with its `path` target, its `schedule`, its `timezone` and, when declared, its
`jitter` (whole minutes). A path target is called as a Cron Job calls it (same user agent,
`x-vercel-cron-schedule`, `Authorization: Bearer $CRON_SECRET`: vercel.com/docs/schedules/migrate-from-cron-jobs),
so the endpoint is the same either way. Every other key of the file is kept as it is.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any, Literal

from jobs.registry import JOBS, Job

Form = Literal["crons", "schedules"]
FORMS: tuple[Form, ...] = ("crons", "schedules")
SCHEMA = "https://openapi.vercel.sh/vercel.json"


class NotExpressible(ValueError):
    """The declarations ask for something the chosen form cannot say (a time zone, as Cron Jobs)."""


def calls(job: Job) -> list[tuple[str, str, str]]:
    """Each call Vercel must make for the job: (schedule name, path, cron expression)."""
    named = [(job.name, job.path, job.schedule)] if job.schedule and job.auth == "cron" else []
    for schedule, query in job.also:
        suffix = re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-")
        named.append((f"{job.name}-{suffix}", f"{job.path}?{query}", schedule))
    return named


def crons() -> list[dict[str, str]]:
    zoned = [job for job in JOBS.values() if job.crons and job.timezone != "UTC"]
    if zoned:
        names = ", ".join(f"{job.name} ({job.timezone})" for job in zoned)
        raise NotExpressible(f"Cron Jobs run in UTC, and {names} is declared in another time zone: use --schedules.")
    return [{"path": path, "schedule": schedule} for job in JOBS.values() for _, path, schedule in calls(job)]


def schedules() -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for job in JOBS.values():
        jitter = {"jitter": int(job.jitter.total_seconds() // 60)} if job.jitter else {}
        for name, path, schedule in calls(job):
            entries[name] = {"path": path, "schedule": schedule, "timezone": job.timezone, **jitter}
    return entries


def form_of(config: dict[str, Any]) -> Form:
    """The form a vercel.json uses: schedules if it has them, else crons."""
    return "schedules" if "schedules" in config else "crons"


def generated(config: dict[str, Any], form: Form) -> dict[str, Any]:
    """`config` with the declarations in `form`, in the place the old form's key had (the other form's key goes);
    every other key as it was."""
    value: Any = crons() if form == "crons" else schedules()
    if not config:
        return {"$schema": SCHEMA, form: value}
    result: dict[str, Any] = {}
    for key, old in config.items():
        if key in FORMS:
            result.setdefault(form, value)
        else:
            result[key] = old
    result.setdefault(form, value)
    return result


def normal(config: dict[str, Any]) -> dict[str, Any]:
    """The config as compared: the order of the crons does not matter, nor the file's formatting."""
    if isinstance(config.get("crons"), list):
        key = json.dumps
        return {**config, "crons": sorted(config["crons"], key=key)}
    return config


def render(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, ensure_ascii=False) + "\n"


def difference(current: dict[str, Any], expected: dict[str, Any], name: str = "vercel.json") -> str:
    """A unified diff of the two, as compared (empty when they agree)."""
    if normal(current) == normal(expected):
        return ""
    old, new = render(normal(current)).splitlines(keepends=True), render(normal(expected)).splitlines(keepends=True)
    return "".join(difflib.unified_diff(old, new, f"{name} (as it is)", f"{name} (from the declarations)"))
