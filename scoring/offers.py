"""The waitlist: freed slots offered to waiting customers, best score first (offer-loop, expire-offers).

What the database enforces (scoring.models.SlotOffer): a slot has at most one live offer, pending
or accepted, so a taken slot is never offered again; a customer waits on at most one pending offer;
nobody is offered the same slot twice; an offer outlives its waitlist entry (an accepted one keeps
its slot taken). What the code adds: nobody is offered a slot that overlaps an appointment they
already have; an accept re-checks that, and that the slot is still cancelled and in the future,
under the offer's and the slot's row locks; a slot, entry or customer deleted while a run makes
offers costs that one offer, never the run.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    IntegerField,
    OuterRef,
    QuerySet,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce

from jobs.context import Backlog, Context, Result
from scoring.adjustments import effective_tier_expression, today_utc
from scoring.models import (
    Appointment,
    Customer,
    ExhaustedSlot,
    OfferStatus,
    SlotOffer,
    Tier,
    WaitlistEntry,
)
from scoring.rules import UNSCORED_RANK

LOOP_COUNTERS = ("total", "offered", "exhausted", "skipped", "remaining")
EXPIRE_COUNTERS = ("total", "expired", "offered")
LIVE = [OfferStatus.PENDING, OfferStatus.ACCEPTED]
# Runs that make offers take turns (PostgreSQL): a two-key advisory lock, a key space apart from the jobs' locks.
MAKING_OFFERS = (482175, 1)
Slot = Mapping[str, Any]  # id, shop_id, customer_id, starts_at, ends_at
Match = tuple[Slot, uuid.UUID, uuid.UUID]  # a slot, and the waitlist entry and customer it goes to
# One row at least: how many slots are open, and those not found exhausted at their shop's count, if any (_unsettled).
UNSETTLED = """
    WITH open_slots AS ({open_slots})
    SELECT unsettled.*, counted.n FROM (SELECT COUNT(*) AS n FROM open_slots) counted LEFT JOIN (
        SELECT slot.id, COALESCE(shop.changes, 0) AS changes, slot.shop_id, slot.customer_id, slot.starts_at,
               slot.ends_at, slot.cancelled_at
        FROM open_slots slot LEFT JOIN scoring_offerwatermark shop ON shop.shop_id = slot.shop_id
        WHERE NOT EXISTS (
            SELECT 1 FROM scoring_exhaustedslot found
            WHERE found.slot_id = slot.id AND found.changes = COALESCE(shop.changes, 0)
              AND found.shop_id = slot.shop_id AND found.customer_id = slot.customer_id
              AND found.starts_at = slot.starts_at AND found.ends_at = slot.ends_at
              AND found.cancelled_at = slot.cancelled_at
        )
    ) unsettled ON 1 = 1
"""
# The slots found exhausted, with what the finding depends on (scoring.models.ExhaustedSlot).
# PostgreSQL: one row per element of seven arrays; SQLite: one row per parameter set (executemany).
REMEMBER = """
    INSERT INTO scoring_exhaustedslot (slot_id, changes, shop_id, customer_id, starts_at, ends_at, cancelled_at)
    {rows}
    ON CONFLICT (slot_id) DO UPDATE SET changes = excluded.changes, shop_id = excluded.shop_id,
        customer_id = excluded.customer_id, starts_at = excluded.starts_at, ends_at = excluded.ends_at,
        cancelled_at = excluded.cancelled_at
