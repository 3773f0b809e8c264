"""Jobs declared only for the framework's tests. Their work writes auth groups: no domain table is touched."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from django import forms
from django.contrib.auth.models import Group
from django.db import connection

from jobs.context import Context, Result
from jobs.forms import JobForm, TrueFalseField, WholeNumberField
from jobs.registry import Job


class SizeForm(JobForm):
    size = WholeNumberField(low=1, cap=1000, default=200, help_text="at most this many items")
    prefix = forms.CharField(required=False, max_length=20, help_text="only groups with this prefix")
    scope = ("prefix",)


def write(ctx: Context) -> Result:
    """Writes one group per item, `size` items (default 3 if the form gives none)."""
    prefix = ctx.params.get("prefix") or "item"
    size = ctx.params.get("size") or 3
    written = 0
    for n in range(1, size + 1):
        with ctx.item(f"item {n}"):
            Group.objects.create(name=f"{prefix} {n} {ctx.now.isoformat()}")
            written += 1
    return Result({"written": written, "total": size})


def batches(ctx: Context) -> Result:
    """Names groups 1..10 in batches of 3, one batch at least per run, resuming from its checkpoint."""
    done = int(ctx.checkpoint or 0)
    while True:
        upper = min(done + 3, 10)
        with ctx.item(f"groups {done + 1}..{upper}"):
            names = [f"batch group {n} {ctx.now.isoformat()}" for n in range(done + 1, upper + 1)]
            Group.objects.bulk_create(Group(name=name) for name in names)
        done = upper
        if done == 10 or ctx.out_of_time():
            break
    return Result({"total": done}, remaining=10 - done, checkpoint=str(done) if done < 10 else None)


started = threading.Event()
release = threading.Event()


def blocking(ctx: Context) -> Result:
    """Writes a group, then waits until the test lets it finish."""
    Group.objects.create(name="written by the blocking job")
    started.set()
    release.wait(30)
    return Result({"total": 1})


def sharing(ctx: Context) -> Result:
    """Holds a thing that runs share whatever their lock ids, then blocks as `blocking` does."""
    ctx.hold("the shared thing")
    return blocking(ctx)


def failing_item(ctx: Context) -> Result:
    """Three items; the second raises a database error half-way through its writes."""
    done = 0
    for n in (1, 2, 3):
        with ctx.item(f"item {n}"):
            Group.objects.create(name=f"item {n}")
            if n == 2:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT * FROM no_such_table")
            done += 1
    return Result({"total": 3, "done": done})


def crashing(ctx: Context) -> Result:
    Group.objects.create(name="written before the crash")
    raise RuntimeError("the job itself broke")


class PassForm(JobForm):
    full = TrueFalseField(help_text="every item, not only the changed ones")


def passes(ctx: Context) -> Result:
    """Writes one group, or three on a full pass; says which it was."""
    full = bool(ctx.params.get("full"))
    for n in range(3 if full else 1):
        Group.objects.create(name=f"pass {n} {ctx.now.isoformat()}")
    return Result({"total": 3 if full else 1, "full_pass": int(full)})


def kind_of_pass(params: Mapping[str, Any], counters: Mapping[str, Any]) -> str:
    """What the run did, or before it tells, what it was asked."""
    return "full pass" if counters.get("full_pass", params.get("full")) else "incremental"


TEST_LOCK_ID = 990001
JOBS_FOR_TESTS = [
    Job("nightly", TEST_LOCK_ID, write, "Writes groups every night.", "0 2 * * *", form=SizeForm,
        counters=("total", "written")),
    Job("frequent", 990002, write, "Writes groups every 5 minutes.", "*/5 * * * *"),
    Job("on-demand", 990003, write, "Writes groups when the app asks.", auth="internal"),
    Job("batches", 990004, batches, "Names ten groups, three at a time.", form=SizeForm, counters=("total",)),
    Job("blocking", 990005, blocking, "Waits for the test."),
    Job("failing-item", 990006, failing_item, "Its second item fails.", counters=("total", "done")),
    Job("crashing", 990007, crashing, "Raises."),
    Job("sharing", 990008, sharing, "Holds the shared thing, then waits for the test."),
]  # fmt: skip
# A job that names the kinds of its runs; only the tests of that declare it (the_passes_job in test_admin.py).
PASSES = Job("passes", 990009, passes, "Daily changed items, a weekly full pass.", "0 2 * * *", form=PassForm,
             counters=("total", "full_pass"), also=(("0 3 * * 0", "full=1"),), kind=kind_of_pass)  # fmt: skip
