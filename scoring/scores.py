"""recompute-scores: every customer's score over the window, computed in the database.

Incremental by default. Every stored score not marked dirty is exact at `ScoringState.last_now`, the
window's end. A run first slides the window to its own `now` for all of them in one statement: what
changes is only the appointments that crossed an edge of the window, read from one index, added to or
taken from the stored counts. It then rescores the customers marked dirty (database triggers log who
changed, scoring.models.CustomerChange), in batches.

A full pass rescores everyone: on demand (`full`), and by itself when there has been none yet, or when
the window or the rule changed since the last one, or the clock went back; it also reports `drift`,
stored scores that differed from a fresh computation although nothing had marked them (always 0 unless a
write escaped the triggers).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count

from jobs.context import Backlog, Context, Result
from scoring import history, rules
from scoring.models import (
    Appointment,
    Customer,
    CustomerChange,
    CustomerScore,
    DirtyCustomer,
    Outcome,
    ScoringState,
    Tier,
)

_FIRST = uuid.UUID(int=0)
_LAST = uuid.UUID(int=2**128 - 1)
COUNTERS = (
    "total", "dirty", "changed", "created", "updated", "unchanged", "drift", "remaining", "full_pass",
    *(f"tier_{tier.value}" for tier in Tier),
)  # fmt: skip
DRIFT_NAMED = 10  # customers named in the errors of a run that found drift
STATE = "the scoring state"  # what every run holds (Context.hold)


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
    """Slide every score's window and rescore the marked customers, or everyone (see the module's docstring).

    Each batch of `batch_size` customers is one aggregate-and-upsert statement computed in the
    database, which writes only the rows whose values changed; the batch clears the marks of its
    customers in the same transaction. Every run scores at least one batch; when the time budget is
    spent it stops between batches and reports `remaining` (a failed batch counts there too, and stays
    marked). A run for one shop rescores that shop at its `now` and marks its customers, so that the
    next run brings them to the same window as everyone else. Full passes and one-shop runs also count
    the scores in each tier.
    """
    ctx.hold(STATE)  # one run at a time, whatever its lock id: a window slid twice is wrong for good
    batch_size = batch_size or settings.RECOMPUTE_SCORES_BATCH_SIZE
    state = ScoringState.objects.first() or ScoringState()
    basis = (settings.RECOMPUTE_SCORES_WINDOW_DAYS, rules.RULE_VERSION)
    stale = (
        state.last_now is None or state.last_full_at is None or ctx.now < state.last_now
        or (state.window_days, state.rule_version) != basis
    )  # fmt: skip
    if state.pass_started_at and (
        ctx.now < state.pass_started_at or (state.pass_window_days, state.pass_rule_version) != basis
    ):
        # A pass cut short under another window or rule, or a clock gone back: its scores are no part of a new one.
        state.pass_started_at = state.pass_after = None
    # A full pass cut short goes on at the next run, whatever asked for it.
    full_pass = shop is None and (full or stale or state.pass_after is not None)
    if shop is None:
        _move_marks()
    checkpoint = None
    if shop is not None or full_pass:
        # Drift means something only against scores of the same window and rule.
        tally, remaining, checkpoint, dirty = _full_pass(ctx, state, shop, batch_size, drift=not stale)
        if full_pass and not remaining and not tally.failed and state.last_now:
            # Begun by an earlier run: on to `now`, and rescore those marked since it scored them (even at the
            # same `now`: a mark after a customer's batch is not undone by the pass).
            remaining, _ = _incremental(ctx, state, batch_size, tally)
    else:
        tally = Tally()
        remaining, dirty = _incremental(ctx, state, batch_size, tally)
    counters = {
        "total": tally.total, "dirty": dirty, "changed": tally.changed, "created": tally.created,
        "updated": tally.changed - tally.created, "unchanged": tally.total - tally.changed,
        "drift": len(tally.drifted or ()), "full_pass": int(full_pass),
    }  # fmt: skip
    if shop is not None or full_pass:  # counting the tiers reads every score: not the work of an incremental run
        scores = CustomerScore.objects.all() if shop is None else CustomerScore.objects.filter(customer__shop_id=shop)
        tiers = dict(scores.values_list("tier").annotate(n=Count("*")).order_by())
        counters |= {f"tier_{tier.value}": tiers.get(tier.value, 0) for tier in Tier}
    if shop is None:
        with ctx.item("score history"):  # kept as long as the runs that wrote it
            history.prune(ctx.now)
    errors = []
    if tally.drifted:
        named = ", ".join(str(customer) for customer in tally.drifted[:DRIFT_NAMED])
        more = f" and {len(tally.drifted) - DRIFT_NAMED} more" if len(tally.drifted) > DRIFT_NAMED else ""
        errors.append(f"drift: {len(tally.drifted)} stored scores differed although nothing marked them: {named}{more}")
    return Result(counters, errors=errors, remaining=remaining + tally.failed, checkpoint=checkpoint)


def _move_marks() -> None:
    """Move the triggers' log into the dirty set, in one statement (PostgreSQL) or one transaction (SQLite,
    whose writers wait for it): every change is in one of the two, whoever writes meanwhile."""
    log, dirty = CustomerChange._meta.db_table, DirtyCustomer._meta.db_table
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:  # a failure fails the run: no savepoint
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH moved AS (DELETE FROM {log} RETURNING customer_id) "
                f"INSERT INTO {dirty} (customer_id) SELECT DISTINCT customer_id FROM moved ON CONFLICT DO NOTHING"
            )
            if cursor.rowcount:
                # The set has just grown, and was most likely empty when last counted (every run empties it):
                # planned on that, the window's slide could read the whole set again for each score it moved.
                cursor.execute(f"ANALYZE {dirty}")
        else:
            cursor.execute(f"INSERT OR IGNORE INTO {dirty} (customer_id) SELECT customer_id FROM {log}")
            cursor.execute(f"DELETE FROM {log}")


def _full_pass(
    ctx: Context, state: ScoringState, shop: uuid.UUID | None, batch_size: int, *, drift: bool
) -> tuple[Tally, int, str | None, int]:
    """Every customer (of one shop, or all) in id order.

    A full pass of all shops scores everyone at the `now` of the run that began it: when the time budget
    cuts it short, the next runs go on where it stopped (kept in the state with each batch), with the same
    window, so that when it ends every score is exact at one `now`.
    """
    customers = Customer.objects.all() if shop is None else Customer.objects.filter(shop_id=shop)
    if shop is None and state.pass_after is None:
        state.pass_started_at, state.pass_after = ctx.now, _FIRST
        state.pass_window_days, state.pass_rule_version = settings.RECOMPUTE_SCORES_WINDOW_DAYS, rules.RULE_VERSION
    at = ctx.now if shop is not None else state.pass_started_at
    assert at is not None
    tally = Tally(drifted=[] if drift and shop is None else None)
    dirty = DirtyCustomer.objects.count() if shop is None else 0
    after = state.pass_after if shop is None and state.pass_after else _FIRST
    while True:
        # The batch ends at its batch_size-th customer; the last one, at the end, is counted.
        boundary = customers.filter(id__gt=after).order_by("id").values_list("id", flat=True)[batch_size - 1 :][:1]
        upper = next(iter(boundary), _LAST)
        size = batch_size if upper != _LAST else customers.filter(id__gt=after).count()
        batch = Batch(after=after, upper=upper, shop=shop, size=size)
        _score_batch(ctx, tally, batch, at=at, since=state.last_now, state=state if shop is None else None)
        after = upper
        if upper == _LAST or ctx.out_of_time():
            break
    remaining = customers.filter(id__gt=after).count() if after != _LAST else 0
    if shop is None and not remaining:
        # Every score is exact at `at` now, or its customer is marked: the window's end is there.
        state.last_now = state.last_full_at = at
        state.window_days, state.rule_version = settings.RECOMPUTE_SCORES_WINDOW_DAYS, rules.RULE_VERSION
        state.pass_started_at = state.pass_after = state.pass_window_days = state.pass_rule_version = None
        state.save()
    return tally, remaining, str(after) if after != _LAST else None, dirty


def _incremental(ctx: Context, state: ScoringState, batch_size: int, tally: Tally) -> tuple[int, int]:
    """Slide the window of every unmarked score to `now`, then rescore the marked customers; returns how
    many remain marked and how many were due."""
    assert state.last_now is not None
    ctx.keep_alive()
    # The scores' new window and its record, or neither (a failure fails the run: no savepoint of its own).
    with transaction.atomic(savepoint=False):
        slid = _slide(state.last_now, ctx.now, ctx.run_id)
        state.last_now = ctx.now
        state.save()
    tally.total, tally.changed = tally.total + slid, tally.changed + slid
    due = DirtyCustomer.objects.order_by("customer_id").values_list("customer_id", flat=True)
    after, scored, remaining = _FIRST, 0, 0
    while ids := list(due.filter(customer_id__gt=after)[:batch_size]):
        _score_batch(ctx, tally, Batch(ids=ids, size=len(ids)), at=ctx.now)
        after, scored = ids[-1], scored + len(ids)
        if len(ids) < batch_size:
            break
        if ctx.out_of_time():
            remaining = due.filter(customer_id__gt=after).count()
            break
    return remaining, slid + scored + remaining


@dataclass
class Batch:
    """The customers of one statement: a range of ids (after, upper], of one shop or all, or a list of ids."""

    size: int
    after: uuid.UUID | None = None
    upper: uuid.UUID | None = None
    shop: uuid.UUID | None = None
    ids: Sequence[uuid.UUID] = ()

    def where(self, column: str) -> tuple[str, dict[str, Any]]:
        """A WHERE fragment selecting this batch's customers by `column`, and its parameters."""
        prep = Customer._meta.get_field("id").get_db_prep_value
        if self.ids and connection.vendor == "postgresql":  # one array literal, rather than a parameter per id
            return f"{column} IN (SELECT unnest(%(ids)s::uuid[]))", {"ids": "{" + ",".join(map(str, self.ids)) + "}"}
        if self.ids:
            return f"{column} IN (SELECT value FROM json_each(%(ids)s))", {"ids": json.dumps([i.hex for i in self.ids])}
        params = {"after": prep(self.after, connection), "upper": prep(self.upper, connection)}
        return f"{column} > %(after)s AND {column} <= %(upper)s", params

    def __str__(self) -> str:
        return f"customers {self.after}..{self.upper}" if not self.ids else f"{self.size} customers from {self.ids[0]}"


