"""What staff change by hand, and a shop's grace rule: forgiven appointments, pinned tiers, and their log.

- **Forgive** a no-show or late cancel (with a reason): it counts in no score, and the customer is rescored at
  once (scoring.scores.rescore), not at the next run. **Undo** is a new entry in the log, never a delete.
- **A shop's grace rule** (`Shop.grace_days`): recompute-scores forgives, by itself, each no-show in the window
  that had no other no-show of the customer in that many days before it, unless staff already forgave or
  unforgave it. Logged as `by = "grace rule"`.
- **Pin** a customer's tier until a date (inclusive, UTC) with a reason: the computed score stays, and the
  effective tier (effective_tier, effective_tier_expression) is the pin while it lasts. An expired pin lapses
  by itself: nothing needs to run.
- **The log** (scoring.models.Adjustment) is append-only: the database refuses UPDATE and DELETE on it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, CharField, DateTimeField, Exists, F, OuterRef, Q, QuerySet, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from scoring import scores
from scoring.models import Action, Adjustment, Appointment, Customer, CustomerScore, Outcome, Shop, Tier

FORGIVABLE = (Outcome.NO_SHOW, Outcome.LATE_CANCEL)
GRACE_RULE = "grace rule"  # `by` of the grace rule's entries


class AdjustmentError(Exception):
    """A change that cannot be made; the message says why, for staff and the shell alike."""


@dataclass(frozen=True)
class Standing:
    """A customer's score and tiers as they are now."""

    customer: Customer
    score: int | None  # None: not scored yet
    tier: Tier  # the score's (`new` without one)
    effective_tier: Tier  # the pin while it lasts, else `tier`
    pinned_until: date | None  # the last day of a pin that has not lapsed

    def __str__(self) -> str:
        score = "not scored yet" if self.score is None else f"score {self.score}"
        pinned = f", pinned {self.effective_tier} until {self.pinned_until}" if self.pinned_until else ""
        return f"{self.customer.name} ({self.customer.pk}): {score}, tier {self.tier}{pinned}"


def today_utc(now: datetime | None = None) -> date:
    """The UTC date pins are compared with."""
    return (now or timezone.now()).astimezone(UTC).date()


def effective_tier_expression(prefix: str = "", *, today: date) -> Case:
    """The effective tier as a database expression, for a queryset of customers (`prefix` ""), or of rows that
    point to one (`"customer__"`): the pinned tier while `pinned_until >= today`, else the score's tier, `new`
    without a score."""
    pinned = Q(**{f"{prefix}pinned_until__gte": today}) & ~Q(**{f"{prefix}pinned_tier": ""})
    return Case(
        When(pinned, then=F(f"{prefix}pinned_tier")),
        default=Coalesce(F(f"{prefix}score__tier"), Value(Tier.NEW.value)),
        output_field=CharField(),
    )


def effective_tier_sql(customer: str, score: str) -> str:
    """effective_tier_expression in raw SQL (PostgreSQL and SQLite), of the customer and score table aliases given:
    the tier staff pinned while the pin lasts (`pinned_until`, a UTC date, inclusive, the parameter %(today)s),
    else their score's, `new` with no score."""
    return (
        f"CASE WHEN {customer}.pinned_tier <> '' AND {customer}.pinned_until >= %(today)s "
        f"THEN {customer}.pinned_tier ELSE COALESCE({score}.tier, '{Tier.NEW.value}') END"
    )


def pin_lasts(customer: Customer, today: date) -> bool:
    return bool(customer.pinned_tier) and customer.pinned_until is not None and customer.pinned_until >= today


def effective_tier(customer: Customer, *, today: date | None = None) -> Tier:
    """The effective tier of one customer (effective_tier_expression in Python)."""
    if pin_lasts(customer, today or today_utc()):
        return Tier(customer.pinned_tier)
    score = CustomerScore.objects.filter(customer=customer).values_list("tier", flat=True).first()
    return Tier(score) if score else Tier.NEW


def standing(customer_id: uuid.UUID, *, today: date | None = None) -> Standing:
    today = today or today_utc()
    customer = Customer.objects.select_related("score").get(pk=customer_id)
    score = getattr(customer, "score", None)  # None: not scored yet
    tier = Tier(score.tier) if score else Tier.NEW
    pinned = pin_lasts(customer, today)
    return Standing(
        customer=customer,
        score=score.score if score else None,
        tier=tier,
        effective_tier=Tier(customer.pinned_tier) if pinned else tier,
        pinned_until=customer.pinned_until if pinned else None,
    )


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise AdjustmentError("A reason is required.")
    return reason


def forgive(
    appointment_id: uuid.UUID, *, by: str, reason: str, undo: bool = False, now: datetime | None = None
) -> Standing:
    """Forgive a no-show or late cancel (or, with `undo`, take the forgiveness back), log who, when and why,
    and rescore the customer at once. Raises AdjustmentError saying why it cannot be."""
    reason, now = _reason(reason), now or timezone.now()
    with transaction.atomic():
        appointment = Appointment.objects.select_for_update().filter(pk=appointment_id).first()
        if appointment is None:
            raise AdjustmentError(f"No appointment has the id {appointment_id}.")
        if undo and not appointment.forgiven:
            raise AdjustmentError("This appointment is not forgiven: there is nothing to undo.")
        if not undo and appointment.forgiven:
            raise AdjustmentError("This appointment is already forgiven.")
        if not undo and appointment.outcome not in FORGIVABLE:
            outcome = appointment.get_outcome_display()
            raise AdjustmentError(f"Only a no-show or a late cancel can be forgiven; this appointment is {outcome}.")
        Appointment.objects.filter(pk=appointment.pk).update(forgiven=not undo)  # the triggers mark the customer
        Adjustment.objects.create(
            at=now, by=by, action=Action.UNFORGIVE if undo else Action.FORGIVE, shop_id=appointment.shop_id,
            customer_id=appointment.customer_id, appointment_id=appointment.pk, reason=reason,
        )  # fmt: skip
        scores.rescore([appointment.customer_id], now)
    return standing(appointment.customer_id, today=today_utc(now))


