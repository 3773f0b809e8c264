"""recompute-scores: every customer's score over the window, computed in the database.

Incremental by default: a run rescores only the customers whose score may have changed since the
last run (marked dirty by database triggers on their appointments, and new customers,
scoring.models.DirtyCustomer), and those with an appointment that crossed an edge of the window since then.
A full pass rescores everyone: on demand (`full`), and by itself when there has been none yet, or
when the window or the rule changed since the last one; it also reports `drift`, stored scores that
differed from a fresh computation although nothing had marked them (always 0 unless a write
escaped the triggers).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count

from jobs.context import Context, Result
from scoring import rules
from scoring.models import Appointment, Customer, CustomerScore, DirtyCustomer, Outcome, ScoringState, Tier

_FIRST = uuid.UUID(int=0)
_LAST = uuid.UUID(int=2**128 - 1)
COUNTERS = (
    "total", "dirty", "changed", "created", "updated", "unchanged", "drift", "remaining", "full_pass",
    *(f"tier_{tier.value}" for tier in Tier),
)  # fmt: skip
DRIFT_NAMED = 10  # customers named in the errors of a run that found drift


@dataclass
class Tally:
    """What a run's batches add up to."""

    total: int = 0
    changed: int = 0
    created: int = 0
    failed: int = 0
    drifted: list[uuid.UUID] | None = None


def recompute_scores(
    ctx: Context, *, shop: uuid.UUID | None = None, full: bool = False, batch_size: int | None = None
) -> Result:
    """Rescore the customers whose score may have changed, or everyone (see the module's docstring).

    Each batch of `batch_size` customers is one aggregate-and-upsert statement computed in the
    database, which writes only the rows whose values changed; the batch clears the marks it has
    seen in the same transaction. Every run scores at least one batch; when the time budget is
    spent it stops between batches and reports `remaining` (a failed batch counts there too). A
    run for one shop is a full pass over that shop and leaves the marks and the state alone.
    """
    batch_size = batch_size or settings.RECOMPUTE_SCORES_BATCH_SIZE
    scores = CustomerScore.objects.all() if shop is None else CustomerScore.objects.filter(customer__shop_id=shop)
    state = ScoringState.objects.first() or ScoringState()
    window = settings.RECOMPUTE_SCORES_WINDOW_DAYS
    stale = state.last_full_at is None or (state.window_days, state.rule_version) != (window, rules.RULE_VERSION)
    # A full pass cut short goes on at the next run, whatever asked for it.
    full_pass = shop is None and (full or stale or state.pass_after is not None)
    if shop is not None or full_pass:
        # Drift means something only against scores of the same window and rule.
        drift = shop is None and not stale and state.last_now is not None
        tally, remaining, checkpoint, dirty = _full_pass(ctx, state, shop, batch_size, drift=drift)
    else:
        tally, remaining, dirty = _incremental(ctx, state, batch_size)
        checkpoint = None
    if shop is None and remaining == 0 and tally.failed == 0:
        _finished(state, ctx.now, full=full_pass)
    counters = {
        "total": tally.total, "dirty": dirty, "changed": tally.changed, "created": tally.created,
        "updated": tally.changed - tally.created, "unchanged": tally.total - tally.changed,
        "drift": len(tally.drifted or ()), "full_pass": int(full_pass),
    }  # fmt: skip
    tiers = dict(scores.values_list("tier").annotate(n=Count("*")).order_by())
    counters |= {f"tier_{tier.value}": tiers.get(tier.value, 0) for tier in Tier}
    errors = []
    if tally.drifted:
        named = ", ".join(str(customer) for customer in tally.drifted[:DRIFT_NAMED])
        more = f" and {len(tally.drifted) - DRIFT_NAMED} more" if len(tally.drifted) > DRIFT_NAMED else ""
        errors.append(f"drift: {len(tally.drifted)} stored scores differed although nothing marked them: {named}{more}")
    return Result(counters, errors=errors, remaining=remaining + tally.failed, checkpoint=checkpoint)


def _full_pass(
    ctx: Context, state: ScoringState, shop: uuid.UUID | None, batch_size: int, *, drift: bool
) -> tuple[Tally, int, str | None, int]:
    """Every customer (of one shop, or all) in id order; a full pass of all shops cut short by the time
    budget goes on where it stopped (kept in the state: any next run, incremental or not, continues it)."""
    customers = Customer.objects.all() if shop is None else Customer.objects.filter(shop_id=shop)
    tally = Tally(drifted=[] if drift else None)
    dirty = DirtyCustomer.objects.count() if shop is None else 0
    if shop is None and state.pass_after is None:
        state.pass_started_at = ctx.now
    after = state.pass_after if shop is None and state.pass_after else _FIRST
    while True:
        # The batch ends at its batch_size-th customer; the last one, at the end, is counted.
        boundary = customers.filter(id__gt=after).order_by("id").values_list("id", flat=True)[batch_size - 1 :][:1]
        upper = next(iter(boundary), _LAST)
        size = batch_size if upper != _LAST else customers.filter(id__gt=after).count()
        _score_batch(ctx, tally, Batch(after=after, upper=upper, shop=shop, size=size, clear=shop is None), state)
        after = upper
        if upper == _LAST or ctx.out_of_time():
            break
    remaining = customers.filter(id__gt=after).count() if after != _LAST else 0
    if shop is None and remaining:
        state.pass_after = after
        state.save()  # where this pass began and where it stopped, for the next run
    return tally, remaining, str(after) if after != _LAST else None, dirty


