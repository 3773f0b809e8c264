"""A customer's standing: their score, the tier they are treated as, what their shop requires of that tier, and
why, read in one query (for GET /api/customers/<uuid>/standing).

How fresh it is: every stored score that is not marked (scoring.models.DirtyCustomer, CustomerChange) is exact
at the window's last slide, `ScoringState.last_now` (scoring/scores.py), though its `computed_at` says when its
values last changed. So the score is as of `last_now` unless the customer is marked: then it is as of its own
`computed_at`, older than the last slide, and `stale`. A score of another window than the configured one is
stale too (the next run is a full pass).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef, Subquery

from scoring.models import (
    Action,
    Adjustment,
    BookingPolicy,
    Customer,
    CustomerChange,
    DirtyCustomer,
    ScoringState,
    Tier,
)
from scoring.policy import effective_tier, policy_for
from scoring.rules import NEW_BELOW

FIELDS = (
    "id", "shop_id", "pinned_tier", "pinned_until", "effective_tier", "requirement", "deposit_percent", "marked",
    "last_slide", "pin_reason", "score__score", "score__tier", "score__attended", "score__no_shows",
    "score__late_cancels", "score__cancellations", "score__window_days", "score__computed_at",
)  # fmt: skip


def standing(customer_id: uuid.UUID, now: datetime) -> dict[str, Any] | None:
    """The standing of a customer as the endpoint answers it (JSON-ready), or None for no such customer."""
    today = now.astimezone(UTC).date()
    policy = BookingPolicy.objects.filter(shop_id=OuterRef("shop_id"), tier=OuterRef("effective_tier"))
    pin = Adjustment.objects.filter(customer_id=OuterRef("pk"), action=Action.PIN).order_by("-at", "-id")
    row = (
        Customer.objects.filter(pk=customer_id)
        .annotate(
            effective_tier=effective_tier(today),
            requirement=Subquery(policy.values("requirement")[:1]),
            deposit_percent=Subquery(policy.values("deposit_percent")[:1]),
            marked=Exists(DirtyCustomer.objects.filter(customer_id=OuterRef("pk")))
            | Exists(CustomerChange.objects.filter(customer_id=OuterRef("pk"))),
            last_slide=Subquery(ScoringState.objects.order_by("pk").values("last_now")[:1]),
            pin_reason=Subquery(pin.values("reason")[:1]),
        )
        .values(*FIELDS)
        .first()
    )
    if row is None:
        return None
    return _body(row, today)


def _body(row: dict[str, Any], today: Any) -> dict[str, Any]:
    scored = row["score__score"] is not None
    window = settings.RECOMPUTE_SCORES_WINDOW_DAYS
    other_window = scored and row["score__window_days"] != window
    as_of = row["score__computed_at"]
    if scored and not row["marked"] and row["last_slide"] is not None and row["last_slide"] > as_of:
        as_of = row["last_slide"]  # unchanged since, and carried to the window's end by every slide
    stale = bool(row["marked"]) or other_window
    tier = row["effective_tier"]
    return {
        "customer": str(row["id"]),
        "shop": str(row["shop_id"]),
        "score": row["score__score"],
        "tier": row["score__tier"] or Tier.NEW.value,
        "effectiveTier": tier,
        "policy": policy_for(tier, row["requirement"], row["deposit_percent"]).as_json(),
        "reasons": reasons(row, today, window, stale=stale),
        "computedAt": _iso(as_of) if as_of else None,
        "stale": stale,
    }


def reasons(row: dict[str, Any], today: Any, window: int, *, stale: bool) -> list[str]:
    """Plain sentences for the booking app's staff: what the score counted, a pin, and why it may be stale."""
    said: list[str] = []
    if row["score__score"] is None:
        said.append("No score yet: a new customer")
    else:
        days = row["score__window_days"]
        missed = _count(row["score__no_shows"], "no-show") + " and " + _count(row["score__late_cancels"], "late cancel")
        said.append(f"{missed} in the last {days} days")
        total = row["score__attended"] + row["score__no_shows"] + row["score__late_cancels"]
        said.append(f"Attended {row['score__attended']} of {_count(total, 'scored appointment')}")
        if row["score__tier"] == Tier.NEW and total < NEW_BELOW:
            said.append(f"Fewer than {NEW_BELOW} scored appointments: new")
    if row["pinned_tier"] and row["pinned_until"] is not None and row["pinned_until"] >= today:
        why = f": {row['pin_reason']}" if row["pin_reason"] else ""
        said.append(f"Pinned by staff to {row['effective_tier']} until {row['pinned_until']:%d %b %Y}{why}")
    if row["marked"]:
        said.append("Changed since the last scoring run: the score is not yet recomputed")
    elif stale:
        said.append(f"Scored over {row['score__window_days']} days; the window is now {window} days until the next run")
    return said


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