def _score_batch(
    ctx: Context,
    tally: Tally,
    batch: Batch,
    *,
    at: datetime,
    since: datetime | None = None,
    state: ScoringState | None = None,
) -> None:
    """Score one batch at `at` in its own savepoint, with its marks: cleared with its scores, or neither.

    A batch of a shop's customers marks them instead (see recompute_scores). A batch of a full pass
    records in `state` where the pass has got to with its scores; if it fails, its customers are marked,
    so that the pass can end and the next run rescore them.
    """
    dirty = DirtyCustomer._meta.db_table
    tally.failed += batch.size  # until the batch is done
    done = False
    with ctx.item(str(batch)), connection.cursor() as cursor:
        marks = _select(cursor, dirty, "1", batch) if tally.drifted is not None else {}
        # Which rows existed before, to count new ones: PostgreSQL's upsert tells (xmax), SQLite's can't.
        had = _select(cursor, CustomerScore._meta.db_table, "0", batch) if connection.vendor != "postgresql" else {}
        where, params = batch.where("cu.id")
        shop = Customer._meta.get_field("id").get_db_prep_value(batch.shop, connection)
        sql = _upsert_sql(connection.vendor, where, by_shop=batch.shop is not None)
        # The batch's marks are cleared with its scores: on PostgreSQL in the same statement (one round trip less).
        clear = batch.shop is None and connection.vendor == "postgresql"
        if connection.vendor == "postgresql":  # back: the ids of the updated rows, and how many were new (one row)
            cleared = f"cleared AS (DELETE FROM {dirty} WHERE {batch.where('customer_id')[0]}), " if clear else ""
            sql = f"WITH {cleared}written (customer_id, created) AS ({sql}) {_WRITTEN}"
        cursor.execute(sql, {**params, **_window(at), "shop": shop, "run": ctx.run_id})
        rows = cursor.fetchall()
        if batch.shop is None and not clear:
            where, params = batch.where("customer_id")
            cursor.execute(f"DELETE FROM {dirty} WHERE {where}", params)
        elif batch.shop is not None:
            _mark(cursor, batch)
        if connection.vendor == "postgresql":
            updated = {row[0] for row in rows if row[0] is not None}
            created = sum(row[1] for row in rows if row[0] is None)
        else:
            updated = {_uuid(row[0]) for row in rows if row[0] in had}
            created = len(rows) - len(updated)
        if tally.drifted is not None:
            tally.drifted += _unexplained(updated - {_uuid(customer) for customer in marks}, since, at)
        tally.created += created
        tally.total += batch.size  # counted last, inside: a failed batch counts only in `failed`
        tally.changed += created + len(updated)
        tally.failed -= batch.size
        done = True
    if state is not None:  # a full pass: where it has got to (scoring a batch again at `at` changes nothing)
        if not done:
            with connection.cursor() as cursor:
                _mark(cursor, batch)
        state.pass_after = batch.upper
        state.save()