def _incremental(ctx: Context, state: ScoringState, batch_size: int) -> tuple[Tally, int, int]:
    """The customers marked dirty, and those whose appointments crossed an edge of the window."""
    tally = Tally()
    edges = _edges(state.last_now, ctx.now)
    after, more = _FIRST, True
    while more and (ids := _due(edges, after, batch_size)):
        assert isinstance(ids, list)
        _score_batch(ctx, tally, Batch(ids=ids, size=len(ids), clear=True), state)
        after, more = ids[-1], len(ids) == batch_size
        if ctx.out_of_time():
            break
    remaining = _due(edges, after, None) if more else 0
    assert isinstance(remaining, int)
    return tally, remaining, tally.total + tally.failed + remaining


@dataclass
class Batch:
    """The customers of one statement: a range of ids (after, upper], of one shop or all, or a list of ids."""

    size: int
    clear: bool  # clear the marks seen
    after: uuid.UUID | None = None
    upper: uuid.UUID | None = None
    shop: uuid.UUID | None = None
    ids: Sequence[uuid.UUID] = ()

    def where(self, column: str) -> tuple[str, dict[str, Any]]:
        """A WHERE fragment selecting this batch's customers by `column`, and its parameters."""
        prep = Customer._meta.get_field("id").get_db_prep_value
        if self.ids and connection.vendor == "postgresql":
            return f"{column} IN (SELECT unnest(%(ids)s::uuid[]))", {"ids": list(self.ids)}
        if self.ids:
            return f"{column} IN (SELECT value FROM json_each(%(ids)s))", {"ids": json.dumps([i.hex for i in self.ids])}
        params = {"after": prep(self.after, connection), "upper": prep(self.upper, connection)}
        return f"{column} > %(after)s AND {column} <= %(upper)s", params


def _score_batch(ctx: Context, tally: Tally, batch: Batch, state: ScoringState) -> None:
    """Score one batch in its own savepoint: its marks are cleared with its scores, or neither."""
    label = (
        f"customers {batch.after}..{batch.upper}" if not batch.ids else f"{batch.size} customers from {batch.ids[0]}"
    )
    tally.failed += batch.size  # until the batch is done
    with ctx.item(label), connection.cursor() as cursor:
        marks = _select(cursor, DirtyCustomer._meta.db_table, "seq", batch) if batch.clear else {}
        # Which rows existed before, to count new ones: PostgreSQL's upsert tells (xmax), SQLite's can't.
        had = _select(cursor, CustomerScore._meta.db_table, "0", batch) if connection.vendor != "postgresql" else {}
        where, params = batch.where("cu.id")
        shop = Customer._meta.get_field("id").get_db_prep_value(batch.shop, connection)
        cursor.execute(_upsert_sql(connection.vendor, where, by_shop=batch.shop is not None),
                       {**params, **_window(ctx.now), "shop": shop})  # fmt: skip
        rows = cursor.fetchall()
        if marks:
            _clear(cursor, marks)
        if connection.vendor == "postgresql":
            updated = {row[0] for row in rows if not row[1]}
        else:
            updated = {_uuid(row[0]) for row in rows if row[0] in had}
        if tally.drifted is not None:
            tally.drifted += _unexplained(updated - {_uuid(customer) for customer in marks}, state.last_now, ctx.now)
        tally.created += len(rows) - len(updated)
        tally.total += batch.size  # counted last, inside: a failed batch counts only in `failed`
        tally.changed += len(rows)
        tally.failed -= batch.size


def _select(cursor: Any, table: str, column: str, batch: Batch) -> dict[Any, Any]:
    """{customer_id as stored: column} of `table`'s rows for the batch's customers."""
    where, params = batch.where("customer_id")
    cursor.execute(f"SELECT customer_id, {column} FROM {table} WHERE {where}", params)
    return dict(cursor.fetchall())


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _window(now: datetime) -> dict[str, Any]:
    adapt = connection.ops.adapt_datetimefield_value
    days = settings.RECOMPUTE_SCORES_WINDOW_DAYS
    return {"window_days": days, "now": adapt(now), "start": adapt(now - timedelta(days=days))}


