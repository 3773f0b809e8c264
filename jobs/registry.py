"""How a job is declared, and the registry of every declared job.

Each app declares its jobs in its own `jobs.py` with the `@job(...)` decorator;
the jobs app imports those modules at start-up (`autodiscover_modules("jobs")`),
so the framework never imports an app. vercel.json, the URLs, the commands'
options, the admin and the health verdicts derive from the declarations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from cronsim import CronSim
from django.conf import settings
from django.forms import Field

from jobs.context import Backlog, Context, Result
from jobs.forms import JobForm, fields_of

JobFunction = Callable[[Context], Result]
RunKind = Callable[[Mapping[str, Any], Mapping[str, Any]], str]  # (params as recorded, counters) -> "incremental"


@dataclass(frozen=True)
class Job:
    name: str
    lock_id: int  # PostgreSQL advisory lock key (or lease id); the variable <NAME>_LOCK_ID overrides it
    func: JobFunction
    description: str
    schedule: str | None = None  # 5-field cron, in `timezone`; None: not called by Vercel Cron
    auth: Literal["cron", "internal"] = "cron"  # internal: only x-internal-secret, not in vercel.json
    form: type[JobForm] = JobForm  # its parameters
    counters: tuple[str, ...] = ()  # in display order
    grace: timedelta = timedelta(hours=1)  # how late a scheduled run may start before the job is `late`
    also: tuple[tuple[str, str], ...] = ()  # more cron calls: (schedule, query string), e.g. a weekly full pass
    backlog: Callable[[datetime], Backlog] | None = None  # what is due at a moment; see jobs/health.py
    lag: timedelta | None = None  # how long the oldest due item may wait before the job is `behind`
    kind: RunKind | None = None  # names a run's kind from its params and counters ("full pass"); None: "full"
    timezone: str = "UTC"  # the IANA zone its schedules are read in (Vercel Schedules only; Cron Jobs are UTC)
    jitter: timedelta = timedelta(0)  # Vercel Schedules' jitter window: a run may start this much later

    @property
    def max_lag(self) -> timedelta | None:
        """The declared lag, or the <NAME>_MAX_LAG_MINUTES variable's."""
        minutes = settings.JOBS_MAX_LAG_MINUTES.get(self.variable("MAX_LAG_MINUTES"))
        return self.lag if minutes is None else timedelta(minutes=minutes)

    @property
    def grace_period(self) -> timedelta:
        """The declared grace, or the <NAME>_CRON_GRACE_MINUTES variable's, widened by the jitter window (a run
        that Vercel starts late within it is on time)."""
        minutes = settings.JOBS_CRON_GRACE_MINUTES.get(self.variable("CRON_GRACE_MINUTES"))
        return (self.grace if minutes is None else timedelta(minutes=minutes)) + self.jitter

    def fires(self, after: datetime, schedule: str | None = None) -> Iterator[datetime]:
        """The times its schedule (or another of its schedules) fires after `after`, read in the job's zone
        (daylight-saving changes included), in UTC."""
        expression = schedule or self.schedule
        assert expression is not None, f"{self.name} is not scheduled"
        for fire in CronSim(expression, after.astimezone(ZoneInfo(self.timezone))):
            yield fire.astimezone(UTC)

    def variable(self, suffix: str) -> str:
        """The name of this job's environment variable: recompute-scores, LOCK_ID -> RECOMPUTE_SCORES_LOCK_ID."""
        return f"{self.name.upper().replace('-', '_')}_{suffix}"

    @property
    def lock_setting(self) -> str:
        return self.variable("LOCK_ID")

    @property
    def path(self) -> str:
        return f"/api/jobs/{self.name}"

    @property
    def crons(self) -> list[tuple[str, str]]:
        """What vercel.json must hold for this job: (path, schedule) pairs."""
        main = [(self.path, self.schedule)] if self.schedule and self.auth == "cron" else []
        return main + [(f"{self.path}?{query}", schedule) for schedule, query in self.also]

    def ordered(self, counters: Mapping[str, Any]) -> dict[str, Any]:
        """Counters in the declared order; any others after them, as they came."""
        position = {name: index for index, name in enumerate(self.counters)}
        return dict(sorted(counters.items(), key=lambda item: position.get(item[0], len(position))))

    def scoped(self, params: Mapping[str, Any]) -> bool:
        """Whether these parameters narrow the run to part of the job's work (one shop, ...)."""
        return any(params.get(name) not in (None, "") for name in self.form.scope)


DECLARED: list[Job] = []  # in declaration order, duplicates included: the system check reports them
JOBS: dict[str, Job] = {}


def register(declared: Job) -> Job:
    DECLARED.append(declared)
    JOBS.setdefault(declared.name, declared)
    return declared


def job(
    *,
    name: str,
    lock_id: int,
    description: str,
    schedule: str | None = None,
    auth: Literal["cron", "internal"] = "cron",
    form: type[JobForm] = JobForm,
    counters: tuple[str, ...] = (),
    grace: timedelta = timedelta(hours=1),
    also: tuple[tuple[str, str], ...] = (),
    backlog: Callable[[datetime], Backlog] | None = None,
    lag: timedelta | None = None,
    kind: RunKind | None = None,
    timezone: str = "UTC",
    jitter: timedelta = timedelta(0),
) -> Callable[[JobFunction], JobFunction]:
    """Declare the decorated function as a job; the function is returned unchanged."""

    def declare(func: JobFunction) -> JobFunction:
        register(
            Job(
                name, lock_id, func, description, schedule, auth, form, counters, grace, also, backlog, lag, kind,
                timezone, jitter,
            )
        )  # fmt: skip
        return func

    return declare


class UnknownJob(LookupError):
    pass


def get_job(name: str) -> Job:
    try:
        return JOBS[name]
    except KeyError:
        raise UnknownJob(name) from None


def all_fields() -> dict[str, Field]:
    """Every parameter any job takes, by field name."""
    return fields_of(job.form for job in JOBS.values())