def pin_tier(
    customer_id: uuid.UUID, tier: str, *, until: date, by: str, reason: str, now: datetime | None = None
) -> Standing:
    """Pin the customer's tier until `until` (inclusive, a UTC date), and log it."""
    reason, now = _reason(reason), now or timezone.now()
    if tier not in Tier.values:
        raise AdjustmentError(f"Unknown tier {tier!r}: one of {', '.join(Tier.values)}.")
    if until < today_utc(now):
        raise AdjustmentError(f"The pin would end on {until}, which has passed (today is {today_utc(now)} UTC).")
    with transaction.atomic():
        customer = _customer(customer_id)
        Customer.objects.filter(pk=customer.pk).update(pinned_tier=tier, pinned_until=until)
        Adjustment.objects.create(
            at=now, by=by, action=Action.PIN, shop_id=customer.shop_id, customer_id=customer.pk, tier=tier,
            until=until, reason=reason,
        )  # fmt: skip
    return standing(customer.pk, today=today_utc(now))


def unpin_tier(customer_id: uuid.UUID, *, by: str, reason: str, now: datetime | None = None) -> Standing:
    """End the customer's pin (lapsed or not), and log it."""
    reason, now = _reason(reason), now or timezone.now()
    with transaction.atomic():
        customer = _customer(customer_id)
        if not customer.pinned_tier:
            raise AdjustmentError("This customer's tier is not pinned: there is no pin to end.")
        Customer.objects.filter(pk=customer.pk).update(pinned_tier="", pinned_until=None)
        Adjustment.objects.create(
            at=now, by=by, action=Action.UNPIN, shop_id=customer.shop_id, customer_id=customer.pk,
            tier=customer.pinned_tier, until=customer.pinned_until, reason=reason,
        )  # fmt: skip
    return standing(customer.pk, today=today_utc(now))


def _customer(customer_id: uuid.UUID) -> Customer:
    customer = Customer.objects.select_for_update().filter(pk=customer_id).first()
    if customer is None:
        raise AdjustmentError(f"No customer has the id {customer_id}.")
    return customer


def apply_grace_rule(now: datetime, *, shop: uuid.UUID | None = None) -> int:
    """Forgive, in the shops with a grace rule (of one shop, or all), each no-show in the scoring window that had
    no other no-show of its customer in the shop's `grace_days` before it, and that staff have not forgiven or
    unforgiven; log each as forgiven by the grace rule. Returns how many it forgave.

    Set-based: two statements per distinct `grace_days` (an UPDATE, then an INSERT ... SELECT of the log
    entries of the no-shows it forgave: those forgiven with no entry yet). The triggers mark the customers, so
    the run that applies the rule rescores them.
    """
    shops = Shop.objects.filter(grace_days__gt=0)
    if shop is not None:
        shops = shops.filter(pk=shop)
    forgiven = 0
    start = now - timedelta(days=settings.RECOMPUTE_SCORES_WINDOW_DAYS)
    for days in shops.order_by().values_list("grace_days", flat=True).distinct():
        assert days is not None  # grace_days > 0
        no_shows = Appointment.objects.filter(
            shop__in=shops.filter(grace_days=days), outcome=Outcome.NO_SHOW, starts_at__gte=start, starts_at__lt=now
        )
        logged = Adjustment.objects.filter(appointment_id=OuterRef("pk"))
        earlier = Appointment.objects.filter(
            Q(starts_at__lt=OuterRef("starts_at")) | Q(starts_at=OuterRef("starts_at"), id__lt=OuterRef("id")),
            customer_id=OuterRef("customer_id"),
            outcome=Outcome.NO_SHOW,
            starts_at__gte=OuterRef("starts_at") - timedelta(days=days),
        )
        forgiven += no_shows.filter(forgiven=False).filter(~Exists(logged), ~Exists(earlier)).update(forgiven=True)
        _log(
            no_shows.filter(forgiven=True).filter(~Exists(logged)),
            at=now,
            reason=f"The shop's grace rule: the first no-show in {days} days.",
        )
    return forgiven


def _log(appointments: QuerySet[Appointment], *, at: datetime, reason: str) -> None:
    """Log the forgiveness of `appointments` by the grace rule, in one INSERT ... SELECT."""
    rows = (
        appointments.order_by()
        .annotate(
            _at=Value(at, output_field=DateTimeField()),
            _by=Value(GRACE_RULE),
            _action=Value(Action.FORGIVE.value),
            _tier=Value(""),
            _reason=Value(reason),
        )
        .values_list("_at", "_by", "_action", "shop_id", "customer_id", "id", "_tier", "_reason")
    )
    sql, params = rows.query.sql_with_params()
    columns = ", ".join(
        connection.ops.quote_name(name)
        for name in ("at", "by", "action", "shop_id", "customer_id", "appointment_id", "tier", "reason")
    )
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {Adjustment._meta.db_table} ({columns}) {sql}", params)