# What a batch's upsert sends back on PostgreSQL: a row per updated score (drift is looked for among them), and
# one row counting the new ones, rather than a row per written score (a full pass from nothing writes every one).
_WRITTEN = (
    "SELECT customer_id, 0 FROM written WHERE NOT created UNION ALL SELECT NULL, COUNT(*) FROM written WHERE created"
)


def _mark(cursor: Any, batch: Batch) -> None:
    """Mark the batch's customers dirty."""
    where, params = batch.where("id")
    shop = "AND shop_id = %(shop)s" if batch.shop else ""
    params["shop"] = Customer._meta.get_field("id").get_db_prep_value(batch.shop, connection)
    cursor.execute(
        f"INSERT INTO {DirtyCustomer._meta.db_table} (customer_id) SELECT id FROM {Customer._meta.db_table} "
        f"WHERE {where} {shop} ON CONFLICT DO NOTHING",
        params,
    )


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


def _edges(since: datetime | None, now: datetime) -> list[tuple[datetime, datetime]]:
    """The time ranges in which an appointment's start crossed an edge of the window since `since`."""
    if since is None:
        return []
    low, high = min(since, now), max(since, now)
    days = timedelta(days=settings.RECOMPUTE_SCORES_WINDOW_DAYS)
    return [(low - days, high - days), (low, high)]


