"""The contract between the runner and a job: one Context in, one Result out."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from traceback import format_exception
from types import TracebackType
from typing import Any, ClassVar

from django.db import transaction
from django.db.models import Count, Min, QuerySet

logger = logging.getLogger("jobs")


@dataclass
class Context:
    """What a run gives its job. The job never learns whether HTTP, the shell or the admin started it.

    `params` are the job form's cleaned values. `checkpoint` is the opaque text a previous full run of the
    job returned when it stopped for lack of time (None: start from the beginning), read from the ledger by
    `resume` when the job first asks. `run_id` names the run's row in the ledger (None outside a run), for a
    job that records which run wrote what. `errors` collects what `item()` caught. `hold(name)` takes a lock
    on `name` as well as the job's, until the run ends, without waiting, or raises Held (the run is then
    recorded `skipped`, naming what was held and by whom): for what runs share whatever their lock ids
    (one job under two lock ids during a rollout, or two jobs).
    """

    now: datetime
    params: Mapping[str, Any] = field(default_factory=dict)
    deadline: float = math.inf  # a time.monotonic() value
    dry_run: bool = False
    resume: Callable[[], str | None] = lambda: None  # finds the checkpoint (see above)
    errors: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)  # the items', stored on the run
    keep_alive: Callable[[], None] = lambda: None  # renews the run's lease (SQLite) between items and batches
    hold: Callable[[str], None] = lambda name: None  # takes a named lock too (see above); no-op outside a run
    run_id: int | None = None  # the run's row in the ledger (JobRun), for what a job records of its runs

    @cached_property
    def checkpoint(self) -> str | None:
        return self.resume()

    def out_of_time(self) -> bool:
        """Whether the run's time budget is spent: stop between batches and return a checkpoint."""
        self.keep_alive()
        return time.monotonic() >= self.deadline

    def item(self, label: str) -> Item:
        """Isolate one item: `with ctx.item("customer 42"): ...` undoes just that item if it fails."""
        self.keep_alive()
        return Item(self, label)


@dataclass(frozen=True)
class Result:
    """What a job returns.

    `counters` are reported in the order the job declares them. `remaining`, when
    the job can tell, is the work it left undone (with the time budget spent, that
    makes the run `partial`). `checkpoint` is where the next full run resumes.
    """

    counters: Mapping[str, int]
    errors: Sequence[str] = ()
    remaining: int | None = None
    checkpoint: str | None = None


@dataclass(frozen=True)
class Backlog:
    """What a job has left to do, as it measures it (a job's `backlog` declaration): how many items are due,
    counted up to COUNTED and beyond that "more than", and since when the oldest has been due (None when the job
    cannot tell).

    Health reads every backlog on each call, all day: a count reads at most COUNTED + 1 rows (`counted`, `of`), so
    that it costs the same whatever the planner estimates. (An exact COUNT(*) of 3,000 due appointments among a
    million, estimated at 55,000 because the planner takes "pending" and "ended" for independent, is planned as a
    bitmap scan of them all, at 10 million past PostgreSQL's JIT threshold.)"""

    due: int
    oldest: datetime | None = None

    COUNTED: ClassVar[int] = 10_000

    @classmethod
    def of(cls, items: QuerySet[Any], by: str) -> Backlog:
        """The backlog of `items`, the oldest by their field `by` (an index in that order answers it), in one
        statement: the COUNTED + 1 oldest, counted."""
        found = items.order_by(by)[: cls.COUNTED + 1].aggregate(due=Count(by), oldest=Min(by))
        return cls(found["due"], found["oldest"])

    @classmethod
    def counted(cls, items: QuerySet[Any]) -> int:
        """How many rows `items` has, up to COUNTED + 1."""
        return items[: cls.COUNTED + 1].count()

    def __str__(self) -> str:
        return f"more than {self.COUNTED:,} due" if self.due > self.COUNTED else f"{self.due:,} due"


class Held(Exception):
    """What a run needs is held by another run (Context.hold): the run is recorded `skipped`."""

    def __init__(self, what: str, holder: str | None) -> None:
        super().__init__(f"{what} is held by {holder or 'another run'}")
        self.what, self.holder = what, holder


def one_line(error: BaseException) -> str:
    """`ExceptionClass: the first meaningful line of its message` (never PostgreSQL's `LINE 1:` or `^`)."""
    lines = [line.strip() for line in str(error).splitlines()]
    meaningful = [line for line in lines if line and line != "^" and not line.startswith(("LINE ", "HINT:"))]
    return f"{type(error).__name__}: {meaningful[0]}" if meaningful else type(error).__name__


class Item:
    """One item in its own savepoint: on failure only its writes are undone, and why is noted.

    Whatever fails is reported as itself: the item, or leaving the savepoint. Entering
    the savepoint raises its own error (the run cannot go on without a working
    connection). Count an item's success as the last statement inside the block.
    """

    def __init__(self, ctx: Context, label: str) -> None:
        self.ctx, self.label = ctx, label
        self.savepoint = transaction.atomic()

    def __enter__(self) -> None:
        self.savepoint.__enter__()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> bool:
        try:
            self.savepoint.__exit__(kind, error, tb)
        except Exception as leaving:  # the release or rollback itself failed
            error = error or leaving
        if error is None:
            return False
        if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit: not an item's failure
            return False
        self.ctx.errors.append(f"{self.label}: {one_line(error)}")
        self.ctx.tracebacks.append(f"{self.label}:\n{''.join(format_exception(error))}")
        logger.warning("job item failed: %s: %s", self.label, one_line(error))
        return True