"""
REMEMBERED_ROWS = {
    "postgresql": "SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::uuid[], %s::uuid[], %s::timestamptz[], "
    "%s::timestamptz[], %s::timestamptz[])",
    "sqlite": "VALUES (%s, %s, %s, %s, %s, %s, %s)",
}
# The triggers that count the writes which could give a slot a candidate (migration 0018): deferred on PostgreSQL,
# fired by a run before it looks, so that it sees its own transaction's writes (expire-offers' expiries).
WATERMARK_TRIGGERS = (
    "scoring_waitlist_opened", "scoring_waitlist_reopened", "scoring_offer_ended", "scoring_offer_deleted",
    "scoring_booking_freed", "scoring_booking_deleted",
)  # fmt: skip
# The chosen offers whose slot, entry and customer exist, locked against deletion (see _still_there).
STILL_THERE = """
    SELECT chosen.slot_id
    FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[]) AS chosen (slot_id, entry_id, customer_id)
    JOIN scoring_appointment slot ON slot.id = chosen.slot_id
    JOIN scoring_waitlistentry entry ON entry.id = chosen.entry_id
    JOIN scoring_customer customer ON customer.id = chosen.customer_id
    FOR KEY SHARE OF slot, entry, customer SKIP LOCKED
"""


class OfferError(Exception):
    """An answer that cannot be recorded; the message says why, for staff and callers alike."""


class OfferClosed(OfferError):
    """The offer was answered, withdrawn or expired before this answer."""


class OfferConflict(OfferError):
    """Accepting would double-book the customer."""


class SlotUnavailable(OfferError):
    """The slot can no longer be given: its cancellation was undone, or it has started."""


def offer_loop(ctx: Context, *, shop: uuid.UUID | None = None, limit: int) -> Result:
    """Offer open slots to the best-ranked eligible waiting customers, `limit` offers at most."""
    counters = offer_open_slots(ctx.now, limit=limit, slots=_open_slots(ctx.now, shop))
    remaining = counters.pop("remaining")
    return Result(counters, remaining=remaining)


def offer_open_slots(now: datetime, *, limit: int, slots: QuerySet[Appointment]) -> dict[str, int]:
    """Match `slots` (open ones) to waiting customers, set-based, in a bounded number of queries.

    Slots are taken in time order, and only those that have an eligible candidate spend the
    `limit`: the others are counted as `exhausted`, so slots nobody can take never starve the
    rest. Each slot goes to the best-ranked eligible candidate not already given a slot in this
    run (highest score first, `risky` last, then the longest wait): someone else than the slot's
    own customer, waiting at its shop, with no pending offer, never offered this slot, and free
    at that time. An offer lost to a concurrent answer, or to a delete of its slot, waitlist entry
    or customer since the candidates were read, counts as `skipped`: a delete costs that one offer,
    never the run.

    offer-loop and expire-offers hold different job locks, and both make offers: two runs inserting
    offers that conflict on both unique keys (slot, customer) in different orders would deadlock, so
    on PostgreSQL they take turns, the second one matching with what the first has committed.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Our turn, until the run commits. And no JIT for the run's transaction (set_config's `true`: SET
            # LOCAL, so it works behind a transaction pooler): the planner estimates the check of the slots
            # (_takeable) far above its cost, and compiling it used to take most of an idle run.
            # The same round trip: this transaction's counts of writes first (see WATERMARK_TRIGGERS).
            cursor.execute(
                f"SET CONSTRAINTS {', '.join(WATERMARK_TRIGGERS)} IMMEDIATE; "
                "SELECT pg_advisory_xact_lock(%s, %s), set_config('jit', 'off', true)",
                MAKING_OFFERS,
            )
    batch, takeable_count, open_count = _takeable(slots, limit, now)
    exhausted = open_count - takeable_count
    counters = {"total": open_count, "offered": 0, "exhausted": exhausted, "skipped": 0}
    counters["remaining"] = max(takeable_count - len(batch), 0)
    if not batch:
        return counters
    chosen = _match(batch, _candidates(batch, today_utc(now)), _offered_before(batch), _busy(batch))
    counters["exhausted"] += len(batch) - len(chosen)
    expires_at = now + timedelta(minutes=settings.OFFER_TTL_MINUTES)
    # SQLite: one transaction from the check to the insert, which holds the write lock (IMMEDIATE).
    # PostgreSQL: already in the run's transaction (no savepoint needed: nothing here is retried).
    with transaction.atomic(savepoint=False):
        offers = [
            SlotOffer(
                slot_id=slot["id"], entry_id=entry_id, customer_id=customer_id, offered_at=now, expires_at=expires_at
            )
            for slot, entry_id, customer_id in _still_there(chosen)
        ]
        # A concurrent run or answer may have made an offer for the same slot or customer since: the
        # database's unique constraints turn those into conflicts, ignored and counted as skipped.
        SlotOffer.objects.bulk_create(offers, ignore_conflicts=True)
        counters["offered"] = SlotOffer.objects.filter(id__in=[offer.id for offer in offers]).count()
    counters["skipped"] = len(chosen) - counters["offered"]
    return counters


