"""The shell's way into the runner: `run_job NAME`, and each job's own command is one of these."""

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

from jobs import report
from jobs.forms import ParamError, TrueFalseField, clean, option_name
from jobs.models import Status, Trigger
from jobs.registry import JOBS, all_fields, get_job
from jobs.runner import run_job

EXIT = {Status.SUCCEEDED: 0, Status.SKIPPED: 75}  # anything else (partial, failed) exits 1; bad arguments 2


class JobCommand(BaseCommand):
    """Run one job through the runner. Exit: 0 succeeded, 1 partial or failed, 75 skipped, 2 bad arguments.

    The options are the job's form's fields (`run_job` offers every job's, and refuses those its job does not take).
    """

    job_name: str | None = None  # None: the job's name is the first argument

    def add_arguments(self, parser: ArgumentParser) -> None:
        if self.job_name is None:
            parser.add_argument("name", choices=sorted(JOBS), help="the job to run")
        fields = get_job(self.job_name).form.parameters() if self.job_name else all_fields()
        for name, field in fields.items():
            if isinstance(field, TrueFalseField):
                parser.add_argument(option_name(name), dest=name, action="store_true", help=str(field.help_text))
            else:
                parser.add_argument(option_name(name), dest=name, help=str(field.help_text))
        parser.add_argument("--json", action="store_true", help="print the JSON body the HTTP endpoint returns")

    def execute(self, *args: Any, **options: Any) -> str | None:
        # The summary printed below says what the runner's log lines say (one line per error);
        # those lines, with their tracebacks, are for servers, and for -v 2.
        logger = logging.getLogger("jobs")
        level = logger.level
        logger.setLevel(logging.DEBUG if options.get("verbosity", 1) >= 2 else logging.CRITICAL)
        try:
            return super().execute(*args, **options)
        finally:
            logger.setLevel(level)

    def handle(self, *args: Any, **options: Any) -> None:
        job = get_job(self.job_name or options["name"])
        given = {name: options[name] for name in all_fields() if options.get(name) not in (None, False)}
        try:
            run = run_job(job, clean(job.name, job.form, given), trigger=Trigger.CLI, origin=origin())
        except ParamError as error:
            raise CommandError(f"{option_name(error.param)}: {error.message}", returncode=2) from None
        except DatabaseError as error:  # unreachable, not migrated, ...: say so, without a traceback
            first_line = (str(error).strip().splitlines() or ["no answer"])[0]
            raise CommandError(f"database error: {first_line}", returncode=1) from None
        self.stdout.write(json.dumps(report.body(run)) if options["json"] else report.summary(run))
        if options["verbosity"] >= 2 and run.traceback:
            self.stderr.write(run.traceback)
        if code := EXIT.get(Status(run.status), 1):
            sys.exit(code)


def origin() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"
