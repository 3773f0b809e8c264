"""A run that holds its job's lock until it is killed: `python -m tests.system.sleeper LOCK_ID READY_FILE`.

It declares a job of its own (as a test would), writes READY_FILE once its run holds the lock, then sleeps.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import django

django.setup()

from jobs.context import Context, Result  # noqa: E402  (after setup)
from jobs.models import Trigger  # noqa: E402
from jobs.registry import Job, register  # noqa: E402
from jobs.runner import run_job  # noqa: E402


def sleep_until_killed(ctx: Context) -> Result:
    Path(sys.argv[2]).write_text("holding")
    time.sleep(600)
    return Result({})


register(Job("sleeper", int(sys.argv[1]), sleep_until_killed, "Holds its lock until killed."))
run_job("sleeper", trigger=Trigger.CLI)