def _still_there(chosen: Sequence[Match]) -> list[Match]:
    """The chosen offers whose slot, entry and customer still exist, kept from deletion until the run ends.

    Staff may delete any of them after the candidates were read. On PostgreSQL the rows are locked
    FOR KEY SHARE: a delete that comes later waits for the run (and its database-side cascade then
    takes the new offer, or sets its entry to NULL: migration 0010), instead of failing the run's
    insert on a foreign key. A row already deleted is not returned, and neither is one being deleted
    right now (SKIP LOCKED: the run never waits on a delete, so a delete of several rows cannot
    deadlock with it; if that delete rolls back, the next run offers the slot). On SQLite the caller
    holds the write lock: no delete can come between this check and the insert.
    """
    if not chosen:
        return []
    slot_ids = [slot["id"] for slot, _, _ in chosen]
    entries = [entry_id for _, entry_id, _ in chosen]
    customers = [customer_id for _, _, customer_id in chosen]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(STILL_THERE, [slot_ids, entries, customers])
            kept = {slot_id for (slot_id,) in cursor.fetchall()}
        return [match for match in chosen if match[0]["id"] in kept]
    there = set(  # one query: the ids of the three kinds of rows that still exist
        Appointment.objects.filter(id__in=slot_ids)
        .order_by()
        .values_list("id", flat=True)
        .union(
            WaitlistEntry.objects.filter(id__in=entries).order_by().values_list("id", flat=True),
            Customer.objects.filter(id__in=customers).order_by().values_list("id", flat=True),
            all=True,
        )
    )
    return [match for match in chosen if {match[0]["id"], match[1], match[2]} <= there]


def _takeable(slots: QuerySet[Appointment], limit: int, now: datetime) -> tuple[list[Slot], int, int]:
    """The first `limit` slots someone can take (time order, their rows), how many can be taken, and how many are
    open.

    A slot found exhausted before (ExhaustedSlot) is not examined again while its shop's count of the writes
    that could give it a candidate (OfferWatermark, kept by triggers) and the slot's own shop, customer, times
    and cancellation are those of that finding: it still counts as exhausted. So a run with nothing to offer costs one
    query (_unsettled), which grows with the open slots (index lookups), not with the waitlist or the history.
    The other slots are examined in a second one (_examine), and those found exhausted are remembered with the
    count the first one read: a write it did not see counts higher. (When more slots can be taken than the run
    returns, it does not know which of the others are exhausted, and remembers none: the next runs look again.)
    """
    unsettled, open_count = _unsettled(slots)
    if not unsettled:
        return [], 0, open_count
    takeable, takeable_count = _examine(slots.filter(id__in=[_uuid(row[0]) for row in unsettled]), limit)
    if len(takeable) == takeable_count:
        seen = {slot["id"] for slot in takeable}
        _remember([row for row in unsettled if _uuid(row[0]) not in seen], now)
    return takeable, takeable_count, open_count


def _unsettled(slots: QuerySet[Appointment]) -> tuple[list[tuple[Any, ...]], int]:
    """The open slots not found exhausted at their shop's current count, with what a finding would depend on
    (id, count, shop, customer, start, end, cancellation, as the database sends them), and how many are open.

    One scan of the open slots (appt_cancelled_by_start), joined with the counts of their shops and with the
    findings by key."""
    fields = ("id", "shop_id", "customer_id", "starts_at", "ends_at", "cancelled_at")
    open_slots, params = slots.order_by().values(*fields).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(UNSETTLED.replace("{open_slots}", open_slots), params)
        rows = cursor.fetchall()
    return [row[:7] for row in rows if row[0] is not None], int(rows[0][7])


