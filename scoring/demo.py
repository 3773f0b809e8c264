"""Deterministic demo data: the same seed and sizes give the same shops, people and history."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Model

from jobs.context import Context
from scoring import scores
from scoring.models import (
    Action,
    Adjustment,
    Appointment,
    Customer,
    CustomerScore,
    Outcome,
    ScoreChange,
    ScoringState,
    Shop,
    SlotOffer,
    Tier,
    WaitlistEntry,
)
from scoring.rules import LATE_CANCEL_WINDOW, outcome_of

CHUNK = 5000
FIRST = ["Ada", "Ben", "Chloe", "Dev", "Ema", "Farid", "Gita", "Hugo", "Ines", "Jon", "Kai", "Lea", "Milo", "Nora"]
LAST = ["Alves", "Brandt", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito", "Jovanovic"]
SHOPS = ["Northside Barbers", "Lumen Skin Clinic", "Studio Flow Yoga", "Cut & Colour", "Harbour Physio"]

Row = dict[str, Any]
Person = tuple[uuid.UUID, uuid.UUID, float]  # customer id, shop id, how reliable they are


def seed(*, shops: int, customers: int, appointments: int, seed: int, now: datetime) -> dict[str, int]:
    """Create the demo data in one transaction; appointments span the past year and the next 3 weeks."""
    rng = random.Random(seed)
    shop_ids = [_uuid(rng) for _ in range(shops)]
    people = [(_uuid(rng), shop_ids[i % shops], rng.uniform(0.35, 1.0)) for i in range(customers)]
    with transaction.atomic():
        _insert(Shop, ({"id": shop_id, "name": _shop_name(i), "created_at": now} for i, shop_id in enumerate(shop_ids)))
        _insert(Customer, _customers(rng, people, now))
        _insert(Appointment, _appointments(rng, people, appointments, now))
        waiting = rng.sample(people, k=max(1, customers // 10))
        _insert(WaitlistEntry, _waitlist(rng, waiting, now))
        _unanswered_offers(now)
        _history(now)
    return {"shops": shops, "customers": customers, "appointments": appointments, "waitlist entries": len(waiting)}


def reset() -> None:
    """Delete all domain data, dependents first, so each delete is one statement. The adjustment log stays: it
    is append-only (the database refuses a DELETE), and a seed that makes the same customers again finds it."""
    for model in (ScoreChange, SlotOffer, WaitlistEntry, CustomerScore, Appointment, Customer, Shop):
        model.objects.all().delete()


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _shop_name(i: int) -> str:
    name = SHOPS[i % len(SHOPS)]
    return name if i < len(SHOPS) else f"{name} {i // len(SHOPS) + 1}"


def _insert(model: type[Model], rows: Iterator[Row]) -> None:
    """Insert rows fast: COPY on PostgreSQL, chunked executemany elsewhere.

    bulk_create spends most of its time preparing each value of each model
    instance; here values go in the way Django's backend stores them
    (SQLite: UUID as hex, datetime as naive UTC text; PostgreSQL: as they are).
    """
    fields = model._meta.concrete_fields
    defaults = [field.get_default() for field in fields]
    columns = ", ".join(field.column for field in fields)
    table = model._meta.db_table
    values: Iterator[tuple[Any, ...]] = (
        tuple(row.get(f.attname, d) for f, d in zip(fields, defaults, strict=True)) for row in rows
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for value in values:
                    copy.write_row(value)
            return
        sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
        chunk: list[tuple[Any, ...]] = []
        for value in values:
            chunk.append(tuple(_sqlite(item) for item in value))
            if len(chunk) == CHUNK:
                cursor.executemany(sql, chunk)
                chunk.clear()
        cursor.executemany(sql, chunk)


def _sqlite(value: object) -> object:
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
    return value


def _customers(rng: random.Random, people: list[Person], now: datetime) -> Iterator[Row]:
    for i, (customer_id, shop_id, _) in enumerate(people):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        yield {
            "id": customer_id,
            "shop_id": shop_id,
            "name": f"{first} {last}",
            "email": f"{first}.{last}.{i}@example.com".lower() if rng.random() < 0.8 else "",
            "phone": f"+44 7700 {rng.randrange(900000):06d}" if rng.random() < 0.6 else "",
            "created_at": now - timedelta(days=400),
        }


def _unanswered_offers(now: datetime, count: int = 5) -> None:
    """A few offers that ran out unanswered a moment ago, for expire-offers to pass on."""
    slots = Appointment.objects.filter(cancelled_at__isnull=False, starts_at__gt=now).order_by("starts_at", "id")
    asked: set[uuid.UUID] = set()  # one pending offer per customer
    for slot in slots[:count]:
        entries = WaitlistEntry.objects.filter(shop_id=slot.shop_id).exclude(customer_id=slot.customer_id)
        entry = entries.exclude(customer_id__in=asked).order_by("created_at", "id").first()
        if entry is not None:
            asked.add(entry.customer_id)
            SlotOffer.objects.create(
                slot=slot, entry=entry, customer_id=entry.customer_id,
                offered_at=now - timedelta(minutes=20), expires_at=now - timedelta(minutes=5),
            )  # fmt: skip


def _history(now: datetime, weeks: int = 12) -> None:
    """A score history as if recompute-scores had run every other week until now, and staff had forgiven a
    no-show two days ago (rescored at once): the job itself at those times, its trigger writing the history
    (outside any run). Its scores and state then go, so that the first real run is a full pass from nothing, as
    on a new installation."""
    for week in range(weeks, 0, -2):
        scores.recompute_scores(Context(now=now - timedelta(weeks=week)), full=True)
    _adjustments(now)
    for days in (2, 0):
        scores.recompute_scores(Context(now=now - timedelta(days=days)), full=True)
    CustomerScore.objects.all().delete()
    ScoringState.objects.all().delete()


def _adjustments(now: datetime) -> None:
    """A customer whose latest no-show staff forgave, and whose tier they pinned, each with its entry in the
    adjustment log, as staff leave them: the one with the most no-shows of late."""
    recent = Appointment.objects.filter(outcome=Outcome.NO_SHOW, starts_at__gte=now - timedelta(days=150))
    most = recent.filter(starts_at__lt=now).values("customer_id").annotate(n=Count("id")).order_by("-n", "customer_id")
    if not (chosen := most.first()):
        return
    no_show = recent.filter(customer_id=chosen["customer_id"], starts_at__lt=now).order_by("-starts_at").first()
    assert no_show is not None
    Appointment.objects.filter(pk=no_show.pk).update(forgiven=True)
    until = (now + timedelta(days=30)).date()
    Customer.objects.filter(pk=no_show.customer_id).update(pinned_tier=Tier.RELIABLE, pinned_until=until)
    if Adjustment.objects.filter(customer_id=no_show.customer_id).exists():  # seeded again after a reset
        return
    Adjustment.objects.create(
        at=now - timedelta(days=2), by="mia.staff", action=Action.FORGIVE, shop_id=no_show.shop_id,
        customer_id=no_show.customer_id, appointment=no_show,
        reason="Snowed in: the roads to the shop were closed that morning.",
    )  # fmt: skip
    Adjustment.objects.create(
        at=now - timedelta(days=1), by="mia.staff", action=Action.PIN, shop_id=no_show.shop_id,
        customer_id=no_show.customer_id, tier=Tier.RELIABLE, until=until,
        reason="A regular for six years; the other missed visits were our booking app's double bookings.",
    )  # fmt: skip


def _waitlist(rng: random.Random, waiting: list[Person], now: datetime) -> Iterator[Row]:
    for customer_id, shop_id, _ in waiting:
        since = now - timedelta(days=rng.randrange(30), minutes=rng.randrange(1440))
        yield {"id": _uuid(rng), "shop_id": shop_id, "customer_id": customer_id, "created_at": since}


def _appointments(rng: random.Random, people: list[Person], count: int, now: datetime) -> Iterator[Row]:
    """Past ones mostly resolved (the last two days partly pending); future ones pending, some cancelled."""
    start_of_history = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=365)
    for _ in range(count):
        customer_id, shop_id, reliability = rng.choice(people)
        starts_at = start_of_history + timedelta(
            days=rng.randrange(365 + 21), hours=rng.randrange(9, 18), minutes=rng.choice([0, 15, 30, 45])
        )
        ends_at = starts_at + timedelta(minutes=rng.choice([30, 45, 60, 90]))
        row: Row = {
            "id": _uuid(rng),
            "shop_id": shop_id,
            "customer_id": customer_id,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "outcome": Outcome.PENDING.value,
            "created_at": starts_at - timedelta(days=rng.randrange(1, 30)),
        }
        if starts_at > now:
            if rng.random() < 0.1:  # a freed slot, waiting to be offered
                row["cancelled_at"] = min(now, starts_at - timedelta(hours=rng.randrange(1, 72)))
        else:
            row.update(_what_happened(rng, starts_at, reliability))
            recent = ends_at > now - timedelta(days=2)
            if not (recent and rng.random() < 0.6):  # most recent ones still await resolve-outcomes
                row["outcome"] = outcome_of(starts_at, row.get("checked_in_at"), row.get("cancelled_at")).value
                row["resolved_at"] = ends_at + timedelta(hours=1)
        yield row


def _what_happened(rng: random.Random, starts_at: datetime, reliability: float) -> Row:
    """The customer came, cancelled in time, cancelled late, or did not show."""
    roll = rng.random()
    if roll < reliability:
        return {"checked_in_at": starts_at - timedelta(minutes=rng.randrange(0, 10))}
    if roll < reliability + (1 - reliability) / 3:
        return {"cancelled_at": starts_at - timedelta(hours=rng.randrange(30, 240))}
    if roll < reliability + 2 * (1 - reliability) / 3:
        late_hours = int(LATE_CANCEL_WINDOW.total_seconds() // 3600)
        return {"cancelled_at": starts_at - timedelta(hours=rng.randrange(1, late_hours))}
    return {}