def _clear(cursor: Any, marks: dict[Any, int]) -> None:
    """Delete exactly the marks this batch saw: a customer marked again meanwhile stays dirty (PostgreSQL:
    the trigger gave the mark a new seq; SQLite: no other writer could run during the batch)."""
    table = DirtyCustomer._meta.db_table
    if connection.vendor == "postgresql":
        cursor.execute(
            f"DELETE FROM {table} d USING unnest(%(ids)s::uuid[], %(seqs)s::bigint[]) AS seen(id, seq) "
            "WHERE d.customer_id = seen.id AND d.seq = seen.seq",
            {"ids": list(marks), "seqs": list(marks.values())},
        )
    else:
        cursor.execute(f"DELETE FROM {table} WHERE customer_id IN (SELECT value FROM json_each(%(ids)s))",
                       {"ids": json.dumps(list(marks))})  # fmt: skip


def _edges(since: datetime | None, now: datetime) -> list[tuple[datetime, datetime]]:
    """The time ranges in which an appointment's start crossed an edge of the window since the last run."""
    if since is None:
        return []
    low, high = min(since, now), max(since, now)
    days = timedelta(days=settings.RECOMPUTE_SCORES_WINDOW_DAYS)
    return [(low - days, high - days), (low, high)]


def _due(edges: list[tuple[datetime, datetime]], after: uuid.UUID, limit: int | None) -> list[uuid.UUID] | int:
    """The next `limit` customers to rescore in id order (or, without a limit, how many there are):
    marked dirty, or with a scored appointment that crossed an edge of the window."""
    prep, adapt = Customer._meta.get_field("id").get_db_prep_value, connection.ops.adapt_datetimefield_value
    params: dict[str, Any] = {"after": prep(after, connection), "pending": Outcome.PENDING.value}
    crossed = ""
    for n, (low, high) in enumerate(edges):
        params |= {f"low{n}": adapt(low), f"high{n}": adapt(high)}
        crossed += f"""
            UNION SELECT customer_id FROM {Appointment._meta.db_table}
            WHERE outcome <> %(pending)s AND starts_at >= %(low{n})s AND starts_at < %(high{n})s
              AND customer_id > %(after)s"""
    # New customers are marked by a trigger too: no scan of every customer for those without a score.
    union = f"SELECT customer_id AS id FROM {DirtyCustomer._meta.db_table} WHERE customer_id > %(after)s {crossed}"
    with connection.cursor() as cursor:
        if limit is None:
            cursor.execute(f"SELECT count(*) FROM ({union}) due", params)
            return int(cursor.fetchone()[0])
        cursor.execute(f"SELECT id FROM ({union}) due ORDER BY id LIMIT %(limit)s", {**params, "limit": limit})
        return [_uuid(row[0]) for row in cursor.fetchall()]


def _unexplained(suspects: set[uuid.UUID], since: datetime | None, now: datetime) -> list[uuid.UUID]:
    """Of these customers whose stored score changed although unmarked, those no edge of the window explains."""
    if not suspects:
        return []
    # Marked since this batch read its marks (a concurrent write): explained, and rescored next run.
    suspects -= set(DirtyCustomer.objects.filter(customer_id__in=suspects).values_list("customer_id", flat=True))
    crossed: set[uuid.UUID] = set()
    for low, high in _edges(since, now):
        scored = Appointment.objects.exclude(outcome=Outcome.PENDING)
        crossed |= set(
            scored.filter(customer_id__in=suspects, starts_at__gte=low, starts_at__lt=high).values_list(
                "customer_id", flat=True
            )
        )
    return sorted(suspects - crossed)


def _finished(state: ScoringState, now: datetime, *, full: bool) -> None:
    """Remember where the next run's edges start and, after a full pass, its window and rule.

    A full pass resumed over several runs scored its first customers at the `now` of its first run:
    the next run's edges start there.
    """
    state.last_now = state.pass_started_at if full and state.pass_started_at else now
    if full:
        state.last_full_at, state.rule_version = now, rules.RULE_VERSION
        state.window_days = settings.RECOMPUTE_SCORES_WINDOW_DAYS
        state.pass_started_at = state.pass_after = None
    state.save()


def _upsert_sql(vendor: str, where: str, *, by_shop: bool) -> str:
    """The scoring rule (scoring/rules.py) in SQL that PostgreSQL and SQLite both run, for the customers `where`
    selects; returns the rows it wrote (unchanged rows are not written)."""
    null_safe_differs = "IS DISTINCT FROM" if vendor == "postgresql" else "IS NOT"
    # PostgreSQL tells a fresh insert by xmax = 0 (SQLite cannot: the caller looks before).
    inserted = "(xmax::text = '0')" if vendor == "postgresql" else "0"
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
                      -- a range of ids on this side too: the planner reads just its slice of the index
                      {"AND " + where.replace("cu.id", "ap.customer_id") if " > " in where else ""}
                WHERE {where} {"AND cu.shop_id = %(shop)s" if by_shop else ""}
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
        RETURNING customer_id, {inserted}
    """
