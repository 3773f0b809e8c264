"""Deterministic demo data: the same seed and sizes give the same shops, people and history."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db import transaction

from scoring.models import LATE_CANCEL_WINDOW, Appointment, Customer, Outcome, Shop, cancellation_outcome

CHUNK = 5000
FIRST = ["Ada", "Ben", "Chloe", "Dev", "Ema", "Farid", "Gita", "Hugo", "Ines", "Jon", "Kai", "Lea", "Milo", "Nora"]
LAST = ["Alves", "Brandt", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ito", "Jovanovic"]
SHOPS = ["Northside Barbers", "Lumen Skin Clinic", "Studio Flow Yoga", "Cut & Colour", "Harbour Physio"]


def seed(*, shops: int, customers: int, appointments: int, seed: int, now: datetime) -> dict[str, int]:
    """Create the demo data in one transaction; appointments span the past year and the next 3 weeks."""
    rng = random.Random(seed)
    with transaction.atomic():
        shop_rows = Shop.objects.bulk_create(
            Shop(id=_uuid(rng), name=f"{SHOPS[i % len(SHOPS)]}{f' {i // len(SHOPS) + 1}' if i >= len(SHOPS) else ''}")
            for i in range(shops)
        )
        people = [(_uuid(rng), shop_rows[i % shops].id, rng.uniform(0.35, 1.0)) for i in range(customers)]
        for chunk in _chunks(_customers(rng, people)):
            Customer.objects.bulk_create(chunk)
        for chunk in _chunks(_appointments(rng, people, appointments, now)):
            Appointment.objects.bulk_create(chunk)
    return {"shops": shops, "customers": customers, "appointments": appointments}


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _chunks(rows: Iterator[object]) -> Iterator[list]:
    chunk: list = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _customers(rng: random.Random, people: list[tuple[uuid.UUID, uuid.UUID, float]]) -> Iterator[Customer]:
    for i, (customer_id, shop_id, _) in enumerate(people):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        yield Customer(
            id=customer_id,
            shop_id=shop_id,
            name=f"{first} {last}",
            email=f"{first}.{last}.{i}@example.com".lower() if rng.random() < 0.8 else "",
            phone=f"+44 7700 {rng.randrange(900000):06d}" if rng.random() < 0.6 else "",
        )


def _appointments(
    rng: random.Random, people: list[tuple[uuid.UUID, uuid.UUID, float]], count: int, now: datetime
) -> Iterator[Appointment]:
    """Past ones mostly resolved (the last two days partly pending); future ones pending, some cancelled."""
    start_of_history = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=365)
    for _ in range(count):
        customer_id, shop_id, reliability = rng.choice(people)
        starts_at = start_of_history + timedelta(
            days=rng.randrange(365 + 21), hours=rng.randrange(9, 18), minutes=rng.choice([0, 15, 30, 45])
        )
        ends_at = starts_at + timedelta(minutes=rng.choice([30, 45, 60, 90]))
        appointment = Appointment(
            id=_uuid(rng), shop_id=shop_id, customer_id=customer_id, starts_at=starts_at, ends_at=ends_at,
            created_at=starts_at - timedelta(days=rng.randrange(1, 30)),
        )  # fmt: skip
        if starts_at > now:
            if rng.random() < 0.1:  # a freed slot, waiting to be offered
                appointment.cancelled_at = min(now, starts_at - timedelta(hours=rng.randrange(1, 72)))
        elif ends_at > now - timedelta(days=2) and rng.random() < 0.6:
            _act(rng, appointment, reliability)  # happened, not yet resolved
        else:
            _act(rng, appointment, reliability)
            appointment.outcome = _outcome_of(appointment)
            appointment.resolved_at = ends_at + timedelta(hours=1)
        yield appointment


def _act(rng: random.Random, appointment: Appointment, reliability: float) -> None:
    """What the customer did: came, cancelled (late or in time), or did not show."""
    roll = rng.random()
    if roll < reliability:
        appointment.checked_in_at = appointment.starts_at - timedelta(minutes=rng.randrange(0, 10))
    elif roll < reliability + (1 - reliability) / 3:
        appointment.cancelled_at = appointment.starts_at - timedelta(hours=rng.randrange(30, 240))
    elif roll < reliability + 2 * (1 - reliability) / 3:
        hours = rng.randrange(1, int(LATE_CANCEL_WINDOW.total_seconds() // 3600))
        appointment.cancelled_at = appointment.starts_at - timedelta(hours=hours)


def _outcome_of(appointment: Appointment) -> Outcome:
    if appointment.cancelled_at is not None:
        return cancellation_outcome(appointment.starts_at, appointment.cancelled_at)
    return Outcome.ATTENDED if appointment.checked_in_at is not None else Outcome.NO_SHOW
