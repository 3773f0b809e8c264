from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.models import Status, Trigger
from jobs.runner import run_job
from scoring import offers
from scoring.models import (
    Appointment,
    Customer,
    CustomerScore,
    ExhaustedSlot,
    OfferStatus,
    SlotOffer,
    Tier,
    WaitlistEntry,
)
from scoring.offers import OfferClosed, OfferConflict, SlotUnavailable, respond_to_offer
from tests import factories as make
from tests.factories import NOW
from tests.helpers import Background, connect_elsewhere, outside_a_run, waits_on

pytestmark = pytest.mark.django_db


def offer_loop(now, **kwargs):
    return outside_a_run(offers.offer_loop, now, **{"limit": 200, **kwargs})


def expire_offers(now, **kwargs):
    return outside_a_run(offers.expire_offers, now, **{"limit": 200, **kwargs})


def freed_slot(shop, hours_ahead: int = 24, now: datetime = NOW) -> Appointment:
    owner = make.customer(shop, "Cancelled")
    starts_at = now + timedelta(hours=hours_ahead)
    return Appointment.objects.create(
        shop=shop, customer=owner, starts_at=starts_at, ends_at=starts_at + timedelta(hours=1),
        cancelled_at=now - timedelta(hours=1),
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
    waiting(shop, "risky but high", score=90, tier=Tier.RISKY)
    waiting(shop, "watch 60", score=60)
    waiting(shop, "reliable 85", score=85, tier=Tier.RELIABLE)
    waiting(shop, "no score yet", since_hours=5)  # counts as 50
    waiting(shop, "watch 60, waiting longer", score=60, since_hours=9)
    slots = [freed_slot(shop, hours) for hours in (10, 20, 30, 40, 50)]  # earliest slot first
    assert offer_loop(now=NOW)["offered"] == 5
    assert [offered_to(slot) for slot in slots] == [
        ["reliable 85"], ["watch 60, waiting longer"], ["watch 60"], ["no score yet"], ["risky but high"]
    ]  # fmt: skip


def test_the_offer_loop_gives_different_slots_to_different_customers_and_is_idempotent(settings):
    settings.OFFER_TTL_MINUTES = 15
    shop = make.shop()
    slots = [freed_slot(shop, hours) for hours in (10, 20, 30)]
    waiting(shop, "first", score=90)
    waiting(shop, "second", score=70)
    waiting(make.shop("Other"), "elsewhere", score=99)

    counters = offer_loop(now=NOW)
    again = offer_loop(now=NOW)

    assert counters == {"total": 3, "offered": 2, "exhausted": 1, "skipped": 0, "remaining": 0, "errors": []}
    assert again == {"total": 1, "offered": 0, "exhausted": 1, "skipped": 0, "remaining": 0, "errors": []}
    assert [offered_to(slot) for slot in slots] == [["first"], ["second"], []]
    offer = slots[0].offers.get()
    assert (offer.status, offer.expires_at) == (OfferStatus.PENDING, NOW + timedelta(minutes=15))


def test_a_run_makes_the_same_number_of_queries_whatever_the_number_of_slots(on_postgres):
    counts = []
    for slots in (2, 40):
        shop = make.shop(f"{slots} slots")
        for n in range(slots):
            freed_slot(shop, 10 + n)
            waiting(shop, f"waiting {n}")
        with CaptureQueriesContext(connection) as queries:
            assert offer_loop(now=NOW, shop=shop.pk)["offered"] == slots
        counts.append(len(queries))
    # Which slots someone can take, their rows, the candidates, the offers made before, who is busy, still there,
    # insert, count. PostgreSQL's one more: the offer-making turn (a run's transaction; SQLite's atomic adds its
    # BEGIN outside tests).
    assert counts == ([9, 9] if on_postgres else [8, 8])


def nothing_to_offer(slots: int) -> None:
    """`slots` open slots that nobody can take: every customer waiting there holds a pending offer, was offered
    the slot before, or is busy at its time; and the history of a past year."""
    shop = make.shop(f"{slots} slots")
    held, before, busy = waiting(shop, "holds an offer"), waiting(shop, "offered before"), waiting(shop, "busy")
    taken = freed_slot(shop, hours_ahead=5)
    SlotOffer.objects.create(
        slot=taken, entry=held, customer=held.customer, offered_at=NOW, expires_at=NOW + timedelta(hours=1)
    )
    for n in range(slots):
        slot = freed_slot(shop, hours_ahead=10 + n)
        SlotOffer.objects.create(slot=slot, entry=before, customer=before.customer, offered_at=NOW - timedelta(hours=1),
                                 expires_at=NOW - timedelta(minutes=45), status=OfferStatus.EXPIRED)  # fmt: skip
        make.appointment(busy.customer, slot.starts_at, outcome="pending")
        make.appointment(busy.customer, NOW - timedelta(days=n + 1))  # history


@pytest.mark.parametrize("slots", [2, 30])
def test_a_run_with_nothing_to_offer_makes_one_query_for_all_its_slots(slots, on_postgres, django_assert_num_queries):
    nothing_to_offer(slots)
    turn = 1 if on_postgres else 0  # PostgreSQL: the offer-making turn, with JIT off, in the same query
    idle = {"total": slots, "offered": 0, "exhausted": slots, "skipped": 0, "remaining": 0, "errors": []}
    with django_assert_num_queries(turn + 1 + 3):  # the first run examines them, and remembers what it found
        assert offer_loop(now=NOW) == idle
    with django_assert_num_queries(turn + 1):
        assert offer_loop(now=NOW) == idle
    with django_assert_num_queries(1 + turn + 1):  # the offers due (none), then the same loop
        assert expire_offers(now=NOW) == {"total": 0, "expired": 0, "offered": 0, "errors": []}


def a_newcomer(shop, slot):
    return lambda: waiting(shop, "candidate")


def a_closed_entry(shop, slot):
    entry = waiting(shop, "candidate")
    WaitlistEntry.objects.filter(pk=entry.pk).update(closed_at=NOW)
    return lambda: WaitlistEntry.objects.filter(pk=entry.pk).update(closed_at=None)


def an_entry_at_another_shop(shop, slot):
    entry = waiting(make.shop("Elsewhere"), "candidate")
    return lambda: WaitlistEntry.objects.filter(pk=entry.pk).update(shop=shop)


def a_pending_offer(shop, slot):
    entry = waiting(shop, "candidate")
    held = freed_slot(shop, hours_ahead=48)
    SlotOffer.objects.create(slot=held, entry=entry, customer=entry.customer, offered_at=NOW,
                             expires_at=NOW + timedelta(minutes=15))  # fmt: skip
    return lambda: SlotOffer.objects.filter(slot=held).update(status=OfferStatus.DECLINED, responded_at=NOW)


def an_offer_made_before(shop, slot):
    entry = waiting(shop, "candidate")
    SlotOffer.objects.create(slot=slot, entry=entry, customer=entry.customer, status=OfferStatus.EXPIRED,
                             offered_at=NOW - timedelta(hours=1), expires_at=NOW - timedelta(minutes=45))  # fmt: skip
    return lambda: SlotOffer.objects.filter(slot=slot).delete()


def a_booking(change: Callable[[Any], Any]):
    def blocked(shop, slot):
        booking = make.appointment(waiting(shop, "candidate").customer, slot.starts_at, outcome="pending")
        return lambda: change(Appointment.objects.filter(pk=booking.pk))

    return blocked


def the_slots_start(shop, slot):
    make.appointment(waiting(shop, "candidate").customer, slot.starts_at, outcome="pending")  # its first 30 minutes
    return lambda: Appointment.objects.filter(pk=slot.pk).update(starts_at=slot.starts_at + timedelta(minutes=30))


def the_slots_end(shop, slot):
    make.appointment(waiting(shop, "candidate").customer, slot.starts_at + timedelta(minutes=30), outcome="pending")
    return lambda: Appointment.objects.filter(pk=slot.pk).update(ends_at=slot.starts_at + timedelta(minutes=30))


def the_slots_own_customer(shop, slot):
    entry = waiting(shop, "candidate")
    Appointment.objects.filter(pk=slot.pk).update(customer=entry.customer)  # who cancelled is never offered it
    return lambda: Appointment.objects.filter(pk=slot.pk).update(customer=make.customer(shop, "someone else"))


FREEING = {
    "a customer starts to wait at the shop": a_newcomer,
    "a closed waitlist entry is reopened": a_closed_entry,
    "a waitlist entry moves to the shop": an_entry_at_another_shop,
    "a waiting customer's pending offer is declined": a_pending_offer,
    "the offer of that slot made before is deleted": an_offer_made_before,
    "a waiting customer's booking at that time is cancelled": a_booking(lambda rows: rows.update(cancelled_at=NOW)),
    "a waiting customer's booking at that time is moved": a_booking(
        lambda rows: rows.update(starts_at=NOW + timedelta(days=5), ends_at=NOW + timedelta(days=5, hours=1))
    ),
    "a waiting customer's booking at that time goes to someone else": a_booking(
        lambda rows: rows.update(customer=make.customer(rows.get().shop, "someone else"))
    ),
    "a waiting customer's booking at that time is deleted": a_booking(lambda rows: rows.delete()),
    "the slot starts later, when its candidate is free": the_slots_start,
    "the slot ends earlier, before its candidate is busy": the_slots_end,
    "the slot's customer changes": the_slots_own_customer,
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("blocked", FREEING.values(), ids=FREEING.keys())
def test_a_slot_found_exhausted_is_offered_by_the_next_run_once_a_write_frees_a_candidate(blocked):
    """Each write commits on its own (PostgreSQL's triggers count it at commit)."""
    shop = make.shop()
    slot = freed_slot(shop)
    free = blocked(shop, slot)
    for _ in range(2):  # found exhausted, then remembered as such
        assert offer_loop(now=NOW) | {"errors": []} == {
            "total": 1, "offered": 0, "exhausted": 1, "skipped": 0, "remaining": 0, "errors": []
        }  # fmt: skip
    assert ExhaustedSlot.objects.filter(slot_id=slot.pk).exists()
    free()
    counters = offer_loop(now=NOW)  # (a declined offer's slot is open again, nobody else waits for it)
    assert (counters["offered"], counters["exhausted"]) == (1, counters["total"] - 1)
    assert offered_to(slot)[-1] == "candidate"


@pytest.mark.django_db(transaction=True)
def test_expire_offers_offers_in_the_same_run_the_slots_its_expiries_free_a_customer_for():
    """In one transaction, as the runner calls it on PostgreSQL: the expiries are counted before the loop looks."""
    shop = make.shop()
    slot = freed_slot(shop)
    a_pending_offer(shop, slot)
    with transaction.atomic():
        assert offer_loop(now=NOW)["exhausted"] == 1
    with transaction.atomic():
        assert expire_offers(now=NOW + timedelta(minutes=20)) == {"total": 1, "expired": 1, "offered": 1, "errors": []}
    assert offered_to(slot) == ["candidate"]


def test_the_slots_a_run_found_exhausted_are_forgotten_once_they_start():
    shop = make.shop()
    freed_slot(shop, hours_ahead=2)
    later = freed_slot(shop, hours_ahead=30)
    offer_loop(now=NOW)
    assert ExhaustedSlot.objects.count() == 2
    new = freed_slot(shop, hours_ahead=40)
    offer_loop(now=NOW + timedelta(hours=3))  # remembers the new one, and forgets the one that started
    assert set(ExhaustedSlot.objects.values_list("slot_id", flat=True)) == {later.pk, new.pk}


@pytest.mark.postgres
@pytest.mark.parametrize("table", ["scoring_slotoffer", "scoring_waitlistentry", "scoring_offerwatermark"])
def test_a_truncate_of_a_table_the_findings_depend_on_forgets_them(table):
    freed_slot(make.shop())
    offer_loop(now=NOW)
    assert ExhaustedSlot.objects.exists()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table} CASCADE")
    assert not ExhaustedSlot.objects.exists()


def test_the_deferred_triggers_a_run_fires_first_are_the_databases(on_postgres):
    if not on_postgres:
        pytest.skip("SQLite's triggers are immediate")
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgdeferrable AND tgname LIKE 'scoring_%%'")
        assert {name for (name,) in cursor.fetchall()} == set(offers.WATERMARK_TRIGGERS)


def test_slots_nobody_can_take_never_starve_the_others():
    crowded, empty = make.shop(), make.shop("No waitlist")
    for hours in range(1, 201):  # 200 earlier slots in a shop where nobody waits
        freed_slot(empty, hours)
    later = freed_slot(crowded, hours_ahead=500)
    waiting(crowded, "waiting", score=80)
    counters = offer_loop(now=NOW, limit=50)
    assert (counters["offered"], counters["exhausted"], counters["total"]) == (1, 200, 201)
    assert offered_to(later) == ["waiting"]


def test_the_limit_counts_offers_and_says_how_many_takeable_slots_remain():
    shop = make.shop()
    for n in range(5):
        waiting(shop, f"w{n}")
        freed_slot(shop, 10 + n)
    assert offer_loop(now=NOW, limit=2) | {"errors": []} == {
        "total": 5, "offered": 2, "exhausted": 0, "skipped": 0, "remaining": 3, "errors": []
    }  # fmt: skip


def test_past_slots_and_the_canceller_are_left_out():
    shop = make.shop()
    past = freed_slot(shop, hours_ahead=-2)
    slot = freed_slot(shop)
    counters = offer_loop(now=NOW)
    assert (counters["total"], counters["exhausted"], counters["offered"]) == (1, 1, 0)
    assert not past.offers.exists() and not slot.offers.exists()


def test_a_customer_busy_at_that_time_is_not_offered_the_slot():
    shop = make.shop()
    slot = freed_slot(shop)
    busy = waiting(shop, "busy", score=99)
    waiting(shop, "free", score=10)
    make.appointment(busy.customer, slot.starts_at + timedelta(minutes=30))  # overlaps the slot
    offer_loop(now=NOW)
    assert offered_to(slot) == ["free"]


def test_expire_offers_expires_and_passes_each_freed_slot_to_exactly_one_next_customer():
    shop = make.shop()
    slots = [freed_slot(shop, hours) for hours in (10, 20, 30)]
    for name, score in (("a", 90), ("b", 80), ("c", 70), ("d", 60), ("e", 50), ("f", 40)):
        waiting(shop, name, score=score)
    offer_loop(now=NOW)
    later = NOW + timedelta(minutes=16)
    counters = expire_offers(now=later)
    assert counters == {"total": 3, "expired": 3, "offered": 3, "errors": []}
    # Each slot goes to the best customer not offered it yet; an expired offer does not bar a customer from others.
    assert [offered_to(slot) for slot in slots] == [["a", "b"], ["b", "a"], ["c", "d"]]
    for slot in slots:
        assert slot.offers.filter(status=OfferStatus.PENDING).count() == 1
    assert expire_offers(now=later) == {"total": 0, "expired": 0, "offered": 0, "errors": []}


def test_the_database_refuses_two_live_offers_for_a_slot_two_pending_for_a_customer_or_one_twice():
    from django.db import IntegrityError, transaction

    shop = make.shop()
    slot, other = freed_slot(shop), freed_slot(shop, 30)
    first, second = waiting(shop, "first"), waiting(shop, "second")

    def offer(slot, entry, status="pending"):
        return SlotOffer.objects.create(slot=slot, entry=entry, customer=entry.customer, offered_at=NOW,
                                        expires_at=NOW, status=status)  # fmt: skip

    offer(slot, first, status="accepted")
    for forbidden in [lambda: offer(slot, second), lambda: offer(slot, second, "accepted"), lambda: offer(slot, first)]:
        with pytest.raises(IntegrityError), transaction.atomic():
            forbidden()  # a taken slot is never offered again, nor taken twice, nor offered twice to one customer
    offer(other, second)
    with pytest.raises(IntegrityError), transaction.atomic():
        offer(freed_slot(shop, 50), second)  # a second pending offer for the same customer


def test_accepting_books_the_slot_closes_the_wait_and_withdraws_the_customers_other_offers():
    shop, elsewhere = make.shop(), make.shop("Elsewhere")
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
    assert offer_loop(now=NOW)["total"] == 0  # taken: never offered again
    with pytest.raises(OfferClosed, match="This offer is accepted"):
        respond_to_offer(offer.pk, accept=True, now=NOW)
    first.refresh_from_db()
    assert first.closed_at is None
    del elsewhere


def test_a_customer_accepted_at_one_shop_keeps_waiting_at_the_other_and_holds_one_offer_at_a_time():
    shop_a, shop_b = make.shop("A"), make.shop("B")
    slot_a, slot_b = freed_slot(shop_a, 10), freed_slot(shop_b, 30)
    both = make.customer(shop_a, "waits at both")
    entry_a = WaitlistEntry.objects.create(shop=shop_a, customer=both)
    entry_b = WaitlistEntry.objects.create(shop=shop_b, customer=both)
    waiting(shop_b, "next at B", score=10)
    offer_loop(now=NOW)
    assert offered_to(slot_a) == ["waits at both"] and offered_to(slot_b) == ["next at B"]  # one offer each
    respond_to_offer(slot_a.offers.get().pk, accept=True, now=NOW)
    entry_a.refresh_from_db()
    entry_b.refresh_from_db()
    assert (entry_a.closed_at, entry_b.closed_at) == (NOW, None)


def test_an_offer_to_a_customer_no_longer_waiting_is_refused_withdrawn_and_passed_on():
    shop = make.shop()
    slot = freed_slot(shop)
    gone = waiting(shop, "gone", score=90)
    waiting(shop, "next", score=10)
    offer_loop(now=NOW)
    WaitlistEntry.objects.filter(pk=gone.pk).update(closed_at=NOW)  # their wait closed meanwhile
    with pytest.raises(OfferClosed, match="no longer waits at this shop"):
        respond_to_offer(slot.offers.get(customer=gone.customer).pk, accept=True, now=NOW)
    assert dict(slot.offers.values_list("customer__name", "status")) == {"gone": "withdrawn", "next": "pending"}
    assert not Appointment.objects.filter(customer=gone.customer).exists()


def test_accepting_a_slot_that_would_double_book_the_customer_is_refused_with_a_message():
    shop = make.shop()
    slot = freed_slot(shop)
    entry = waiting(shop, "double", score=90)
    waiting(shop, "next", score=10)
    offer_loop(now=NOW)
    offer = slot.offers.get()
    assert offer.customer_id == entry.customer_id
    make.appointment(entry.customer, slot.starts_at)  # booked elsewhere meanwhile, same time
    with pytest.raises(OfferConflict, match=r"already has an appointment from .* which overlaps this slot"):
        respond_to_offer(offer.pk, accept=True, now=NOW)
    offer.refresh_from_db()
    assert offer.status == OfferStatus.WITHDRAWN
    assert dict(slot.offers.values_list("customer__name", "status")) == {"double": "withdrawn", "next": "pending"}
    assert Appointment.objects.filter(customer=entry.customer).count() == 1  # not booked


def test_an_offer_for_a_slot_whose_cancellation_was_undone_is_refused_with_a_message_and_withdrawn():
    shop = make.shop()
    slot = freed_slot(shop)
    entry = waiting(shop, "offered", score=90)
    waiting(shop, "next", score=10)
    offer_loop(now=NOW)
    Appointment.objects.filter(pk=slot.pk).update(cancelled_at=None)  # staff undid the cancellation meanwhile
    with pytest.raises(SlotUnavailable, match=r"booked again \(its cancellation was undone\).* offer was withdrawn"):
        respond_to_offer(slot.offers.get().pk, accept=True, now=NOW)
    assert dict(slot.offers.values_list("customer__name", "status")) == {"offered": "withdrawn"}  # nobody else
    assert not Appointment.objects.filter(customer=entry.customer).exists()
    entry.refresh_from_db()
    assert entry.closed_at is None  # still waiting for another slot


def test_an_offer_for_a_slot_that_has_started_is_refused_with_a_message_and_withdrawn(settings):
    settings.OFFER_TTL_MINUTES = 180  # the offer outlives the slot's start
    shop = make.shop()
    slot = freed_slot(shop, hours_ahead=1)
    entry = waiting(shop, "offered", score=90)
    waiting(shop, "next", score=10)
    offer_loop(now=NOW)
    later = slot.starts_at + timedelta(minutes=5)
    with pytest.raises(SlotUnavailable, match="The slot started at 2026-06-01 13:00 UTC: the offer was withdrawn"):
        respond_to_offer(slot.offers.get().pk, accept=True, now=later)
    assert dict(slot.offers.values_list("customer__name", "status")) == {"offered": "withdrawn"}  # not passed on
    assert not Appointment.objects.filter(customer=entry.customer).exists()


def an_accepted_offer() -> tuple[Appointment, SlotOffer, WaitlistEntry]:
    """A freed slot taken through an offer: the customer's wait is closed; another customer still waits."""
    shop = make.shop()
    slot = freed_slot(shop)
    entry = waiting(shop, "took it", score=90)
    waiting(shop, "still waiting", score=10)
    offer_loop(now=NOW)
    offer = respond_to_offer(slot.offers.get().pk, accept=True, now=NOW)
    entry.refresh_from_db()
    assert entry.closed_at == NOW
    return slot, offer, entry


def test_deleting_a_closed_waitlist_entry_keeps_its_accepted_offer_and_the_slot_taken():
    slot, offer, entry = an_accepted_offer()
    entry.delete()  # as staff would in the admin
    offer.refresh_from_db()
    assert (offer.status, offer.entry_id) == (OfferStatus.ACCEPTED, None)
    assert offer_loop(now=NOW)["total"] == 0  # the slot is not offered again
    assert offered_to(slot) == ["took it"]


@pytest.mark.django_db(transaction=True)
def test_a_raw_sql_delete_of_a_closed_waitlist_entry_never_takes_its_accepted_offer_with_it(on_postgres):
    slot, offer, entry = an_accepted_offer()
    with connection.cursor() as cursor:  # committed at once (autocommit): the database's own rules apply
        if on_postgres:  # the database sets the offer's entry to NULL, as the ORM does
            cursor.execute("DELETE FROM scoring_waitlistentry WHERE id = %s", [entry.pk])
            assert not WaitlistEntry.objects.filter(pk=entry.pk).exists()
        else:  # SQLite: the foreign key refuses the delete
            with pytest.raises(IntegrityError):
                cursor.execute("DELETE FROM scoring_waitlistentry WHERE id = %s", [entry.pk.hex])
            assert WaitlistEntry.objects.filter(pk=entry.pk).exists()
    offer.refresh_from_db()
    assert offer.status == OfferStatus.ACCEPTED
    assert offer_loop(now=NOW)["total"] == 0  # the slot is not offered again
    assert offered_to(slot) == ["took it"]


def test_a_pending_offer_whose_waitlist_entry_was_deleted_is_refused_as_no_longer_waiting_and_passed_on():
    shop = make.shop()
    slot = freed_slot(shop)
    gone = waiting(shop, "gone", score=90)
    waiting(shop, "next", score=10)
    offer_loop(now=NOW)
    gone.delete()
    with pytest.raises(OfferClosed, match="no longer waits at this shop"):
        respond_to_offer(slot.offers.get(customer=gone.customer).pk, accept=True, now=NOW)
    assert dict(slot.offers.values_list("customer__name", "status")) == {"gone": "withdrawn", "next": "pending"}
    assert not Appointment.objects.filter(customer=gone.customer).exists()


def two_slots_for_two_waiting(now: datetime) -> tuple[Appointment, Appointment, WaitlistEntry, WaitlistEntry]:
    """Two slots freed after `now`: the first goes to A (the better score), the second to B."""
    shop = make.shop()
    first, second = freed_slot(shop, 24, now=now), freed_slot(shop, 30, now=now)
    return first, second, waiting(shop, "A", score=90), waiting(shop, "B", score=80)


# What staff may delete while a run makes its offers, as the admin deletes it (Django's cascade): each costs A's offer.
DELETE: dict[str, Callable[[Appointment, WaitlistEntry], Any]] = {
    "waitlist entry": lambda first, a: WaitlistEntry.objects.filter(pk=a.pk).delete(),
    "customer": lambda first, a: Customer.objects.filter(pk=a.customer_id).delete(),
    "slot": lambda first, a: Appointment.objects.filter(pk=first.pk).delete(),
}


class AtQuery:
    """An execute wrapper on the run's connection: `act` runs once, just before (or just after) the first
    query whose SQL contains `marker`. It times a real step of another connection to a point of the run."""

    def __init__(self, marker: str, act: Callable[[], Any], *, after: bool = False) -> None:
        self.marker, self.act, self.after, self.done = marker, act, after, False

    def __call__(self, execute, sql, params, many, context):
        now = not self.done and self.marker in sql
        if now and not self.after:
            self.done = True
            self.act()
        result = execute(sql, params, many, context)
        if now and self.after:
            self.done = True
            self.act()
        return result


def elsewhere(work: Callable[[], Any]) -> Background:
    """`work` on another connection (a thread of its own), waited for."""
    thread = Background(work)
    thread.join(30)
    return thread


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("deleted", DELETE)
def test_a_slot_entry_or_customer_deleted_after_the_candidates_were_read_costs_the_run_only_that_offer(deleted):
    first, second, a, b = two_slots_for_two_waiting(timezone.now())
    seen: dict[str, Background] = {}

    def delete_elsewhere() -> None:
        seen["deleter"] = elsewhere(lambda: DELETE[deleted](first, a))

    # Right after the run read its candidates: the one query that ranks them by score (it alone reads the scores).
    with connection.execute_wrapper(AtQuery("scoring_customerscore", delete_elsewhere, after=True)):
        run = run_job("offer-loop", trigger=Trigger.CLI)  # the real runner: one transaction on PostgreSQL
    assert seen["deleter"].error is None
    assert run.status == Status.SUCCEEDED, run.errors
    assert (run.counters["offered"], run.counters["skipped"]) == (1, 1)
    assert list(SlotOffer.objects.values_list("slot_id", "customer_id")) == [(second.pk, b.customer_id)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("deleted", DELETE)
def test_a_run_drops_without_waiting_the_offer_whose_slot_entry_or_customer_is_being_deleted(deleted):
    first, second, a, b = two_slots_for_two_waiting(timezone.now())
    with connect_elsewhere() as watcher:
        with transaction.atomic():  # deleted, not yet committed, while the run reads and checks
            DELETE[deleted](first, a)
            run = Background(lambda: run_job("offer-loop", trigger=Trigger.CLI))
            waited = waits_on(watcher, run, connection.connection.info.backend_pid)
        run.join(30)
    assert not waited, "the run waited for a delete in flight"
    assert run.error is None and run.result.status == Status.SUCCEEDED, run.error or run.result.errors
    assert (run.result.counters["offered"], run.result.counters["skipped"]) == (1, 1)
    assert list(SlotOffer.objects.values_list("slot_id", "customer_id")) == [(second.pk, b.customer_id)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_delete_of_several_rows_in_another_order_than_the_run_never_deadlocks_with_it():
    _, _, a, b = two_slots_for_two_waiting(timezone.now())
    outcome: dict[str, Any] = {}
    with connect_elsewhere() as staff_session, connect_elsewhere() as watcher:
        with staff_session.transaction():  # one transaction deleting B's entry, then A's: the run's order reversed
            staff_session.execute("DELETE FROM scoring_waitlistentry WHERE id = %s", [b.pk])
            run = Background(lambda: run_job("offer-loop", trigger=Trigger.CLI))
            outcome["run waited"] = waits_on(watcher, run, staff_session.info.backend_pid)
            try:  # a run that locked A's entry and now waits for B's would deadlock here
                staff_session.execute("DELETE FROM scoring_waitlistentry WHERE id = %s", [a.pk])
            except psycopg.errors.DeadlockDetected as error:
                outcome["deleter"] = str(error).splitlines()[0]
        run.join(30)
    assert run.error is None and run.result.status == Status.SUCCEEDED, (run.error or run.result.errors, outcome)
    assert outcome == {"run waited": False}
    assert (run.result.counters["offered"], run.result.counters["skipped"]) == (1, 1)
    assert not WaitlistEntry.objects.exists()  # both deletes committed; A's new offer kept, its entry NULL
    assert list(SlotOffer.objects.values_list("customer_id", "entry_id")) == [(a.customer_id, None)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("deleted", DELETE)
def test_a_delete_after_the_run_checked_its_offers_waits_for_the_run_and_then_commits(deleted):
    first, second, a, b = two_slots_for_two_waiting(timezone.now())
    seen: dict[str, Any] = {}

    def delete_when_the_run_inserts() -> None:
        seen["deleter"] = Background(lambda: DELETE[deleted](first, a))
        with connect_elsewhere() as watcher:
            seen["waited"] = waits_on(watcher, seen["deleter"], connection.connection.info.backend_pid)

    with connection.execute_wrapper(AtQuery('INSERT INTO "scoring_slotoffer"', delete_when_the_run_inserts)):
        run = run_job("offer-loop", trigger=Trigger.CLI)
    seen["deleter"].join(30)
    assert seen["waited"], "the delete did not wait for the run"
    assert run.status == Status.SUCCEEDED and run.counters["offered"] == 2, run.errors
    assert seen["deleter"].error is None  # then the database's own cascade took the run's new offer, or its entry
    offers = set(SlotOffer.objects.values_list("slot_id", "customer_id", "entry_id"))
    kept = {(second.pk, b.customer_id, b.pk)}
    assert offers == (kept | {(first.pk, a.customer_id, None)} if deleted == "waitlist entry" else kept)


@pytest.mark.django_db(transaction=True)
def test_on_sqlite_no_delete_comes_between_the_runs_check_and_its_insert(on_postgres):
    if on_postgres:
        pytest.skip("on PostgreSQL the delete waits for the run (the test above)")
    _, _, a, _ = two_slots_for_two_waiting(timezone.now())
    refused: list[str] = []

    def delete_at_once() -> None:  # another connection that does not wait for the write lock
        with closing(sqlite3.connect(connection.settings_dict["NAME"], timeout=0)) as other:
            try:
                other.execute("DELETE FROM scoring_waitlistentry WHERE id = ?", [a.pk.hex])
                other.commit()
            except sqlite3.OperationalError as error:
                refused.append(str(error))

    with connection.execute_wrapper(AtQuery("UNION ALL", delete_at_once, after=True)):  # right after the check
        run = run_job("offer-loop", trigger=Trigger.CLI)
    assert refused == ["database is locked"]  # the run holds the write lock from its check to its insert
    assert run.status == Status.SUCCEEDED and run.counters["offered"] == 2, run.errors


def an_offer_elsewhere(slot) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Staff offer the slot by hand to someone who does not wait there; then that offer is declined."""
    someone = make.customer(slot.shop, "not waiting")

    def offer() -> None:
        SlotOffer.objects.create(slot=slot, customer=someone, offered_at=NOW, expires_at=NOW + timedelta(minutes=15))

    return offer, lambda: SlotOffer.objects.filter(slot=slot).update(status=OfferStatus.DECLINED, responded_at=NOW)


def an_undone_cancellation(slot) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Staff undo the slot's cancellation; then cancel it again."""
    rows = Appointment.objects.filter(pk=slot.pk)
    return lambda: rows.update(cancelled_at=None), lambda: rows.update(cancelled_at=NOW)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("closed", [an_offer_elsewhere, an_undone_cancellation])
def test_a_slot_no_longer_open_when_examined_is_examined_again_once_it_reopens(closed):
    """Between the run's first look (the slots not found exhausted) and its examination, the slot stops being
    open: the run remembers it as exhausted, unexamined. Once it is open again, the next run offers it."""
    shop = make.shop()
    slot = freed_slot(shop)
    waiting(shop, "candidate")
    close, reopen = closed(slot)
    seen: dict[str, Background] = {}

    def close_elsewhere() -> None:
        seen["staff"] = elsewhere(close)

    with connection.execute_wrapper(AtQuery("scoring_exhaustedslot", close_elsewhere, after=True)):
        assert offer_loop(now=NOW)["offered"] == 0
    assert seen["staff"].error is None
    assert ExhaustedSlot.objects.filter(slot_id=slot.pk).exists()
    reopen()
    assert offer_loop(now=NOW)["offered"] == 1
    assert slot.offers.get(status=OfferStatus.PENDING).customer.name == "candidate"
