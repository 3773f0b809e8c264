"""The shell's way into the runner; each job's management command is one of these."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from jobs.models import Status, Trigger
from jobs.registry import JOBS
from jobs.runner import ParamError, RunResult, get_job, parse_params, run_job

OPTION = {"shop": "--shop", "limit": "--limit", "lock_id": "--lock-id", "dry_run": "--dry-run"}


class JobCommand(BaseCommand):
    """Run one job through the runner. Exit: 0 succeeded, 1 partial or failed, 75 skipped, 2 bad arguments."""

    job_name: str | None = None  # None: the job's name is the first argument

    def add_arguments(self, parser: ArgumentParser) -> None:
        if self.job_name is None:
            parser.add_argument("name", choices=sorted(JOBS), help="the job to run")
        accepts = JOBS[self.job_name].accepts if self.job_name else {"shop", "limit"}
        if "shop" in accepts:
            parser.add_argument("--shop", help="only this shop (UUID)")
        if "limit" in accepts:
            parser.add_argument("--limit", help="at most this many items (default 200, max 1000)")
        parser.add_argument("--lock-id", help="use this lock id instead of the job's")
        parser.add_argument("--dry-run", action="store_true", help="do the work, then roll it back")
        parser.add_argument("--json", action="store_true", help="print the JSON body the HTTP endpoint returns")

    def execute(self, *args: Any, **options: Any) -> str | None:
        # The summary printed below says what the runner's INFO log line says; that line is for servers.
        logger = logging.getLogger("jobs")
        level = logger.level
        if options.get("verbosity", 1) < 2:
            logger.setLevel(logging.WARNING)
        try:
            return super().execute(*args, **options)
        finally:
            logger.setLevel(level)

    def handle(self, *args: Any, **options: Any) -> None:
        job = get_job(self.job_name or options["name"])
        raw = {key: options.get(key) for key in ("shop", "limit", "lock_id")}
        raw["dry_run"] = "true" if options["dry_run"] else None
        try:
            params = parse_params(job, raw)
            result = run_job(job.name, trigger=Trigger.CLI, params=params, origin=origin())
        except ParamError as error:
            raise CommandError(f"{OPTION[error.param]}: {error.message}", returncode=2) from None
        except DatabaseError as error:  # unreachable, not migrated, ...: say so, without a traceback
            first_line = (str(error).strip().splitlines() or ["no answer"])[0]
            raise CommandError(f"database error: {first_line}", returncode=1) from None
        self.stdout.write(json.dumps(result.body) if options["json"] else summary(result))
        if result.exit_code:
            sys.exit(result.exit_code)


def origin() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def summary(result: RunResult) -> str:
    run = result.run
    head = f"{run.job}: {run.status} in {run.duration_ms} ms (run #{run.pk})"
    if run.status == Status.SKIPPED:
        return f"{head}: another run holds lock {run.lock_id}"
    if run.status == Status.FAILED:
        last_line = (run.traceback.strip().splitlines() or [""])[-1]
        return f"{head}\n  {last_line}\n  the full traceback is stored on run #{run.pk}"
    counters = "  ".join(f"{key} {value}" for key, value in run.counters.items())
    errors = "".join(f"\n  error: {error}" for error in run.errors) or "\n  errors: none"
    dry = " (dry run, rolled back)" if run.params.get("dry_run") else ""
    return f"{head}{dry}\n  {counters}{errors}"
