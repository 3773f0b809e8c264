"""resolve-outcomes: finished appointments get their outcome."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q, QuerySet

from jobs.context import Backlog, Context, Result
from scoring.models import Appointment, Outcome
from scoring.rules import outcome_in_sql

COUNTERS = ("total", "resolved", "skipped", "backfilled", "remaining")
Key = tuple[datetime, uuid.UUID]  # (ends_at, id): the order the run takes due appointments in


def resolve_outcomes(ctx: Context, *, limit: int | None = None, batch_size: int | None = None) -> Result:
    """Give every finished, still pending appointment its outcome, oldest first; only the oldest `limit` if given.

    Due: ended more than RESOLVE_OUTCOMES_GRACE_MINUTES before the run's `now`. The run walks them in
    order of their end (and id), `batch_size` (RESOLVE_OUTCOMES_BATCH_SIZE) at a time: a batch is a
    range of that order, found by reading the key of its last row, and is resolved by two UPDATEs that
    compute each outcome in the database, one for the cancelled (late_cancel or cancelled: `backfilled`)
    and one for the others (attended or no_show: `resolved`). So a batch costs the same few queries
    whatever its size, and the run holds no row in memory. Each UPDATE touches only rows still pending,
    so an overlapping run or a re-run never resolves a row twice: rows changed meanwhile count as
    `skipped`. Between batches the run stops when its time budget is spent; `remaining` is what is
    still due then (a row that failed stays there, named in the errors).
    """
    grace = timedelta(minutes=settings.RESOLVE_OUTCOMES_GRACE_MINUTES)
    due = Appointment.objects.filter(outcome=Outcome.PENDING, ends_at__lt=ctx.now - grace)
    batch_size = batch_size or settings.RESOLVE_OUTCOMES_BATCH_SIZE
    counters = {"total": 0, "resolved": 0, "skipped": 0, "backfilled": 0}
    failed = 0
    after: Key | None = None  # the last row the run took: the next batch begins after it
    while limit is None or counters["total"] < limit:
        size = batch_size if limit is None else min(batch_size, limit - counters["total"])
        todo = _after(due, after)
        last = todo.order_by("ends_at", "id").values_list("ends_at", "id")[size - 1 : size].first()
        batch, taken = (_up_to(todo, last), size) if last else (todo, todo.count())  # a full batch, or the rest
        if not taken:
            break
        resolved, backfilled, broken = _resolve(ctx, batch)
        # A row that turned due inside the range since it was counted is resolved too: count it as taken.
        counters["total"] += max(taken, resolved + backfilled + broken)
        counters["resolved"] += resolved
        counters["backfilled"] += backfilled
        failed += broken
        if last is None or ctx.out_of_time():
            break
        after = last
    counters["skipped"] = counters["total"] - counters["resolved"] - counters["backfilled"] - failed
    return Result(counters, remaining=due.count())


def _after(due: QuerySet[Appointment], after: Key | None) -> QuerySet[Appointment]:
    """The due rows after (ends_at, id) `after`, so that rows that failed are not taken again."""
    if after is None:
        return due
    ends_at, pk = after
    # ends_at >= is what the index on ends_at can seek to; the rest picks up ties.
    return due.filter(ends_at__gte=ends_at).filter(Q(ends_at__gt=ends_at) | Q(id__gt=pk))


def _up_to(due: QuerySet[Appointment], last: Key) -> QuerySet[Appointment]:
    """The due rows up to and including (ends_at, id) `last`."""
    ends_at, pk = last
    return due.filter(ends_at__lte=ends_at).filter(Q(ends_at__lt=ends_at) | Q(id__lte=pk))


def _resolve(ctx: Context, batch: QuerySet[Appointment]) -> tuple[int, int, int]:
    """Resolve the batch; if that fails, its rows one by one, so that only the bad row is lost.

    Returns (resolved, backfilled, failed).
    """
    try:
        with transaction.atomic():
            return (*_update(ctx, batch), 0)
    except DatabaseError:
        pass  # find the row that breaks it, below
    resolved = backfilled = failed = 0
    for pk in batch.values_list("id", flat=True):
        before = len(ctx.errors)
        with ctx.item(f"appointment {pk}"):
            one, other = _update(ctx, Appointment.objects.filter(pk=pk, outcome=Outcome.PENDING))
            resolved, backfilled = resolved + one, backfilled + other
        failed += len(ctx.errors) > before
    return resolved, backfilled, failed


def _update(ctx: Context, pending: QuerySet[Appointment]) -> tuple[int, int]:
    """Two UPDATEs of these rows, which must all be pending: (resolved, backfilled)."""
    fields = {"outcome": outcome_in_sql(), "resolved_at": ctx.now}
    backfilled = pending.filter(cancelled_at__isnull=False).update(**fields)
    resolved = pending.filter(cancelled_at__isnull=True).update(**fields)
    return resolved, backfilled


def backlog(now: datetime) -> Backlog:
    """Finished appointments still pending after their grace: how many, and since when the oldest is due
    (one statement over the pending-by-end index)."""
    grace = timedelta(minutes=settings.RESOLVE_OUTCOMES_GRACE_MINUTES)
    found = Backlog.of(Appointment.objects.filter(outcome=Outcome.PENDING, ends_at__lt=now - grace), "ends_at")
    return Backlog(found.due, found.oldest + grace if found.oldest else None)
