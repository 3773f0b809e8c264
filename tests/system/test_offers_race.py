"""Waitlist offers under concurrency, on PostgreSQL: two expire-offers loops, an offer loop, two responders,
a canceller and staff deleting, each a thread with its own connection, for 20 s with offers that expire
after 1.8 s; and single interleavings, made certain by a second session holding a lock that
`pg_blocking_pids` shows waited on."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import DatabaseError, connections
from django.urls import reverse
from django.utils import timezone

from jobs.models import JobRun, Status, Trigger
from jobs.runner import run_job
from scoring import offers
from scoring.models import Appointment, Customer, OfferStatus, Shop, SlotOffer, WaitlistEntry
from scoring.offers import MAKING_OFFERS, OfferError, SlotUnavailable, respond_to_offer
from tests.framework.test_admin import staff
from tests.helpers import ROOT, Background, connect_elsewhere, database_url, outside_a_run, waits_on
from tests.scoring.test_admin import undo_cancellation

SECONDS = 20
WAITING = Customer.objects.filter(name__startswith="waiting")
FREED = Appointment.objects.filter(cancelled_at__isnull=False, customer__name__startswith="owner ")
# Open entries without a pending offer, longest wait first: nobody has a score, so the runs offer to these next.
NEXT_IN_LINE = (
    WaitlistEntry.objects.filter(closed_at__isnull=True)
    .exclude(customer__offers__status=OfferStatus.PENDING)
    .order_by("created_at")
)


def seed(rng: random.Random) -> None:
    """3 shops; 60 customers waiting, a third of them at two shops, a fifth already booked; 90 booked
    future appointments, all in the same 3 hours, so that overlapping offers and bookings are likely."""
    now = timezone.now()
    shops = [Shop.objects.create(name=f"Shop {n}") for n in range(3)]
    hours = [now.replace(minute=0, second=0, microsecond=0) + timedelta(days=2, hours=h % 3) for h in range(30)]
    owners = [Customer.objects.create(shop=shop, name=f"owner {shop.name} {h}") for shop in shops for h in range(30)]
    Appointment.objects.bulk_create(
        Appointment(shop=owner.shop, customer=owner, starts_at=start, ends_at=start + timedelta(hours=1))
        for owner, start in zip(owners, hours * 3, strict=True)
    )
    for n in range(60):
        home = shops[n % 3]
        customer = Customer.objects.create(shop=home, name=f"waiting {n}")
        WaitlistEntry.objects.create(
            shop=home, customer=customer, created_at=now - timedelta(minutes=rng.randrange(600))
        )
        if n % 3 == 0:
            WaitlistEntry.objects.create(shop=shops[(n + 1) % 3], customer=customer)
        if n % 5 == 0:  # already booked at one of the hours: never to be offered an overlapping slot
            start = rng.choice(hours)
            Appointment.objects.create(
                shop=home, customer=customer, starts_at=start, ends_at=start + timedelta(hours=1)
            )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_offers_stay_correct_and_no_run_fails_when_loops_answers_and_deletes_race(settings):
    settings.OFFER_TTL_MINUTES = 0.03  # 1.8 s: offers expire while the others work
    rng = random.Random(14)
    seed(rng)
    start = timezone.now()
    stop = time.monotonic() + SECONDS
    tally: Counter[str] = Counter()
    crashes: list[str] = []
    taken: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]] = []  # (offer, slot, customer) of every accept recorded
    deleted: defaultdict[str, set[uuid.UUID]] = defaultdict(set)

    def forever(name: str, step: Callable[[random.Random], None]) -> Callable[[], None]:
        def loop() -> None:
            own = random.Random(name)
            try:
                while time.monotonic() < stop:
                    try:
                        step(own)
                    except OfferError as error:  # an answer refused with a message: expected under races
                        tally[f"{name}: {type(error).__name__}"] += 1
                    except Exception:
                        crashes.append(f"{name}: {traceback.format_exc()}")
            finally:
                connections.close_all()

        return loop

    def ran(run: JobRun) -> None:
        tally[f"{run.job} runs"] += 1
        tally[f"{run.job} runs {run.status}"] += 1
        if run.status not in (Status.SUCCEEDED, Status.PARTIAL):
            crashes.append(f"{run.job} run #{run.pk} {run.status}: {run.errors}")

    def expire(lock_id: int) -> Callable[[random.Random], None]:
        def step(_: random.Random) -> None:
            ran(run_job("expire-offers", {"lock_id": lock_id}, trigger=Trigger.CLI))  # own lock ids: really parallel

        return step

    def loop(_: random.Random) -> None:
        ran(run_job("offer-loop", {"lock_id": 990303}, trigger=Trigger.CLI))

    def answer(accept: bool) -> Callable[[random.Random], None]:
        def step(own: random.Random) -> None:
            pending = list(SlotOffer.objects.filter(status=OfferStatus.PENDING).values_list("id", flat=True)[:50])
            if pending:
                offer = respond_to_offer(own.choice(pending), accept=accept, now=timezone.now())
                tally["accepted" if accept else "declined"] += 1
                if accept:
                    taken.append((offer.pk, offer.slot_id, offer.customer_id))
            time.sleep(0.4)  # slower than the loops: some offers expire unanswered

        return step

    def cancel(own: random.Random) -> None:  # the shops' regulars cancel: new slots keep coming
        regulars = Appointment.objects.filter(cancelled_at__isnull=True, customer__name__startswith="owner ")
        if booked := list(regulars.values_list("id", flat=True)):
            Appointment.objects.filter(id=own.choice(booked)).update(cancelled_at=timezone.now())
            tally["cancelled"] += 1
        time.sleep(0.2)

    def delete(own: random.Random) -> None:
        """Staff delete as the admin does (Django's cascade): one or two waitlist entries in one statement, most
        often among the next in line (those the runs are about to offer slots to), else any, closed ones too;
        now and then a waiting customer, or a freed slot. As many new customers join the waitlist."""
        kind = own.choices(["entries", "customer", "slot"], weights=[6, 1, 1])[0]
        entries = NEXT_IN_LINE[:5] if own.random() < 0.8 else WaitlistEntry.objects.all()
        gone = 1
        try:
            if kind == "entries" and (ids := list(entries.values_list("id", flat=True))):
                chosen = own.sample(ids, min(len(ids), own.randint(1, 2)))
                gone = WaitlistEntry.objects.filter(id__in=chosen).delete()[1].get("scoring.WaitlistEntry", 0)
                tally["entries deleted"] += gone
            elif kind == "customer" and (waiting := list(WAITING.values_list("id", flat=True))):
                customer = own.choice(waiting)
                Customer.objects.filter(id=customer).delete()
                deleted["customers"].add(customer)
                tally["customers deleted"] += 1
            elif kind == "slot" and (freed := list(FREED.values_list("id", flat=True))):
                slot = own.choice(freed)
                Appointment.objects.filter(id=slot).delete()
                deleted["slots"].add(slot)
                tally["slots deleted"] += 1
        except DatabaseError as error:  # staff's delete refused by the database: theirs to retry, not a run's
            tally[f"{kind} deletes refused: {type(error).__name__}"] += 1
        for _ in range(gone):
            shop = own.choice(list(Shop.objects.all()))
            joined = Customer.objects.create(shop=shop, name=f"waiting, joined {tally['joined']}")
            WaitlistEntry.objects.create(shop=shop, customer=joined)
            tally["joined"] += 1
        time.sleep(0.05)

    workers = {
        "expire A": expire(990301), "expire B": expire(990302), "offer-loop": loop,
        "accepting": answer(True), "declining": answer(False), "cancelling": cancel, "deleting": delete,
    }  # fmt: skip
    threads = [threading.Thread(target=forever(name, step), name=name) for name, step in workers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SECONDS + 60)

    offers = list(SlotOffer.objects.values_list("slot_id", "customer_id", "status", "entry_id"))
    runs = JobRun.objects.filter(job__in=["offer-loop", "expire-offers"])
    skipped = sum(counters.get("skipped", 0) for counters in runs.values_list("counters", flat=True))
    print(
        f"{len(offers)} offers: {dict(Counter(status for _, _, status, _ in offers))}; "
        f"{sum(entry is None for *_, entry in offers)} without an entry; runs: "
        f"{dict(Counter(runs.values_list('status', flat=True)))}; offer-loop skipped {skipped}; {dict(tally)}"
    )
    assert crashes == [], "\n".join(crashes[:5])
    assert set(runs.values_list("status", flat=True)) <= {Status.SUCCEEDED, Status.PARTIAL}, "a run failed"
    assert tally["accepted"] > 10 and tally["declined"] > 10 and tally["expire-offers runs"] > 10
    assert tally["entries deleted"] > 20 and deleted["customers"] and deleted["slots"]

    accepted = [(slot, customer, entry) for slot, customer, status, entry in offers if status == OfferStatus.ACCEPTED]
    pending = [(slot, customer) for slot, customer, status, _ in offers if status == OfferStatus.PENDING]
    assert not [s for s, n in Counter(slot for slot, _, _ in accepted).items() if n > 1], "a slot accepted twice"
    # A slot is given to one customer, or to another after the first was deleted (their booking went with them).
    takers = defaultdict(list)
    for _, slot, customer in taken:
        takers[slot].append(customer)
    assert all(not set(taken_by[:-1]) - deleted["customers"] for taken_by in takers.values()), "a slot given twice"
    assert not {slot for slot, _ in pending} & {slot for slot, _, _ in accepted}, "a taken slot still offered"
    assert not [c for c, n in Counter(customer for _, customer in pending).items() if n > 1], "two pending offers"
    closed = dict(WaitlistEntry.objects.values_list("id", "closed_at"))
    assert all(closed[entry] is not None for _, _, entry in accepted if entry), "an accepted customer still waiting"
    # An accepted offer goes only with its slot or its customer, never with a deleted waitlist entry.
    kept = dict(SlotOffer.objects.filter(id__in=[offer for offer, _, _ in taken]).values_list("id", "status"))
    for offer, slot, customer in taken:
        assert kept.get(offer) == OfferStatus.ACCEPTED or slot in deleted["slots"] or customer in deleted["customers"]

    # No overlapping bookings made through offers: each booking against the customer's other live appointments.
    slots = dict(Appointment.objects.in_bulk([slot for slot, _, _ in accepted]).items())
    live = defaultdict(list)
    for customer, starts, ends, created in Appointment.objects.filter(cancelled_at__isnull=True).values_list(
        "customer_id", "starts_at", "ends_at", "created_at"
    ):
        live[customer].append((starts, ends, created))
    for slot_id, customer, _ in accepted:
        slot = slots[slot_id]
        same_time = [a for a in live[customer] if a[0] < slot.ends_at and a[1] > slot.starts_at]
        assert len(same_time) <= 1, f"customer {customer} double-booked at {slot.starts_at} ({same_time})"
    assert start < timezone.now()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_runs_that_make_offers_take_turns():
    """offer-loop and expire-offers hold different job locks: a real offer-loop process waits for a session
    that holds the offer-making lock (the two would otherwise insert crossing offers and deadlock)."""
    seed(random.Random(5))
    env = {**os.environ, "DATABASE_URL": database_url()}
    with connect_elsewhere() as holder, connect_elsewhere() as watcher, holder.transaction():
        holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", MAKING_OFFERS)
        process = subprocess.Popen([sys.executable, "manage.py", "offer_loop"], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline, waited = time.monotonic() + 30, False
        while not waited and process.poll() is None and time.monotonic() < deadline:
            waited = bool(watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [holder.info.backend_pid]
            ).fetchall())  # fmt: skip
            time.sleep(0.01)
    assert process.wait(60) == 0, process.stderr.read()
    assert waited, "the offer loop made its offers without waiting for its turn"


def an_offered_slot() -> tuple[Appointment, SlotOffer, WaitlistEntry]:
    """A slot freed for tomorrow, offered to the one customer waiting at its shop."""
    shop = Shop.objects.create(name="Shop")
    owner, waiting = (Customer.objects.create(shop=shop, name=name) for name in ("owner", "waiting"))
    starts_at = timezone.now() + timedelta(days=1)
    slot = Appointment.objects.create(
        shop=shop, customer=owner, starts_at=starts_at, ends_at=starts_at + timedelta(hours=1),
        cancelled_at=timezone.now(),
    )  # fmt: skip
    entry = WaitlistEntry.objects.create(shop=shop, customer=waiting)
    outside_a_run(offers.offer_loop, timezone.now(), limit=10)
    return slot, SlotOffer.objects.get(), entry


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_accept_waits_for_staff_undoing_the_slots_cancellation_and_then_refuses():
    slot, offer, entry = an_offered_slot()
    with connect_elsewhere() as staff_session, connect_elsewhere() as watcher:
        with staff_session.transaction():  # the un-cancel is written, not yet committed, when the accept starts
            staff_session.execute("UPDATE scoring_appointment SET cancelled_at = NULL WHERE id = %s", [slot.pk])
            accept = Background(lambda: respond_to_offer(offer.pk, accept=True, now=timezone.now()))
            waited = waits_on(watcher, accept, staff_session.info.backend_pid)
        accept.join(30)
    assert waited, "the accept read the slot without waiting for the un-cancel"
    assert isinstance(accept.error, SlotUnavailable), accept.error or accept.result
    offer.refresh_from_db()
    assert offer.status == OfferStatus.WITHDRAWN
    assert not Appointment.objects.filter(customer=entry.customer).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_staff_undoing_a_cancellation_wait_for_an_accept_in_flight_and_are_then_refused():
    slot, offer, entry = an_offered_slot()
    client = staff(superuser=True)
    url = reverse("admin:scoring_appointment_change", args=[slot.pk])
    form = {**undo_cancellation(slot), "csrfmiddlewaretoken": client.get(url).cookies["csrftoken"].value}
    with connect_elsewhere() as holder, connect_elsewhere() as watcher:
        with holder.transaction():  # the accept stops at closing the customer's wait, the slot locked and booked
            holder.execute("SELECT 1 FROM scoring_waitlistentry WHERE id = %s FOR UPDATE", [entry.pk])
            accept = Background(lambda: respond_to_offer(offer.pk, accept=True, now=timezone.now()))
            assert waits_on(watcher, accept, holder.info.backend_pid)
            undo = Background(lambda: client.post(url, form))
            undo_waited = waits_on(watcher, undo, accept.pid)
        accept.join(30)
        undo.join(30)
    assert undo_waited, "the admin did not wait for the accept"
    assert accept.error is None and accept.result.status == OfferStatus.ACCEPTED, accept.error
    assert undo.error is None and undo.result.status_code == 200, undo.error or undo.result.status_code
    assert "undoing the cancellation would book two customers" in undo.result.content.decode()
    slot.refresh_from_db()
    assert slot.cancelled_at is not None