def _examine(slots: QuerySet[Appointment], limit: int) -> tuple[list[Slot], int]:
    """The first `limit` of `slots` someone can take (time order), and how many can be taken: one query.

    On PostgreSQL the check is a semi-join of the slots with the waiting customers of their shop who hold no
    pending offer; each pair is then answered by an index: offered this slot before (offer_once_per_customer),
    or busy at that time (appt_customer_busy: the customer's appointments ending after the slot starts).
    """
    takeable = (
        slots.filter(Exists(_eligible()))
        .annotate(how_many=Window(Count("*")))  # before the LIMIT: all the slots someone can take
        .order_by("starts_at", "id")
        .values("id", "shop_id", "customer_id", "starts_at", "ends_at", "how_many")[:limit]
    )
    rows: list[Slot] = list(takeable)
    return rows, int(rows[0]["how_many"]) if rows else 0


def _remember(found: Sequence[tuple[Any, ...]], now: datetime) -> None:
    """Remember the slots found exhausted (id, count, shop, customer, start, end, cancellation, as the database
    sent them), and forget the findings about slots that have started."""
    if not found:
        return
    remember = REMEMBER.format(rows=REMEMBERED_ROWS[connection.vendor])
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(remember, [list(column) for column in zip(*found, strict=True)])
        else:
            cursor.executemany(remember, found)
    ExhaustedSlot.objects.filter(starts_at__lte=now).delete()


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _open_slots(now: datetime, shop: uuid.UUID | None = None) -> QuerySet[Appointment]:
    """Cancelled appointments still in the future with no live (pending or accepted) offer."""
    live = SlotOffer.objects.filter(slot_id=OuterRef("pk"), status__in=LIVE)
    slots = Appointment.objects.filter(cancelled_at__isnull=False, starts_at__gt=now).filter(~Exists(live))
    return slots if shop is None else slots.filter(shop_id=shop)


def _eligible() -> QuerySet[WaitlistEntry]:
    """Open waitlist entries that could take the slot of the outer query (see offer_open_slots)."""
    pending = SlotOffer.objects.filter(customer_id=OuterRef("customer_id"), status=OfferStatus.PENDING)
    offered = SlotOffer.objects.filter(customer_id=OuterRef("customer_id"), slot_id=OuterRef(OuterRef("pk")))
    busy = Appointment.objects.filter(
        customer_id=OuterRef("customer_id"),
        cancelled_at__isnull=True,
        starts_at__lt=OuterRef(OuterRef("ends_at")),
        ends_at__gt=OuterRef(OuterRef("starts_at")),
    )
    return (
        WaitlistEntry.objects.filter(shop_id=OuterRef("shop_id"), closed_at__isnull=True)
        .exclude(customer_id=OuterRef("customer_id"))
        .filter(~Exists(pending))
        # Offered the slot before: the usual reason an idle run finds nobody, so asked first (CASE keeps the
        # order; the planner would otherwise ask who is busy first, for every pair).
        .filter(Case(When(Exists(offered), then=Value(False)), default=~Exists(busy), output_field=BooleanField()))
    )


def _candidates(batch: Sequence[Slot], today: date) -> dict[uuid.UUID, list[tuple[uuid.UUID, uuid.UUID]]]:
    """Per shop, the open entries without a pending offer, best first: (entry id, customer id). `risky` is the
    effective tier (a pinned one while it lasts, scoring.adjustments)."""
    pending = SlotOffer.objects.filter(customer_id=OuterRef("customer_id"), status=OfferStatus.PENDING)
    entries = (
        WaitlistEntry.objects.filter(shop_id__in={slot["shop_id"] for slot in batch}, closed_at__isnull=True)
        .filter(~Exists(pending))
        .annotate(
            effective_tier=effective_tier_expression("customer__", today=today),
            risky=Case(When(effective_tier=Tier.RISKY, then=Value(1)), default=Value(0), output_field=IntegerField()),
            rank=Coalesce("customer__score__score", Value(UNSCORED_RANK)),
        )
        .order_by("risky", "-rank", "created_at", "id")
        .values_list("shop_id", "id", "customer_id")
    )
    by_shop: dict[uuid.UUID, list[tuple[uuid.UUID, uuid.UUID]]] = defaultdict(list)
    for shop_id, entry_id, customer_id in entries.iterator(chunk_size=10_000):
        by_shop[shop_id].append((entry_id, customer_id))
    return by_shop


