"""What the score predicts, per shop (evaluate-scores, compare_rules).

Replay a rule at a past date T: score every customer on the history they had then (the window before T, only
the appointments resolved by T, forgiven ones left out as in every score), and compare with what happened since
(their resolved appointments from T until now, forgiven ones left out): for each tier at T, the customers, their
appointments and the share that were no-shows or late cancels; the AUC of the score at T against "missed at
least one" (the chance that a customer who missed none had a higher score than one who missed one or more, ties
counting half); and how many changed tier (the rule's tier at T against its tier now, on the window before now).

One statement for all shops (or one): one pass over the appointments since T minus the window, grouped by
customer (with the appointments' shop), then by shop, score at T, tier at T, tier now and "missed any". What
comes back is a histogram (at most shops x 101 scores x 4 x 4 x 2 rows), from which the AUC is the
Mann-Whitney rank sum, computed exactly.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from jobs.context import Context, Result
from scoring.models import Appointment, Customer, Evaluation, Outcome, Tier
from scoring.rules import DEFAULT_RULE, NEW_BELOW, RECENT_DAYS, RELIABLE_FROM, RULES, WATCH_FROM, Counts, Rule

COUNTERS = ("shops", "customers", "appointments", "missed", "tier_changes")
DEFAULT_DAYS_AGO = 90
TIERS = (Tier.RELIABLE.value, Tier.WATCH.value, Tier.RISKY.value, Tier.NEW.value)  # as an owner reads them


@dataclass
class TierRow:
    customers: int = 0
    appointments: int = 0
    missed: int = 0
    missed_any: int = 0  # customers who missed at least one

    @property
    def share(self) -> float | None:
        return self.missed / self.appointments if self.appointments else None


@dataclass
class ShopEvaluation:
    shop: uuid.UUID
    at: date
    rule: str
    tiers: dict[str, TierRow] = field(default_factory=lambda: {tier: TierRow() for tier in TIERS})
    tier_changes: int = 0
    # score at T -> [customers who missed none, customers who missed at least one]
    histogram: dict[int, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    @property
    def customers(self) -> int:
        return sum(row.customers for row in self.tiers.values())

    @property
    def appointments(self) -> int:
        return sum(row.appointments for row in self.tiers.values())

    @property
    def missed(self) -> int:
        return sum(row.missed for row in self.tiers.values())

    @property
    def auc(self) -> float | None:
        return auc_of(self.histogram)


def auc_of(histogram: dict[int, list[int]]) -> float | None:
    """The Mann-Whitney AUC of a score histogram {score: [kept, missed]}: P(a customer who missed none scores higher
    than one who missed any), ties half. None when one of the two groups is empty."""
    kept_total = sum(kept for kept, _ in histogram.values())
    missed_total = sum(missed for _, missed in histogram.values())
    if not kept_total or not missed_total:
        return None
    wins, missed_below = 0.0, 0
    for score in sorted(histogram):
        kept, missed = histogram[score]
        wins += kept * (missed_below + missed / 2)
        missed_below += missed
    return wins / (kept_total * missed_total)


def default_at(now: datetime) -> date:
    return (now.astimezone(UTC) - timedelta(days=DEFAULT_DAYS_AGO)).date()


def evaluate(
    at: date, now: datetime, *, rule: Rule | None = None, shop: uuid.UUID | None = None
) -> dict[uuid.UUID, ShopEvaluation]:
    """The evaluation of `rule` (the default) at the start of day `at` (UTC), for every shop or one, by shop."""
    rule = rule or RULES[DEFAULT_RULE]
    t = datetime.combine(at, time(), tzinfo=UTC)
    window = timedelta(days=settings.RECOMPUTE_SCORES_WINDOW_DAYS)
    adapt = connection.ops.adapt_datetimefield_value
    params: dict[str, Any] = {
        "t": adapt(t), "t_start": adapt(t - window), "t_recent": adapt(t - timedelta(days=RECENT_DAYS)),
        "now": adapt(now), "now_start": adapt(now - window), "now_recent": adapt(now - timedelta(days=RECENT_DAYS)),
        "from": adapt(min(t, now) - window),
        "shop": Customer._meta.get_field("id").get_db_prep_value(shop, connection),
    }  # fmt: skip
    results: dict[uuid.UUID, ShopEvaluation] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Its aggregates fit in memory (4 MB would spill them to disk), and JIT costs more than it saves here.
            cursor.execute("SET LOCAL work_mem = '64MB'")
            cursor.execute("SET LOCAL jit = off")
        cursor.execute(_sql(rule, by_shop=shop is not None), params)
        for shop_id, score, tier_t, tier_now, missed_any, customers, appointments, missed in cursor.fetchall():
            key = shop_id if isinstance(shop_id, uuid.UUID) else uuid.UUID(shop_id)
            result = results.setdefault(key, ShopEvaluation(key, at, rule.name))
            row = result.tiers[tier_t]
            row.customers += customers
            row.appointments += int(appointments)
            row.missed += int(missed)
            row.missed_any += customers if missed_any else 0
            result.histogram[int(score)][1 if missed_any else 0] += customers
            result.tier_changes += customers if tier_t != tier_now else 0
    return results


def _counts(when: str) -> dict[str, str]:
    """Conditional counts of a customer's scored appointments in the window before `when` ('t' or 'now'), and in its
    last RECENT_DAYS days. At T only what was resolved by T counts: the rule replays what it knew then."""
    known = "AND ap.resolved_at <= %(t)s" if when == "t" else ""
    columns = {}
    for name, outcome in (("attended", Outcome.ATTENDED), ("no_shows", Outcome.NO_SHOW),
                          ("late_cancels", Outcome.LATE_CANCEL)):  # fmt: skip
        for prefix, start in (("", f"{when}_start"), ("recent_", f"{when}_recent")):
            columns[f"{prefix}{name}_{when}"] = (
                f"COUNT(CASE WHEN ap.outcome = '{outcome.value}' AND ap.starts_at >= %({start})s "
                f"AND ap.starts_at < %({when})s {known} THEN 1 END)"
            )
    return columns


def _sql(rule: Rule, *, by_shop: bool) -> str:
    scored = ", ".join(f"'{outcome.value}'" for outcome in (Outcome.ATTENDED, Outcome.NO_SHOW, Outcome.LATE_CANCEL))
    missed = f"ap.outcome IN ('{Outcome.NO_SHOW.value}', '{Outcome.LATE_CANCEL.value}')"
    counts = _counts("t") | _counts("now")
    # The shop's totals (a bigint, as PostgreSQL's SUM of a bigint is a numeric): the rules' integer arithmetic.
    sums = {f"{name}_{when}": f"CAST(SUM(c.{name}_{when}) OVER (PARTITION BY c.shop_id) AS BIGINT)"
            for name in ("attended", "no_shows", "late_cancels") for when in ("t", "now")}  # fmt: skip

    def score(when: str) -> str:
        return rule.sql({name: f"{name}_{when}" for name in Counts._fields})

    def tier(score: str, when: str) -> str:
        scored = f"attended_{when} + no_shows_{when} + late_cancels_{when}"
        return f"""CASE WHEN {scored} < {NEW_BELOW} THEN '{Tier.NEW.value}'
                        WHEN {score} >= {RELIABLE_FROM} THEN '{Tier.RELIABLE.value}'
                        WHEN {score} >= {WATCH_FROM} THEN '{Tier.WATCH.value}'
                        ELSE '{Tier.RISKY.value}' END"""

    return f"""
        SELECT shop_id, score_t, {tier("score_t", "t")} AS tier_t, {tier("score_now", "now")} AS tier_now,
               CASE WHEN missed > 0 THEN 1 ELSE 0 END AS missed_any,
               COUNT(*), SUM(appointments), SUM(missed)
        FROM (
            SELECT shopped.*, {score("t")} AS score_t, {score("now")} AS score_now
            FROM (
                SELECT c.*, {", ".join(f"{sql} AS shop_{name}" for name, sql in sums.items())}
                FROM (
                    SELECT ap.customer_id, ap.shop_id,
                           {", ".join(f"{sql} AS {name}" for name, sql in counts.items())},
                           COUNT(CASE WHEN ap.starts_at >= %(t)s THEN 1 END) AS appointments,
                           COUNT(CASE WHEN ap.starts_at >= %(t)s AND {missed} THEN 1 END) AS missed
                    FROM {Appointment._meta.db_table} ap
                    WHERE ap.starts_at >= %(from)s AND ap.starts_at < %(now)s
                      AND ap.outcome IN ({scored}) AND NOT ap.forgiven
                      {"AND ap.shop_id = %(shop)s" if by_shop else ""}
                    GROUP BY ap.customer_id, ap.shop_id
                ) c
            ) shopped
        ) scored
        WHERE appointments > 0
        GROUP BY shop_id, score_t, tier_t, tier_now, missed_any
    """


def sentence(result: ShopEvaluation) -> str:
    """One line a shop owner understands: "Customers rated risky on 3 Sep missed 38 % of their appointments since;
    reliable ones 4 %." (the worst and the best tier that had customers)."""
    day = f"{result.at.day} {result.at:%b}"
    rated = [tier for tier in (Tier.RISKY, Tier.WATCH, Tier.RELIABLE) if result.tiers[tier].appointments]
    if not rated:
        if result.tiers[Tier.NEW].appointments:
            return f"Every customer was new on {day}; they missed {percent(result.tiers[Tier.NEW].share)} since."
        return f"No customer rated on {day} has had an appointment since."
    worst, best = rated[0], rated[-1]
    said = f"Customers rated {worst} on {day} missed {percent(result.tiers[worst].share)} of their appointments since"
    if best != worst:
        said += f"; {best} ones {percent(result.tiers[best].share)}"
    return said + "."


