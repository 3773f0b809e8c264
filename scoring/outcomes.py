"""resolve-outcomes: finished appointments get their outcome."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction

from jobs.context import Backlog, Context, Result
from scoring.models import Appointment, Outcome
from scoring.rules import outcome_of

COUNTERS = ("total", "resolved", "skipped", "backfilled", "remaining")
CANCELLATIONS = (Outcome.LATE_CANCEL, Outcome.CANCELLED)


def resolve_outcomes(ctx: Context, *, limit: int) -> Result:
    """Give the oldest `limit` finished, still pending appointments their outcome.

    Cancelled ones become late_cancel or cancelled (`backfilled`); checked-in
    ones attended, the rest no_show (`resolved`). Each outcome is one UPDATE
    that only touches rows still pending, so an overlapping run or a re-run
    never resolves a row twice: rows changed meanwhile count as `skipped`.
    """
    grace = timedelta(minutes=settings.RESOLVE_OUTCOMES_GRACE_MINUTES)
    due = Appointment.objects.filter(outcome=Outcome.PENDING, ends_at__lt=ctx.now - grace)
    batch = due.order_by("ends_at", "id").values_list("id", "starts_at", "checked_in_at", "cancelled_at")[:limit]
    by_outcome: dict[Outcome, list[uuid.UUID]] = defaultdict(list)
    for pk, starts_at, checked_in_at, cancelled_at in batch:
        by_outcome[outcome_of(starts_at, checked_in_at, cancelled_at)].append(pk)

    counters = {"total": 0, "resolved": 0, "skipped": 0, "backfilled": 0}
    failed = 0
    for outcome, ids in by_outcome.items():
        done, broken = _resolve(ctx, ids, outcome)
        counters["backfilled" if outcome in CANCELLATIONS else "resolved"] += done
        counters["total"] += len(ids)
        failed += broken
    counters["skipped"] = counters["total"] - counters["resolved"] - counters["backfilled"] - failed
    return Result(counters, remaining=due.count())


def _resolve(ctx: Context, ids: list[uuid.UUID], outcome: Outcome) -> tuple[int, int]:
    """One UPDATE for all; if it fails, row by row, so only the bad row is lost. Returns (updated, failed)."""
    pending = Appointment.objects.filter(outcome=Outcome.PENDING)
    try:
        with transaction.atomic():
            return pending.filter(id__in=ids).update(outcome=outcome, resolved_at=ctx.now), 0
    except DatabaseError:
        pass  # find the row that breaks it, below
    updated = failed = 0
    for pk in ids:
        before = len(ctx.errors)
        with ctx.item(f"appointment {pk}"):
            updated += pending.filter(pk=pk).update(outcome=outcome, resolved_at=ctx.now)
        failed += len(ctx.errors) > before
    return updated, failed


def backlog(now: datetime) -> Backlog:
    """Finished appointments still pending after their grace: how many, and since when the oldest is due
    (two look-ups of the pending-by-end index)."""
    grace = timedelta(minutes=settings.RESOLVE_OUTCOMES_GRACE_MINUTES)
    due = Appointment.objects.filter(outcome=Outcome.PENDING, ends_at__lt=now - grace)
    oldest = due.order_by("ends_at").values_list("ends_at", flat=True).first()
    return Backlog(due.count(), oldest + grace if oldest else None)
