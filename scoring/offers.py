"""The waitlist: freed slots offered to waiting customers, best score first (offer-loop, expire-offers)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, IntegerField, Value, When
from django.db.models.functions import Coalesce

from jobs.context import Context, Result
from scoring.models import Appointment, OfferStatus, SlotOffer, Tier, WaitlistEntry
from scoring.rules import UNSCORED_RANK

LOOP_COUNTERS = ("total", "offered", "exhausted", "skipped")
EXPIRE_COUNTERS = ("total", "expired", "offered")


def offer_loop(ctx: Context, *, shop: uuid.UUID | None = None, limit: int) -> Result:
    """Offer each open slot without a pending offer to the best-ranked waiting customer.

    A slot is open while it is a cancelled appointment still in the future that
    nobody has accepted. Ranking: highest score first, `risky` tier last,
    then the longest wait. The database enforces that a slot has at most one
    pending offer and is never offered to the same customer twice, so an
    overlapping run at worst `skipped`s a slot. `exhausted`: nobody left to ask.
    """
    open_slots = Appointment.objects.filter(cancelled_at__isnull=False, starts_at__gt=ctx.now).exclude(
        offers__status__in=[OfferStatus.PENDING, OfferStatus.ACCEPTED]
    )
    if shop is not None:
        open_slots = open_slots.filter(shop_id=shop)
    counters = dict.fromkeys(LOOP_COUNTERS, 0)
    for slot in open_slots.order_by("starts_at", "id")[:limit]:
        counters["total"] += 1
        with ctx.item(f"slot {slot.pk}"):
            counters[offer(slot, ctx.now)] += 1
    return Result(counters)


def offer(slot: Appointment, now: datetime) -> str:
    """Offer the slot to the next in line: `offered`, `exhausted` (nobody left) or `skipped` (raced)."""
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
            rank=Coalesce("customer__score__score", Value(UNSCORED_RANK)),
        )
        .order_by("risky", "-rank", "created_at", "id")
        .first()
    )


def expire_offers(ctx: Context, *, limit: int) -> Result:
    """Expire pending offers past their time, then run the offer loop: those slots go to the
    next in line, and any slot freed since the last run gets its first offer."""
    due = SlotOffer.objects.filter(status=OfferStatus.PENDING, expires_at__lte=ctx.now)
    batch = list(due.order_by("expires_at", "id").values_list("id", flat=True)[:limit])
    expired = SlotOffer.objects.filter(id__in=batch, status=OfferStatus.PENDING).update(
        status=OfferStatus.EXPIRED, responded_at=ctx.now
    )
    next_offers = offer_loop(ctx, limit=limit)
    return Result({"total": len(batch), "expired": expired, "offered": next_offers.counters["offered"]})


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
        answer = SlotOffer.objects.select_related("slot").get(pk=offer_id)
        if accept:
            Appointment.objects.create(
                shop_id=answer.slot.shop_id,
                customer_id=answer.customer_id,
                starts_at=answer.slot.starts_at,
                ends_at=answer.slot.ends_at,
            )
            WaitlistEntry.objects.filter(pk=answer.entry_id).update(closed_at=now)
        else:
            offer(answer.slot, now)
    return answer
