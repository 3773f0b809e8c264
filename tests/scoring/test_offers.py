from __future__ import annotations

from datetime import timedelta

import pytest

from scoring import offers
from scoring.models import Appointment, CustomerScore, OfferStatus, SlotOffer, Tier, WaitlistEntry
from scoring.offers import OfferClosed, next_in_line, respond_to_offer
from tests import factories as make
from tests.factories import NOW
from tests.helpers import outside_a_run

pytestmark = pytest.mark.django_db


def offer_loop(now, **kwargs):
    return outside_a_run(offers.offer_loop, now, **{"limit": 200, **kwargs})


def expire_offers(now, **kwargs):
    return outside_a_run(offers.expire_offers, now, **{"limit": 200, **kwargs})


def freed_slot(shop, hours_ahead: int = 24) -> Appointment:
    owner = make.customer(shop, "Cancelled")
    starts_at = NOW + timedelta(hours=hours_ahead)
    return Appointment.objects.create(
        shop=shop, customer=owner, starts_at=starts_at, ends_at=starts_at + timedelta(hours=1),
        cancelled_at=NOW - timedelta(hours=1),
    )  # fmt: skip


def waiting(shop, name: str, score: int | None = None, tier: Tier = Tier.WATCH, since_hours: int = 1):
    customer = make.customer(shop, name)
    if score is not None:
        CustomerScore.objects.create(
            customer=customer, shop=shop, score=score, tier=tier, attended=0, no_shows=0, late_cancels=0,
            cancellations=0, window_days=180, computed_at=NOW,
        )  # fmt: skip
    return WaitlistEntry.objects.create(shop=shop, customer=customer, created_at=NOW - timedelta(hours=since_hours))


def offered_to(slot) -> list[str]:
    return list(slot.offers.order_by("offered_at", "id").values_list("customer__name", flat=True))


def test_the_ranking_is_best_score_first_risky_last_then_longest_wait():
    shop = make.shop()
    slot = freed_slot(shop)
    waiting(shop, "risky but high", score=90, tier=Tier.RISKY)
    waiting(shop, "watch 60", score=60)
    waiting(shop, "reliable 85", score=85, tier=Tier.RELIABLE)
    waiting(shop, "no score yet", since_hours=5)  # counts as 50
    waiting(shop, "watch 60, waiting longer", score=60, since_hours=9)
    order = []
    while (entry := next_in_line(slot)) is not None:
        order.append(entry.customer.name)
        SlotOffer.objects.create(
            slot=slot, entry=entry, customer=entry.customer, offered_at=NOW, expires_at=NOW, status="declined"
        )
    assert order == ["reliable 85", "watch 60, waiting longer", "watch 60", "no score yet", "risky but high"]


def test_the_offer_loop_makes_one_pending_offer_per_open_slot_and_is_idempotent(settings):
    settings.OFFER_TTL_MINUTES = 15
    shop = make.shop()
    slots = [freed_slot(shop, hours) for hours in (10, 20)]
    waiting(shop, "first", score=90)
    waiting(shop, "second", score=70)
    other_shop = make.shop("Other")
    waiting(other_shop, "elsewhere", score=99)

    counters = offer_loop(now=NOW)
    again = offer_loop(now=NOW)

    assert counters == {"total": 2, "offered": 2, "exhausted": 0, "skipped": 0, "errors": []}
    assert again["total"] == 0
    for slot in slots:
        assert offered_to(slot) == ["first"]  # a customer may hold offers for different slots
        offer = slot.offers.get()
        assert (offer.status, offer.expires_at) == (OfferStatus.PENDING, NOW + timedelta(minutes=15))


def test_past_slots_accepted_slots_and_the_canceller_are_left_out():
    shop = make.shop()
    past = freed_slot(shop, hours_ahead=-2)
    slot = freed_slot(shop)
    assert next_in_line(slot) is None  # only the customer who cancelled is around
    counters = offer_loop(now=NOW)
    assert (counters["total"], counters["exhausted"]) == (1, 1)
    assert not past.offers.exists()


def test_expire_offers_expires_and_passes_each_freed_slot_to_exactly_one_next_customer():
    shop = make.shop()
    slots = [freed_slot(shop, hours) for hours in (10, 20, 30)]
    for name, score in (("a", 90), ("b", 80), ("c", 70)):
        waiting(shop, name, score=score)
    offer_loop(now=NOW)
    later = NOW + timedelta(minutes=16)
    counters = expire_offers(now=later)
    assert counters == {"total": 3, "expired": 3, "offered": 3, "errors": []}
    for slot in slots:
        assert offered_to(slot) == ["a", "b"]
        assert slot.offers.filter(status=OfferStatus.PENDING).count() == 1
    assert expire_offers(now=later) == {"total": 0, "expired": 0, "offered": 0, "errors": []}


def test_a_slot_is_never_offered_twice_to_one_customer_nor_to_two_at_once():
    from django.db import IntegrityError, transaction

    shop = make.shop()
    slot = freed_slot(shop)
    first, second = waiting(shop, "first"), waiting(shop, "second")
    SlotOffer.objects.create(slot=slot, entry=first, customer=first.customer, offered_at=NOW, expires_at=NOW)
    with pytest.raises(IntegrityError), transaction.atomic():
        SlotOffer.objects.create(slot=slot, entry=second, customer=second.customer, offered_at=NOW, expires_at=NOW)
    SlotOffer.objects.update(status=OfferStatus.EXPIRED)
    with pytest.raises(IntegrityError), transaction.atomic():
        SlotOffer.objects.create(slot=slot, entry=first, customer=first.customer, offered_at=NOW, expires_at=NOW)


def test_accepting_books_the_slot_and_closes_the_wait_declining_passes_it_on():
    shop = make.shop()
    slot = freed_slot(shop)
    first, second = waiting(shop, "first", score=90), waiting(shop, "second", score=80)
    offer_loop(now=NOW)
    respond_to_offer(slot.offers.get().pk, accept=False, now=NOW)
    assert dict(slot.offers.values_list("customer__name", "status")) == {"first": "declined", "second": "pending"}
    offer = slot.offers.get(status=OfferStatus.PENDING)
    respond_to_offer(offer.pk, accept=True, now=NOW)
    second.refresh_from_db()
    assert second.closed_at == NOW
    assert Appointment.objects.filter(customer=second.customer, starts_at=slot.starts_at).exists()
    assert offer_loop(now=NOW)["total"] == 0  # taken
    with pytest.raises(OfferClosed):
        respond_to_offer(offer.pk, accept=True, now=NOW)
    assert first.closed_at is None


def test_expire_offers_also_gives_a_newly_freed_slot_its_first_offer():
    shop = make.shop()
    slot = freed_slot(shop)
    waiting(shop, "first", score=90)
    assert expire_offers(now=NOW) == {"total": 0, "expired": 0, "offered": 1, "errors": []}
    assert offered_to(slot) == ["first"]