def _offered_before(batch: Sequence[Slot]) -> set[tuple[uuid.UUID, uuid.UUID]]:
    offers = SlotOffer.objects.filter(slot_id__in=[slot["id"] for slot in batch])
    return set(offers.values_list("slot_id", "customer_id"))


def _busy(batch: Sequence[Slot]) -> dict[uuid.UUID, list[tuple[datetime, datetime]]]:
    """The live appointments, during the batch's time span, of customers waiting at the batch's shops."""
    waiting = WaitlistEntry.objects.filter(
        customer_id=OuterRef("customer_id"), shop_id__in={slot["shop_id"] for slot in batch}, closed_at__isnull=True
    )
    appointments = Appointment.objects.filter(
        Exists(waiting),
        cancelled_at__isnull=True,
        starts_at__lt=max(slot["ends_at"] for slot in batch),
        ends_at__gt=min(slot["starts_at"] for slot in batch),
    )
    busy: dict[uuid.UUID, list[tuple[datetime, datetime]]] = defaultdict(list)
    for customer_id, starts_at, ends_at in appointments.values_list("customer_id", "starts_at", "ends_at"):
        busy[customer_id].append((starts_at, ends_at))
    return busy


def _match(
    batch: Sequence[Slot],
    candidates: dict[uuid.UUID, list[tuple[uuid.UUID, uuid.UUID]]],
    offered_before: set[tuple[uuid.UUID, uuid.UUID]],
    busy: dict[uuid.UUID, list[tuple[datetime, datetime]]],
) -> list[Match]:
    """Greedy, in slot order: each slot's best candidate not yet given a slot in this run."""
    given: set[uuid.UUID] = set()
    chosen: list[Match] = []
    for slot in batch:
        for entry_id, customer_id in candidates.get(slot["shop_id"], []):
            if (
                customer_id in given
                or customer_id == slot["customer_id"]
                or (slot["id"], customer_id) in offered_before
                or any(start < slot["ends_at"] and end > slot["starts_at"] for start, end in busy.get(customer_id, ()))
            ):
                continue
            given.add(customer_id)
            chosen.append((slot, entry_id, customer_id))
            break
    return chosen


def expire_offers(ctx: Context, *, limit: int) -> Result:
    """Expire pending offers past their time, then run the offer loop: those slots go to the
    next in line, and any slot freed since the last run gets its first offer."""
    due = SlotOffer.objects.filter(status=OfferStatus.PENDING, expires_at__lte=ctx.now)
    batch = list(due.order_by("expires_at", "id").values_list("id", flat=True)[:limit])
    expired = SlotOffer.objects.filter(id__in=batch, status=OfferStatus.PENDING).update(
        status=OfferStatus.EXPIRED, responded_at=ctx.now
    )
    offered = offer_open_slots(ctx.now, limit=limit, slots=_open_slots(ctx.now))["offered"]
    return Result({"total": len(batch), "expired": expired, "offered": offered})


