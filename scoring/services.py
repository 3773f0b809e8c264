"""The scheduled jobs' work, as plain functions.

Each takes keyword arguments and returns its counters with an `errors` list.
None of them knows whether HTTP, the shell or the admin started it: the runner
(jobs/runner.py) locks, records and times them.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from typing import TypedDict

from django.conf import settings
from django.db import connection
from django.db.models import Count

from jobs.items import item
from scoring.models import Appointment, Customer, CustomerScore, Outcome, Tier

BATCH_SIZE = 5000  # customers per statement: bounded work, constant memory
_FIRST = uuid.UUID(int=0)
_LAST = uuid.UUID(int=2**128 - 1)


class RecomputeCounters(TypedDict, total=False):
    total: int
    created: int
    updated: int
    unchanged: int
    remaining: int
    tier_reliable: int
    tier_watch: int
    tier_risky: int
    tier_new: int
    resume_after: str
    errors: list[str]


def recompute_scores(
    *,
    now: datetime,
    shop: uuid.UUID | None = None,
    deadline: float | None = None,
    resume_after: uuid.UUID | None = None,
    batch_size: int = BATCH_SIZE,
) -> RecomputeCounters:
    """Upsert one CustomerScore for every customer (of one shop, or all).

    Customers are taken in id order, `batch_size` at a time; each batch is one
    aggregate-and-upsert statement computed in the database, so the cost per
    batch is bounded and nothing grows in memory. Rows whose values did not
    change are not written. When `deadline` (time.monotonic()) passes, the run
    stops between batches and reports `remaining` and `resume_after`.
    """
    customers = Customer.objects.all() if shop is None else Customer.objects.filter(shop_id=shop)
    counters = RecomputeCounters(total=0, created=0, updated=0, unchanged=0, remaining=0)
    errors: list[str] = []
    after = resume_after or _FIRST
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            counters["remaining"] = customers.filter(id__gt=after).count()
            if counters["remaining"]:
                counters["resume_after"] = str(after)
            break
        boundary = list(
            customers.filter(id__gt=after).order_by("id").values_list("id", flat=True)[batch_size - 1 : batch_size]
        )
        upper = boundary[0] if boundary else _LAST
        with item(errors, f"customers {after}..{upper}"):
            batch = customers.filter(id__gt=after, id__lte=upper).aggregate(total=Count("id"), existing=Count("score"))
            written = _upsert_scores(after, upper, shop, now)
            created = batch["total"] - batch["existing"]
            counters["total"] += batch["total"]
            counters["created"] += created
            counters["updated"] += written - created
            counters["unchanged"] += batch["total"] - written
        if not boundary:
            break
        after = upper

    scores = CustomerScore.objects.all() if shop is None else CustomerScore.objects.filter(shop_id=shop)
    tiers = dict(scores.values_list("tier").annotate(n=Count("*")).order_by())
    for tier in Tier:
        counters[f"tier_{tier.value}"] = tiers.get(tier.value, 0)  # type: ignore[literal-required]
    counters["errors"] = errors
    return counters


def _upsert_scores(after: uuid.UUID, upper: uuid.UUID, shop: uuid.UUID | None, now: datetime) -> int:
    """Score the customers with after < id <= upper in one statement; return rows written."""
    window_days = settings.RECOMPUTE_SCORES_WINDOW_DAYS
    ops, pk = connection.ops, Customer._meta.pk
    params = [
        window_days,
        ops.adapt_datetimefield_value(now),
        ops.adapt_datetimefield_value(now - timedelta(days=window_days)),
        ops.adapt_datetimefield_value(now),
        pk.get_db_prep_value(after, connection),
        pk.get_db_prep_value(upper, connection),
    ]
    if shop is not None:
        params.append(pk.get_db_prep_value(shop, connection))
    with connection.cursor() as cursor:
        cursor.execute(_upsert_sql(connection.vendor, by_shop=shop is not None), params)
        return cursor.rowcount


def _upsert_sql(vendor: str, *, by_shop: bool) -> str:
    """The scoring rule (scoring/rules.py) in SQL that PostgreSQL and SQLite both run."""
    null_safe_differs = "IS DISTINCT FROM" if vendor == "postgresql" else "IS NOT"
    scores, appointments = CustomerScore._meta.db_table, Appointment._meta.db_table
    return f"""
        INSERT INTO {scores} (customer_id, shop_id, score, tier, attended, no_shows,
                              late_cancels, cancellations, last_appointment_at,
                              window_days, computed_at)
        SELECT id, shop_id, score,
               CASE WHEN a + n + l < 3 THEN '{Tier.NEW.value}'
                    WHEN score >= 80 THEN '{Tier.RELIABLE.value}'
                    WHEN score >= 50 THEN '{Tier.WATCH.value}'
                    ELSE '{Tier.RISKY.value}' END,
               a, n, l, c, last_at, %s, %s
        FROM (
            SELECT id, shop_id, a, n, l, c, last_at,
                   (400 * (a + 1) + 2 * a + 2 * n + l + 4) / (2 * (2 * a + 2 * n + l + 4)) AS score
            FROM (
                SELECT cu.id, cu.shop_id,
                       COUNT(CASE WHEN ap.outcome = '{Outcome.ATTENDED.value}' THEN 1 END) AS a,
                       COUNT(CASE WHEN ap.outcome = '{Outcome.NO_SHOW.value}' THEN 1 END) AS n,
                       COUNT(CASE WHEN ap.outcome = '{Outcome.LATE_CANCEL.value}' THEN 1 END) AS l,
                       COUNT(CASE WHEN ap.outcome = '{Outcome.CANCELLED.value}' THEN 1 END) AS c,
                       MAX(ap.starts_at) AS last_at
                FROM {Customer._meta.db_table} cu
                LEFT JOIN {appointments} ap
                       ON ap.customer_id = cu.id
                      AND ap.outcome <> '{Outcome.PENDING.value}'
                      AND ap.starts_at >= %s AND ap.starts_at < %s
                WHERE cu.id > %s AND cu.id <= %s {"AND cu.shop_id = %s" if by_shop else ""}
                GROUP BY cu.id, cu.shop_id
            ) counted
        ) scored
        WHERE true
        ON CONFLICT (customer_id) DO UPDATE SET
            shop_id = excluded.shop_id, score = excluded.score, tier = excluded.tier,
            attended = excluded.attended, no_shows = excluded.no_shows,
            late_cancels = excluded.late_cancels, cancellations = excluded.cancellations,
            last_appointment_at = excluded.last_appointment_at,
            window_days = excluded.window_days, computed_at = excluded.computed_at
        WHERE {scores}.score <> excluded.score OR {scores}.tier <> excluded.tier
           OR {scores}.attended <> excluded.attended OR {scores}.no_shows <> excluded.no_shows
           OR {scores}.late_cancels <> excluded.late_cancels
           OR {scores}.cancellations <> excluded.cancellations
           OR {scores}.window_days <> excluded.window_days
           OR {scores}.shop_id <> excluded.shop_id
           OR {scores}.last_appointment_at {null_safe_differs} excluded.last_appointment_at
    """