def _slide(since: datetime, now: datetime, run: int | None = None) -> int:
    """Move the window of every unmarked score from `since` to `now` (not before it) in one statement:
    add the appointments that entered it, take away those that left, from the window-edge index alone.
    Returns how many scores changed.

    An appointment that left is older than any still in the window, and one that entered newer: the
    latest appointment is the newest that entered, or else the one stored (none if nothing is left).
    """
    if now == since:
        return 0
    scores, appointments = CustomerScore._meta.db_table, Appointment._meta.db_table
    counts = {"a": ("attended", Outcome.ATTENDED), "n": ("no_shows", Outcome.NO_SHOW),
              "l": ("late_cancels", Outcome.LATE_CANCEL), "c": ("cancellations", Outcome.CANCELLED)}  # fmt: skip
    new = {name: f"({scores}.{column} + moved.{name})" for name, (column, _) in counts.items()}
    score, tier = _rule_sql(new["a"], new["n"], new["l"])
    pending = Outcome.PENDING.value
    crossed = " UNION ALL ".join(  # the two edges' ranges; when they overlap (a gap longer than the window)
        f"SELECT customer_id, outcome, starts_at FROM {appointments} "  # an appointment adds 0 twice
        f"WHERE outcome <> '{pending}' AND NOT forgiven AND starts_at >= %({low})s AND starts_at < %({high})s"
        for low, high in (("old_start", "start"), ("old_now", "now"))
    )
    sums = ", ".join(
        f"SUM(CASE WHEN outcome = '{outcome.value}' THEN sign ELSE 0 END) AS {name}"
        for name, (_, outcome) in counts.items()
    )
    # Those marked since this run moved the marks are rescored by the next run, as they are. On PostgreSQL the log of
    # them is read once, whatever its statistics and dead rows say (planned on a log counted empty, with the rows the
    # last move deleted still in it, it was read again for each score moved). On SQLite no one else writes during a
    # run: the log is empty here (and the count of the rows an UPDATE changed does not survive a WITH).
    late, with_late = CustomerChange._meta.db_table, ""
    if connection.vendor == "postgresql":
        late, with_late = "late", f"WITH late AS MATERIALIZED (SELECT customer_id FROM {late})"
    sql = f"""
        {with_late}
        UPDATE {scores} SET
            attended = {new["a"]}, no_shows = {new["n"]}, late_cancels = {new["l"]}, cancellations = {new["c"]},
            score = {score}, tier = {tier},
            last_appointment_at = CASE WHEN {" + ".join(new.values())} = 0 THEN NULL
                                       ELSE COALESCE(moved.entered, {scores}.last_appointment_at) END,
            computed_at = %(now)s, run_id = %(run)s
        FROM (
            SELECT customer_id, {sums}, MAX(CASE WHEN sign = 1 THEN starts_at END) AS entered
            FROM (
                SELECT customer_id, outcome, starts_at,
                       CASE WHEN starts_at >= %(start)s AND starts_at < %(now)s THEN 1 ELSE 0 END
                     - CASE WHEN starts_at >= %(old_start)s AND starts_at < %(old_now)s THEN 1 ELSE 0 END AS sign
                FROM ({crossed}) crossed
            ) signed
            GROUP BY customer_id
            ORDER BY customer_id
        ) moved
        WHERE {scores}.customer_id = moved.customer_id
          AND (moved.a <> 0 OR moved.n <> 0 OR moved.l <> 0 OR moved.c <> 0 OR moved.entered IS NOT NULL)
          AND NOT EXISTS (SELECT 1 FROM {DirtyCustomer._meta.db_table} d WHERE d.customer_id = {scores}.customer_id)
          AND NOT EXISTS (SELECT 1 FROM {late} WHERE {late}.customer_id = {scores}.customer_id)
    """
    old, params = _window(since), _window(now)
    params |= {"old_now": old["now"], "old_start": old["start"], "run": run}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _unexplained(suspects: set[uuid.UUID], since: datetime | None, now: datetime) -> list[uuid.UUID]:
    """Of these customers whose stored score changed although unmarked, those no edge of the window explains."""
    if not suspects:
        return []
    # Marked since this run moved the marks (a concurrent write): explained, and rescored next run.
    suspects -= set(CustomerChange.objects.filter(customer_id__in=suspects).values_list("customer_id", flat=True))
    crossed: set[uuid.UUID] = set()
    for low, high in _edges(since, now):
        scored = Appointment.objects.exclude(outcome=Outcome.PENDING).filter(forgiven=False)
        crossed |= set(
            scored.filter(customer_id__in=suspects, starts_at__gte=low, starts_at__lt=high).values_list(
                "customer_id", flat=True
            )
        )
    return sorted(suspects - crossed)


