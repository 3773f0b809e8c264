"""recompute-scores: every customer's score over the window, computed in the database."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count

from jobs.context import Context, Result
from scoring import rules
from scoring.models import Appointment, Customer, CustomerScore, Outcome, Tier

_FIRST = uuid.UUID(int=0)
_LAST = uuid.UUID(int=2**128 - 1)
COUNTERS = ("total", "created", "updated", "unchanged", "remaining", *(f"tier_{tier.value}" for tier in Tier))


def recompute_scores(ctx: Context, *, shop: uuid.UUID | None = None, batch_size: int | None = None) -> Result:
    """Upsert one CustomerScore for every customer (of one shop, or all).

    Customers are taken in id order, `batch_size` at a time; each batch is one
    aggregate-and-upsert statement computed in the database, so the cost per
    batch is bounded and nothing grows in memory. Rows whose values did not
    change are not written. A batch that fails counts in `remaining` (the next run
    scores it again). When the time budget is spent, the run stops between
    batches and returns the last customer done as its checkpoint; every run
    scores at least one batch, so even a tiny budget makes progress.
    """
    batch_size = batch_size or settings.RECOMPUTE_SCORES_BATCH_SIZE
    customers = Customer.objects.all() if shop is None else Customer.objects.filter(shop_id=shop)
    scores = CustomerScore.objects.all() if shop is None else CustomerScore.objects.filter(customer__shop_id=shop)
    existing = scores.count()
    total = written = failed = 0
    after = uuid.UUID(ctx.checkpoint) if ctx.checkpoint else _FIRST
    while True:
        # The batch ends at its batch_size-th customer; the last one, at the end, is counted.
        boundary = customers.filter(id__gt=after).order_by("id").values_list("id", flat=True)[batch_size - 1 :][:1]
        upper = next(iter(boundary), _LAST)
        size = batch_size if upper != _LAST else customers.filter(id__gt=after).count()
        failed += size  # until the batch is done
        with ctx.item(f"customers {after}..{upper}"):
            written += _upsert_scores(after, upper, shop, ctx.now)
            total += size
            failed -= size
        after = upper
        if upper == _LAST or ctx.out_of_time():
            break

    created = scores.count() - existing
    remaining = failed + (customers.filter(id__gt=after).count() if after != _LAST else 0)
    tiers = dict(scores.values_list("tier").annotate(n=Count("*")).order_by())
    counters = {"total": total, "created": created, "updated": written - created, "unchanged": total - written}
    counters |= {f"tier_{tier.value}": tiers.get(tier.value, 0) for tier in Tier}
    return Result(counters, remaining=remaining, checkpoint=str(after) if after != _LAST else None)


def _upsert_scores(after: uuid.UUID, upper: uuid.UUID, shop: uuid.UUID | None, now: datetime) -> int:
    """Score the customers with after < id <= upper in one statement; return rows written."""
    window_days = settings.RECOMPUTE_SCORES_WINDOW_DAYS
    ops, pk = connection.ops, Customer._meta.pk
    params = {
        "window_days": window_days,
        "now": ops.adapt_datetimefield_value(now),
        "start": ops.adapt_datetimefield_value(now - timedelta(days=window_days)),
        "after": pk.get_db_prep_value(after, connection),
        "upper": pk.get_db_prep_value(upper, connection),
        "shop": pk.get_db_prep_value(shop, connection) if shop else None,
    }
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
               CASE WHEN a + n + l < {rules.NEW_BELOW} THEN '{Tier.NEW.value}'
                    WHEN score >= {rules.RELIABLE_FROM} THEN '{Tier.RELIABLE.value}'
                    WHEN score >= {rules.WATCH_FROM} THEN '{Tier.WATCH.value}'
                    ELSE '{Tier.RISKY.value}' END,
               a, n, l, c, last_at, %(window_days)s, %(now)s
        FROM (
            SELECT id, shop_id, a, n, l, c, last_at,
                   -- rules.score_for: d = 2A + 2N + L + 4; (400 (A + 1) + d) / (2 d)
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
                      AND ap.starts_at >= %(start)s AND ap.starts_at < %(now)s
                      -- the batch's range on this side too: the planner reads just its slice of the index
                      AND ap.customer_id > %(after)s AND ap.customer_id <= %(upper)s
                WHERE cu.id > %(after)s AND cu.id <= %(upper)s {"AND cu.shop_id = %(shop)s" if by_shop else ""}
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
