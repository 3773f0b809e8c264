"""Small data helpers for tests: explicit, and always in step with the models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scoring.models import Appointment, Customer, Outcome, Shop

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def shop(name: str = "Shop") -> Shop:
    return Shop.objects.create(name=name)


def customer(at: Shop | None = None, name: str = "Customer") -> Customer:
    return Customer.objects.create(shop=at or shop(), name=name)


def appointment(
    who: Customer,
    starts_at: datetime,
    outcome: Outcome | str = Outcome.ATTENDED,
    minutes: int = 30,
) -> Appointment:
    """An appointment with a consistent outcome: resolved ones carry the times their outcome needs."""
    fields: dict[str, object] = {}
    if outcome in (Outcome.LATE_CANCEL, Outcome.CANCELLED):
        fields["cancelled_at"] = starts_at - timedelta(hours=2 if outcome == Outcome.LATE_CANCEL else 48)
    if outcome == Outcome.ATTENDED:
        fields["checked_in_at"] = starts_at
    ends_at = starts_at + timedelta(minutes=minutes)
    if outcome != Outcome.PENDING:
        fields["resolved_at"] = ends_at
    return Appointment.objects.create(
        shop_id=who.shop_id, customer=who, starts_at=starts_at, ends_at=ends_at, outcome=outcome, **fields
    )