def respond_to_offer(offer_id: uuid.UUID, *, accept: bool, now: datetime) -> SlotOffer:
    """A customer's answer, recorded in one transaction; raises OfferError saying why it cannot be.

    Accepting books the customer into the slot and closes their wait at that shop, unless the slot can
    no longer be given (its cancellation was undone, or it has started), or the customer no longer
    waits there (their entry closed or deleted), or already has an appointment at that time: then the
    offer is withdrawn, passed on if the slot is still open, and SlotUnavailable, OfferClosed or
    OfferConflict says why. Declining passes the slot on at once. The offer's row and the slot's row
    are locked first (PostgreSQL), so two answers, an answer and an expiry, or an accept and staff
    undoing the slot's cancellation (Appointment.clean locks the slot's row too) are recorded one
    after the other, the second seeing the first. (Nobody else can have taken the slot through an
    offer while this one is pending, nor does a customer hold a second pending offer to withdraw:
    the database allows neither.)
    """
    with transaction.atomic():
        # FOR UPDATE OF both rows: the slot as it is once every writer before us committed.
        lock = SlotOffer.objects.select_for_update(of=("self", "slot")).select_related("slot")
        offer = lock.filter(pk=offer_id).first()
        if offer is None:
            raise OfferClosed("This offer no longer exists: nothing was recorded.")
        if offer.status != OfferStatus.PENDING or offer.expires_at <= now:
            state = offer.status if offer.status != OfferStatus.PENDING else "expired"
            raise OfferClosed(f"This offer is {state}: nothing was recorded.")
        refused = _refusal(offer, now) if accept else None
        if accept and refused is None:
            _accept(offer, now)
        else:
            offer.status = OfferStatus.WITHDRAWN if accept else OfferStatus.DECLINED
            offer.responded_at = now
            offer.save(update_fields=["status", "responded_at"])
            offer_open_slots(now, limit=1, slots=_open_slots(now).filter(id=offer.slot_id))
    if refused is not None:
        raise refused
    return offer


def _refusal(offer: SlotOffer, now: datetime) -> OfferError | None:
    """Why the customer cannot take this slot now, if they cannot."""
    slot = offer.slot
    if slot.cancelled_at is None:
        return SlotUnavailable(
            "The slot is booked again (its cancellation was undone): accepting would put two customers at "
            f"{slot.starts_at:%Y-%m-%d %H:%M} UTC. The offer was withdrawn."
        )
    if slot.starts_at <= now:
        return SlotUnavailable(f"The slot started at {slot.starts_at:%Y-%m-%d %H:%M} UTC: the offer was withdrawn.")
    if offer.entry_id is None or WaitlistEntry.objects.filter(pk=offer.entry_id, closed_at__isnull=False).exists():
        return OfferClosed("The customer no longer waits at this shop: the offer was withdrawn and passed on.")
    if clash := _clash(offer):
        return OfferConflict(
            f"The customer already has an appointment from {clash.starts_at:%Y-%m-%d %H:%M} to "
            f"{clash.ends_at:%H:%M} UTC, which overlaps this slot: the offer was withdrawn and passed on."
        )
    return None


def _clash(offer: SlotOffer) -> Appointment | None:
    """A live appointment of the customer that overlaps the slot."""
    return (
        Appointment.objects.filter(
            customer_id=offer.customer_id,
            cancelled_at__isnull=True,
            starts_at__lt=offer.slot.ends_at,
            ends_at__gt=offer.slot.starts_at,
        )
        .order_by("starts_at")
        .first()
    )


def _accept(offer: SlotOffer, now: datetime) -> None:
    """Book the slot and close the customer's wait at that shop."""
    offer.status, offer.responded_at = OfferStatus.ACCEPTED, now
    offer.save(update_fields=["status", "responded_at"])
    Appointment.objects.create(
        shop_id=offer.slot.shop_id,
        customer_id=offer.customer_id,
        starts_at=offer.slot.starts_at,
        ends_at=offer.slot.ends_at,
    )
    WaitlistEntry.objects.filter(offers=offer).update(closed_at=now)  # the entry the offer was made from


def backlog(now: datetime) -> Backlog:
    """Pending offers past their expiry that no run has expired yet (so their slots wait for the next in line):
    how many, and since when the oldest is overdue."""
    return Backlog.of(SlotOffer.objects.filter(status=OfferStatus.PENDING, expires_at__lte=now), "expires_at")