def percent(share: float | None) -> str:
    return "-" if share is None else f"{round(100 * share)} %"


def evaluate_scores(ctx: Context, *, at: date | None, shop: uuid.UUID | None) -> Result:
    """The job: evaluate the default rule at `at` (90 days ago) and store one Evaluation per shop."""
    at = at or default_at(ctx.now)
    results = evaluate(at, ctx.now, shop=shop)
    rows = [_stored(result, ctx.now) for result in results.values()]
    Evaluation.objects.bulk_create(rows)
    counters = {
        "shops": len(rows),
        "customers": sum(row.customers for row in rows),
        "appointments": sum(row.appointments for row in rows),
        "missed": sum(row.missed for row in rows),
        "tier_changes": sum(row.tier_changes for row in rows),
    }
    return Result(counters)


def _stored(result: ShopEvaluation, now: datetime) -> Evaluation:
    return Evaluation(
        shop_id=result.shop, at=result.at, computed_at=now, rule=result.rule,
        window_days=settings.RECOMPUTE_SCORES_WINDOW_DAYS, customers=result.customers,
        appointments=result.appointments, missed=result.missed, auc=result.auc, tier_changes=result.tier_changes,
        tiers={tier: vars(row) for tier, row in result.tiers.items()},
    )  # fmt: skip