def _rule_sql(a: str, n: str, l: str) -> tuple[str, str]:  # noqa: E741
    """The scoring rule (scoring/rules.py) in SQL that PostgreSQL and SQLite both run: the score and the
    tier of the counts of attended, no-show and late-cancel appointments these expressions give."""
    # rules.score_for: d = 2A + 2N + L + 4; (400 (A + 1) + d) / (2 d)
    d = f"(2 * {a} + 2 * {n} + {l} + 4)"
    score = f"((400 * ({a} + 1) + {d}) / (2 * {d}))"
    tier = f"""CASE WHEN {a} + {n} + {l} < {rules.NEW_BELOW} THEN '{Tier.NEW.value}'
                    WHEN {score} >= {rules.RELIABLE_FROM} THEN '{Tier.RELIABLE.value}'
                    WHEN {score} >= {rules.WATCH_FROM} THEN '{Tier.WATCH.value}'
                    ELSE '{Tier.RISKY.value}' END"""
    return score, tier


def _upsert_sql(vendor: str, where: str, *, by_shop: bool) -> str:
    """The scoring rule (scoring/rules.py) in SQL that PostgreSQL and SQLite both run, for the customers `where`
    selects; returns the rows it wrote (unchanged rows are not written)."""
    null_safe_differs = "IS DISTINCT FROM" if vendor == "postgresql" else "IS NOT"
    # PostgreSQL tells a fresh insert by xmax = 0 (SQLite cannot: the caller looks before).
    inserted = "(xmax::text = '0')" if vendor == "postgresql" else "0"
    scores, appointments = CustomerScore._meta.db_table, Appointment._meta.db_table
    score, tier = _rule_sql("a", "n", "l")
    customers = Customer._meta.db_table
    of_shop = f"AND ap.customer_id IN (SELECT id FROM {customers} WHERE shop_id = %(shop)s)" if by_shop else ""
    return f"""
        INSERT INTO {scores} (customer_id, shop_id, score, tier, attended, no_shows,
                              late_cancels, cancellations, last_appointment_at,
                              window_days, computed_at, run_id)
        SELECT id, shop_id, {score}, {tier}, a, n, l, c, last_at, %(window_days)s, %(now)s, %(run)s
        FROM (
            SELECT cu.id, cu.shop_id, COALESCE(ap.a, 0) AS a, COALESCE(ap.n, 0) AS n, COALESCE(ap.l, 0) AS l,
                   COALESCE(ap.c, 0) AS c, ap.last_at
            FROM {customers} cu
            LEFT JOIN (
                -- counted before the join, in the order of the index (as one statement over everyone would),
                -- for the batch's customers only
                SELECT ap.customer_id,
                       COUNT(CASE WHEN ap.outcome = '{Outcome.ATTENDED.value}' THEN 1 END) AS a,
                       COUNT(CASE WHEN ap.outcome = '{Outcome.NO_SHOW.value}' THEN 1 END) AS n,
                       COUNT(CASE WHEN ap.outcome = '{Outcome.LATE_CANCEL.value}' THEN 1 END) AS l,
                       COUNT(CASE WHEN ap.outcome = '{Outcome.CANCELLED.value}' THEN 1 END) AS c,
                       MAX(ap.starts_at) AS last_at
                FROM {appointments} ap
                WHERE ap.outcome <> '{Outcome.PENDING.value}' AND NOT ap.forgiven
                  AND ap.starts_at >= %(start)s AND ap.starts_at < %(now)s
                  AND {where.replace("cu.id", "ap.customer_id")} {of_shop}
                GROUP BY ap.customer_id
            ) ap ON ap.customer_id = cu.id
            WHERE {where} {"AND cu.shop_id = %(shop)s" if by_shop else ""}
        ) counted
        WHERE true
        ON CONFLICT (customer_id) DO UPDATE SET
            shop_id = excluded.shop_id, score = excluded.score, tier = excluded.tier,
            attended = excluded.attended, no_shows = excluded.no_shows,
            late_cancels = excluded.late_cancels, cancellations = excluded.cancellations,
            last_appointment_at = excluded.last_appointment_at,
            window_days = excluded.window_days, computed_at = excluded.computed_at, run_id = excluded.run_id
        WHERE {scores}.score <> excluded.score OR {scores}.tier <> excluded.tier
           OR {scores}.attended <> excluded.attended OR {scores}.no_shows <> excluded.no_shows
           OR {scores}.late_cancels <> excluded.late_cancels
           OR {scores}.cancellations <> excluded.cancellations
           OR {scores}.window_days <> excluded.window_days
           OR {scores}.shop_id <> excluded.shop_id
           OR {scores}.last_appointment_at {null_safe_differs} excluded.last_appointment_at
        RETURNING customer_id, {inserted}
    """


def rescore(customers: Sequence[uuid.UUID], now: datetime) -> None:
    """Score these customers at `now` at once (staff forgave one of their appointments), and leave them marked.

    Their scores are then exact at `now`, not at the window's end every unmarked score shares
    (`ScoringState.last_now`): marked, they are not slid by the next run but rescored with everyone else's
    window, so that the next incremental and full runs agree with each other.
    """
    batch = Batch(ids=list(customers), size=len(customers))
    with transaction.atomic(), connection.cursor() as cursor:
        where, params = batch.where("cu.id")
        cursor.execute(
            _upsert_sql(connection.vendor, where, by_shop=False), {**params, **_window(now), "shop": None, "run": None}
        )
        where, params = batch.where("id")
        cursor.execute(
            f"INSERT INTO {CustomerChange._meta.db_table} (customer_id) "
            f"SELECT id FROM {Customer._meta.db_table} WHERE {where}",
            params,
        )


def backlog(now: datetime) -> Backlog:
    """Customers marked and not rescored yet (a customer marked twice in the log counts twice until a run)."""
    return Backlog(Backlog.counted(DirtyCustomer.objects.all()) + Backlog.counted(CustomerChange.objects.all()))
