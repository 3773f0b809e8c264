"""A customer's standing: their score, the tier they are treated as, what their shop requires of that tier, and
why, read in one query (for GET /api/customers/<uuid>/standing).

How fresh it is: every stored score that is not marked (scoring.models.DirtyCustomer, CustomerChange) is exact
at the window's last slide, `ScoringState.last_now` (scoring/scores.py), though its `computed_at` says when its
values last changed. So the score is as of `last_now` unless the customer is marked: then it is as of its own
`computed_at`, older than the last slide, and `stale`. A score of another window than the configured one is
stale too (the next run is a full pass).

The query is plain SQL, written once: the ORM spent ten times the query's own time compiling its six subqueries
on every request.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils.dateparse import parse_date, parse_datetime

from scoring.adjustments import effective_tier_sql
from scoring.models import (
    Action,
    Adjustment,
    BookingPolicy,
    Customer,
    CustomerChange,
    CustomerScore,
    DirtyCustomer,
    ScoringState,
    Tier,
)
from scoring.policy import policy_for
from scoring.rules import NEW_BELOW

COLUMNS = (
    "shop_id", "pinned_tier", "pinned_until", "effective_tier", "requirement", "deposit_percent", "marked",
    "last_slide", "pin_reason", "score", "tier", "attended", "no_shows", "late_cancels", "window_days", "computed_at",
)  # fmt: skip


@cache
def _sql() -> str:
    tier = effective_tier_sql("cu", "sc")
    return f"""
        SELECT cu.shop_id, cu.pinned_tier, cu.pinned_until, {tier},
               po.requirement, po.deposit_percent,
               EXISTS (SELECT 1 FROM {DirtyCustomer._meta.db_table} d WHERE d.customer_id = cu.id)
                 OR EXISTS (SELECT 1 FROM {CustomerChange._meta.db_table} ch WHERE ch.customer_id = cu.id),
               (SELECT st.last_now FROM {ScoringState._meta.db_table} st ORDER BY st.id LIMIT 1),
               (SELECT ad.reason FROM {Adjustment._meta.db_table} ad
                WHERE ad.customer_id = cu.id AND ad.action = '{Action.PIN.value}'
                ORDER BY ad.at DESC, ad.id DESC LIMIT 1),
               sc.score, sc.tier, sc.attended, sc.no_shows, sc.late_cancels, sc.window_days, sc.computed_at
        FROM {Customer._meta.db_table} cu
        LEFT JOIN {CustomerScore._meta.db_table} sc ON sc.customer_id = cu.id
        LEFT JOIN {BookingPolicy._meta.db_table} po ON po.shop_id = cu.shop_id AND po.tier = {tier}
        WHERE cu.id = %(customer)s
    """


def standing(customer_id: uuid.UUID, now: datetime) -> dict[str, Any] | None:
    """The standing of a customer as the endpoint answers it (JSON-ready), or None for no such customer."""
    today = now.astimezone(UTC).date()
    params = {
        "customer": Customer._meta.get_field("id").get_db_prep_value(customer_id, connection),
        "today": connection.ops.adapt_datefield_value(today),
    }
    with connection.cursor() as cursor:
        cursor.execute(_sql(), params)
        found = cursor.fetchone()
    if found is None:
        return None
    row = dict(zip(COLUMNS, found, strict=True))
    row["pinned_until"] = _date(row["pinned_until"])
    row["last_slide"], row["computed_at"] = _moment(row["last_slide"]), _moment(row["computed_at"])
    return _body(customer_id, row, today)


def _body(customer_id: uuid.UUID, row: dict[str, Any], today: date) -> dict[str, Any]:
    scored = row["score"] is not None
    window = settings.RECOMPUTE_SCORES_WINDOW_DAYS
    as_of = row["computed_at"]
    if scored and not row["marked"] and row["last_slide"] is not None and row["last_slide"] > as_of:
        as_of = row["last_slide"]  # unchanged since, and carried to the window's end by every slide
    stale = bool(row["marked"]) or (scored and row["window_days"] != window)
    tier = row["effective_tier"]
    return {
        "customer": str(customer_id),
        "shop": str(uuid.UUID(str(row["shop_id"]))),
        "score": row["score"],
        "tier": row["tier"] or Tier.NEW.value,
        "effectiveTier": tier,
        "policy": policy_for(tier, row["requirement"], row["deposit_percent"]).as_json(),
        "reasons": reasons(row, today, window, stale=stale),
        "computedAt": _iso(as_of) if as_of else None,
        "stale": stale,
    }


def reasons(row: dict[str, Any], today: date, window: int, *, stale: bool) -> list[str]:
    """Plain sentences for the booking app's staff: what the score counted, a pin, and why it may be stale."""
    said: list[str] = []
    if row["score"] is None:
        said.append("No score yet: a new customer")
    else:
        missed = _count(row["no_shows"], "no-show") + " and " + _count(row["late_cancels"], "late cancel")
        said.append(f"{missed} in the last {row['window_days']} days")
        total = row["attended"] + row["no_shows"] + row["late_cancels"]
        said.append(f"Attended {row['attended']} of {_count(total, 'scored appointment')}")
        if row["tier"] == Tier.NEW and total < NEW_BELOW:
            said.append(f"Fewer than {NEW_BELOW} scored appointments: new")
    if row["pinned_tier"] and row["pinned_until"] is not None and row["pinned_until"] >= today:
        why = f": {row['pin_reason']}" if row["pin_reason"] else ""
        said.append(f"Pinned by staff to {row['effective_tier']} until {row['pinned_until']:%d %b %Y}{why}")
    if row["marked"]:
        said.append("Changed since the last scoring run: the score is not yet recomputed")
    elif stale:
        said.append(f"Scored over {row['window_days']} days; the window is now {window} days until the next run")
    return said


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _moment(value: Any) -> datetime | None:
    """A time as the database gave it (SQLite: text in UTC), aware."""
    if isinstance(value, str):
        value = parse_datetime(value)
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _date(value: Any) -> date | None:
    return parse_date(value) if isinstance(value, str) else value


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
