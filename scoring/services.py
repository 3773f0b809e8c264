"""The scheduled jobs' work, as plain functions.

Each takes keyword arguments and returns its counters with an `errors` list.
None of them knows whether HTTP, the shell or the admin started it: the runner
(jobs/runner.py) locks, records and times them.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TypedDict

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Case, Count, IntegerField, Value, When
from django.db.models.functions import Coalesce

from jobs.items import item
from scoring.models import (
    Appointment,
    Customer,
    CustomerScore,
    OfferStatus,
    Outcome,
    SlotOffer,
    Tier,
    WaitlistEntry,
    cancellation_outcome,
)

_FIRST = uuid.UUID(int=0)
_LAST = uuid.UUID(int=2**128 - 1)


class RecomputeCounters(TypedDict, total=False):
    total: int
    created: int
    updated: int
    unchanged: int
    remaining: int
    tier_reliable: int
    tier_watch: int
    tier_risky: int
    tier_new: int
    resume_after: str
    errors: list[str]


def recompute_scores(
    *,
    now: datetime,
    shop: uuid.UUID | None = None,
    deadline: float | None = None,
    resume_after: uuid.UUID | None = None,
    batch_size: int | None = None,
) -> RecomputeCounters:
    """Upsert one CustomerScore for every customer (of one shop, or all).

    Customers are taken in id order, `batch_size` at a time; each batch is one
    aggregate-and-upsert statement computed in the database, so the cost per
    batch is bounded and nothing grows in memory. Rows whose values did not
    change are not written. When `deadline` (time.monotonic()) passes, the run
    stops between batches and reports `remaining` and `resume_after`; every
    run scores at least one batch, so even a tiny budget makes progress.
    """
    batch_size = batch_size or settings.RECOMPUTE_SCORES_BATCH_SIZE
    customers = Customer.objects.all() if shop is None else Customer.objects.filter(shop_id=shop)
    scores = CustomerScore.objects.all() if shop is None else CustomerScore.objects.filter(customer__shop_id=shop)
    existing = scores.count()
    total = written = 0
    errors: list[str] = []
    after = resume_after or _FIRST
    while True:
        # The batch ends at its batch_size-th customer; the last one, at the end, is counted.
        boundary = customers.filter(id__gt=after).order_by("id").values_list("id", flat=True)[batch_size - 1 :][:1]
        upper = next(iter(boundary), _LAST)
        size = batch_size if upper != _LAST else customers.filter(id__gt=after).count()
        with item(errors, f"customers {after}..{upper}"):
            written += _upsert_scores(after, upper, shop, now)
            total += size
        if upper == _LAST:
            after = _LAST
            break
        after = upper
        if deadline is not None and time.monotonic() >= deadline:
            break

    created = scores.count() - existing
    counters = RecomputeCounters(
        total=total, created=created, updated=written - created, unchanged=total - written, remaining=0
    )
    if after != _LAST and (remaining := customers.filter(id__gt=after).count()):  # out of time
        counters["remaining"] = remaining
        counters["resume_after"] = str(after)
    tiers = dict(scores.values_list("tier").annotate(n=Count("*")).order_by())
    for tier in Tier:
        counters[f"tier_{tier.value}"] = tiers.get(tier.value, 0)  # type: ignore[literal-required]
    counters["errors"] = errors
    return counters


def _upsert_scores(after: uuid.UUID, upper: uuid.UUID, shop: uuid.UUID | None, now: datetime) -> int:
    """Score the customers with after < id <= upper in one statement; return rows written."""
    window_days = settings.RECOMPUTE_SCORES_WINDOW_DAYS
    ops, pk = connection.ops, Customer._meta.pk
    params = {
        "window_days": window_days,
        "now": ops.adapt_datetimefield_value(now),
        "start": ops.adapt_datetimefield_value(now - timedelta(days=window_days)),
        "after": pk.get_db_prep_value(after, connection),
        "upper": pk.get_db_prep_value(upper, connection),
        "shop": pk.get_db_prep_value(shop, connection) if shop else None,
    }
    with connection.cursor() as cursor:
        cursor.execute(_upsert_sql(connection.vendor, by_shop=shop is not None), params)
        return cursor.rowcount


def _upsert_sql(vendor: str, *, by_shop: bool) -> str:
    """The scoring rule (scoring/rules.py) in SQL that PostgreSQL and SQLite both run."""
    null_safe_differs = "IS DISTINCT FROM" if vendor == "postgresql" else "IS NOT"
    scores, appointments = CustomerScore._meta.db_table, Appointment._meta.db_table
    return f"""
        INSERT INTO {scores} (customer_id, shop_id, score, tier, attended, no_shows,
                              late_cancels, cancellations, last_appointment_at,
                              window_days, computed_at)
        SELECT id, shop_id, score,
               CASE WHEN a + n + l < 3 THEN '{Tier.NEW.value}'
                    WHEN score >= 80 THEN '{Tier.RELIABLE.value}'
                    WHEN score >= 50 THEN '{Tier.WATCH.value}'
                    ELSE '{Tier.RISKY.value}' END,
               a, n, l, c, last_at, %(window_days)s, %(now)s
        FROM (
            SELECT id, shop_id, a, n, l, c, last_at,
                   (400 * (a + 1) + 2 * a + 2 * n + l + 4) / (2 * (2 * a + 2 * n + l + 4)) AS score
            FROM (
                SELECT cu.id, cu.shop_id,
                       COUNT(CASE WHEN ap.outcome = '{Outcome.ATTENDED.value}' THEN 1 END) AS a,
                       COUNT(CASE WHEN ap.outcome = '{Outcome.NO_SHOW.value}' THEN 1 END) AS n,
                       COUNT(CASE WHEN ap.outcome = '{Outcome.LATE_CANCEL.value}' THEN 1 END) AS l,
                       COUNT(CASE WHEN ap.outcome = '{Outcome.CANCELLED.value}' THEN 1 END) AS c,
                       MAX(ap.starts_at) AS last_at
                FROM {Customer._meta.db_table} cu
                LEFT JOIN {appointments} ap
                       ON ap.customer_id = cu.id
                      AND ap.outcome <> '{Outcome.PENDING.value}'
                      AND ap.starts_at >= %(start)s AND ap.starts_at < %(now)s
                      -- the batch's range on this side too: the planner reads just its slice of the index
                      AND ap.customer_id > %(after)s AND ap.customer_id <= %(upper)s
                WHERE cu.id > %(after)s AND cu.id <= %(upper)s {"AND cu.shop_id = %(shop)s" if by_shop else ""}
                GROUP BY cu.id, cu.shop_id
            ) counted
        ) scored
        WHERE true
        ON CONFLICT (customer_id) DO UPDATE SET
            shop_id = excluded.shop_id, score = excluded.score, tier = excluded.tier,
            attended = excluded.attended, no_shows = excluded.no_shows,
            late_cancels = excluded.late_cancels, cancellations = excluded.cancellations,
            last_appointment_at = excluded.last_appointment_at,
            window_days = excluded.window_days, computed_at = excluded.computed_at
        WHERE {scores}.score <> excluded.score OR {scores}.tier <> excluded.tier
           OR {scores}.attended <> excluded.attended OR {scores}.no_shows <> excluded.no_shows
           OR {scores}.late_cancels <> excluded.late_cancels
           OR {scores}.cancellations <> excluded.cancellations
           OR {scores}.window_days <> excluded.window_days
           OR {scores}.shop_id <> excluded.shop_id
           OR {scores}.last_appointment_at {null_safe_differs} excluded.last_appointment_at
    """


class ResolveCounters(TypedDict):
    total: int
    resolved: int
    skipped: int
    backfilled: int
    remaining: int
    errors: list[str]


def resolve_outcomes(*, now: datetime, limit: int = 200) -> ResolveCounters:
    """Give the oldest `limit` finished, still pending appointments their outcome.

    Cancelled ones become late_cancel or cancelled (`backfilled`); checked-in
    ones attended, the rest no_show (`resolved`). Each outcome is one UPDATE
    that only touches rows still pending, so an overlapping run or a re-run
    never resolves a row twice: rows changed meanwhile count as `skipped`.
    """
    grace = timedelta(minutes=settings.RESOLVE_OUTCOMES_GRACE_MINUTES)
    due = Appointment.objects.filter(outcome=Outcome.PENDING, ends_at__lt=now - grace)
    batch = due.order_by("ends_at", "id").values_list("id", "starts_at", "checked_in_at", "cancelled_at")[:limit]
    by_outcome: dict[Outcome, list[uuid.UUID]] = defaultdict(list)
    for pk, starts_at, checked_in_at, cancelled_at in batch:
        by_outcome[outcome_of(starts_at, checked_in_at, cancelled_at)].append(pk)

    counters = ResolveCounters(total=0, resolved=0, skipped=0, backfilled=0, remaining=0, errors=[])
    failed = 0
    for outcome, ids in by_outcome.items():
        done, broken = _resolve(ids, outcome, now, counters["errors"])
        counters["backfilled" if outcome in (Outcome.LATE_CANCEL, Outcome.CANCELLED) else "resolved"] += done
        counters["total"] += len(ids)
        failed += broken
    counters["skipped"] = counters["total"] - counters["resolved"] - counters["backfilled"] - failed
    counters["remaining"] = due.count()
    return counters


def outcome_of(starts_at: datetime, checked_in_at: datetime | None, cancelled_at: datetime | None) -> Outcome:
    if cancelled_at is not None:
        return cancellation_outcome(starts_at, cancelled_at)
    return Outcome.ATTENDED if checked_in_at is not None else Outcome.NO_SHOW


def _resolve(ids: list[uuid.UUID], outcome: Outcome, now: datetime, errors: list[str]) -> tuple[int, int]:
    """One UPDATE for all; if it fails, row by row, so only the bad row is lost. Returns (updated, failed)."""
    pending = Appointment.objects.filter(outcome=Outcome.PENDING)
    try:
        with transaction.atomic():
            return pending.filter(id__in=ids).update(outcome=outcome, resolved_at=now), 0
    except DatabaseError:
        pass  # find the row that breaks it, below
    updated = failed = 0
    for pk in ids:
        before = len(errors)
        with item(errors, f"appointment {pk}"):
            updated += pending.filter(pk=pk).update(outcome=outcome, resolved_at=now)
        failed += len(errors) > before
    return updated, failed


class OfferCounters(TypedDict):
    total: int
    offered: int
    exhausted: int
    skipped: int
    errors: list[str]


def offer_loop(*, now: datetime, shop: uuid.UUID | None = None, limit: int = 200) -> OfferCounters:
    """Offer each open slot without a pending offer to the best-ranked waiting customer.

    A slot is open while it is a cancelled appointment still in the future that
    nobody has accepted. Ranking: highest score first, `risky` tier last,
    then the longest wait. The database enforces that a slot has at most one
    pending offer and is never offered to the same customer twice, so an
    overlapping run at worst `skipped`s a slot. `exhausted`: nobody left to ask.
    """
    open_slots = Appointment.objects.filter(cancelled_at__isnull=False, starts_at__gt=now).exclude(
        offers__status__in=[OfferStatus.PENDING, OfferStatus.ACCEPTED]
    )
    if shop is not None:
        open_slots = open_slots.filter(shop_id=shop)
    counters = OfferCounters(total=0, offered=0, exhausted=0, skipped=0, errors=[])
    for slot in open_slots.order_by("starts_at", "id")[:limit]:
        counters["total"] += 1
        with item(counters["errors"], f"slot {slot.pk}"):
            counters[_offer(slot, now)] += 1  # type: ignore[literal-required]
    return counters


def _offer(slot: Appointment, now: datetime) -> str:
    entry = next_in_line(slot)
    if entry is None:
        return "exhausted"
    try:
        with transaction.atomic():
            SlotOffer.objects.create(
                slot=slot,
                entry=entry,
                customer_id=entry.customer_id,
                offered_at=now,
                expires_at=now + timedelta(minutes=settings.OFFER_TTL_MINUTES),
            )
    except IntegrityError:
        return "skipped"  # another run offered this slot first
    return "offered"


def next_in_line(slot: Appointment) -> WaitlistEntry | None:
    """The open waitlist entry that should get this slot next, or None."""
    return (
        WaitlistEntry.objects.filter(shop_id=slot.shop_id, closed_at__isnull=True)
        .exclude(customer_id=slot.customer_id)
        .exclude(customer__offers__slot=slot)
        .annotate(
            risky=Case(
                When(customer__score__tier=Tier.RISKY, then=Value(1)), default=Value(0), output_field=IntegerField()
            ),
            rank=Coalesce("customer__score__score", Value(50)),
        )
        .order_by("risky", "-rank", "created_at", "id")
        .first()
    )


class ExpireCounters(TypedDict):
    total: int
    expired: int
    offered: int
    errors: list[str]


def expire_offers(*, now: datetime, limit: int = 200) -> ExpireCounters:
    """Expire pending offers past their time, then run the offer loop: those slots go to the
    next in line, and any slot freed since the last run gets its first offer."""
    due = SlotOffer.objects.filter(status=OfferStatus.PENDING, expires_at__lte=now)
    batch = list(due.order_by("expires_at", "id").values_list("id", flat=True)[:limit])
    expired = SlotOffer.objects.filter(id__in=batch, status=OfferStatus.PENDING).update(
        status=OfferStatus.EXPIRED, responded_at=now
    )
    next_offers = offer_loop(now=now, limit=limit)
    return ExpireCounters(
        total=len(batch), expired=expired, offered=next_offers["offered"], errors=next_offers["errors"]
    )


class OfferClosed(Exception):
    """The offer was answered, withdrawn or expired before this answer."""


def respond_to_offer(offer_id: uuid.UUID, *, accept: bool, now: datetime) -> SlotOffer:
    """A customer's answer. Accepting books them into the slot and closes their wait;
    declining passes the slot to the next in line at once."""
    with transaction.atomic():
        answered = SlotOffer.objects.filter(pk=offer_id, status=OfferStatus.PENDING, expires_at__gt=now).update(
            status=OfferStatus.ACCEPTED if accept else OfferStatus.DECLINED, responded_at=now
        )
        if not answered:
            raise OfferClosed(offer_id)
        offer = SlotOffer.objects.select_related("slot").get(pk=offer_id)
        if accept:
            Appointment.objects.create(
                shop_id=offer.slot.shop_id,
                customer_id=offer.customer_id,
                starts_at=offer.slot.starts_at,
                ends_at=offer.slot.ends_at,
            )
            WaitlistEntry.objects.filter(pk=offer.entry_id).update(closed_at=now)
        else:
            _offer(offer.slot, now)
    return offer
