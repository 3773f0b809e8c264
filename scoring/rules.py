"""The product's rules, each defined once: the Python here and the SQL in scoring/scores.py and offers.py use these.

The scoring window is a setting (RECOMPUTE_SCORES_WINDOW_DAYS, 180 days by default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db.models import Case, F, Value, When

from scoring.models import Outcome, Tier

# Cancelling less than this before the start (or after it) is a late cancel.
LATE_CANCEL_WINDOW = timedelta(hours=24)
# Tiers: fewer than NEW_BELOW scored appointments is `new`; else by score.
NEW_BELOW = 3
RELIABLE_FROM = 80
WATCH_FROM = 50
# Ranking for slot offers: a customer without a score ranks as if they had this one; `risky` goes last.
UNSCORED_RANK = 50
# Any change to score_for or tier_for (and their SQL twin) must change this: the next run is then a full pass.
RULE_VERSION = 1


class Score(NamedTuple):
    score: int
    tier: Tier


def score_for(attended: int, no_shows: int, late_cancels: int) -> Score:
    """100 x (A+1) / (A+N+L/2+2), rounded half up, in integer arithmetic.

    Cancellations made in time are not scored. Fewer than three scored
    appointments make a customer `new`, whatever the score.
    """
    d = 2 * attended + 2 * no_shows + late_cancels + 4
    score = (400 * (attended + 1) + d) // (2 * d)
    return Score(score, tier_for(score, attended + no_shows + late_cancels))


def score_formula(attended: int, no_shows: int, late_cancels: int) -> str:
    """score_for written out with these counts, for staff:
    `100 x (A+1) / (A+N+L/2+2) = 100 x 1 / (0+2+1.5+2) = 18`.

    The result is score_for's own; a test evaluates the filled-in expression for random counts and checks it
    rounds (half up) to that result, so a change to score_for that is not made here too fails it.
    """
    half = f"{late_cancels // 2}" + (".5" if late_cancels % 2 else "")  # L/2, exactly
    filled = f"100 x {attended + 1} / ({attended}+{no_shows}+{half}+2)"
    return f"100 x (A+1) / (A+N+L/2+2) = {filled} = {score_for(attended, no_shows, late_cancels).score}"


def tier_for(score: int, scored: int) -> Tier:
    if scored < NEW_BELOW:
        return Tier.NEW
    if score >= RELIABLE_FROM:
        return Tier.RELIABLE
    if score >= WATCH_FROM:
        return Tier.WATCH
    return Tier.RISKY


def cancellation_outcome(starts_at: datetime, cancelled_at: datetime) -> Outcome:
    if starts_at - cancelled_at < LATE_CANCEL_WINDOW:
        return Outcome.LATE_CANCEL
    return Outcome.CANCELLED


def outcome_of(starts_at: datetime, checked_in_at: datetime | None, cancelled_at: datetime | None) -> Outcome:
    """The outcome of a finished appointment."""
    if cancelled_at is not None:
        return cancellation_outcome(starts_at, cancelled_at)
    return Outcome.ATTENDED if checked_in_at is not None else Outcome.NO_SHOW


def outcome_in_sql() -> Case:
    """outcome_of for set-based updates, computed by the database from each row's own times (the same rule)."""
    return Case(
        When(cancelled_at__gt=F("starts_at") - LATE_CANCEL_WINDOW, then=Value(Outcome.LATE_CANCEL.value)),
        When(cancelled_at__isnull=False, then=Value(Outcome.CANCELLED.value)),
        When(checked_in_at__isnull=False, then=Value(Outcome.ATTENDED.value)),
        default=Value(Outcome.NO_SHOW.value),
    )


# Alternative rules, evaluated beside the default on a shop's own history (scoring.evaluation, compare_rules);
# none of them scores anyone. Each gives a score from 0 to 100 from a customer's counts in the window, and the
# tiers follow from it as for the default (tier_for).
RECENT_DAYS = 60  # recency weighting: an appointment in the window's last RECENT_DAYS days counts twice
PRIOR_WEIGHT = 2  # the fitted prior is worth this many appointments, as Beta(1, 1) is in the default rule


class Counts(NamedTuple):
    """A customer's scored appointments in a window, those of them in its last RECENT_DAYS days, and their shop's
    (all its customers') in the window."""

    attended: int
    no_shows: int
    late_cancels: int
    recent_attended: int = 0
    recent_no_shows: int = 0
    recent_late_cancels: int = 0
    shop_attended: int = 0
    shop_no_shows: int = 0
    shop_late_cancels: int = 0


class Rule(NamedTuple):
    name: str
    description: str
    score: Callable[[Counts], int]  # the rule in Python (the tests hold it to its SQL twin)
    sql: Callable[[Mapping[str, str]], str]  # the rule in SQL for PostgreSQL and SQLite, of the Counts' columns


def _default_sql(c: Mapping[str, str]) -> str:
    d = f"(2 * {c['attended']} + 2 * {c['no_shows']} + {c['late_cancels']} + 4)"
    return f"((400 * ({c['attended']} + 1) + {d}) / (2 * {d}))"


def _recency_score(c: Counts) -> int:
    return score_for(
        c.attended + c.recent_attended, c.no_shows + c.recent_no_shows, c.late_cancels + c.recent_late_cancels
    ).score


def _recency_sql(c: Mapping[str, str]) -> str:
    return _default_sql({name: f"({c[name]} + {c['recent_' + name]})" for name in Counts._fields[:3]})


def _prior_score(c: Counts) -> int:
    # p = P / Q, the shop's (A + 1) / (A + N + L/2 + 2); the score 100 (A + 2p) / (A + N + L/2 + 2) rounded half up,
    # in integers as the default rule is (no floating point: PostgreSQL and SQLite round floats differently).
    p, q = 2 * c.shop_attended + 2, 2 * c.shop_attended + 2 * c.shop_no_shows + c.shop_late_cancels + 4
    numerator = 100 * (2 * c.attended * q + 2 * PRIOR_WEIGHT * p)
    denominator = q * (2 * c.attended + 2 * c.no_shows + c.late_cancels + 2 * PRIOR_WEIGHT)
    return (2 * numerator + denominator) // (2 * denominator)


def _prior_sql(c: Mapping[str, str]) -> str:
    p = f"(2 * {c['shop_attended']} + 2)"
    q = f"(2 * {c['shop_attended']} + 2 * {c['shop_no_shows']} + {c['shop_late_cancels']} + 4)"
    numerator = f"(100 * (2 * {c['attended']} * {q} + {2 * PRIOR_WEIGHT} * {p}))"
    denominator = f"({q} * (2 * {c['attended']} + 2 * {c['no_shows']} + {c['late_cancels']} + {2 * PRIOR_WEIGHT}))"
    return f"((2 * {numerator} + {denominator}) / (2 * {denominator}))"


RULES = {
    "default": Rule(
        "default",
        "100 (A+1) / (A+N+L/2+2): Laplace's rule, Beta(1, 1) prior",
        lambda c: score_for(c.attended, c.no_shows, c.late_cancels).score,
        _default_sql,
    ),
    "recency": Rule(
        "recency",
        f"the default, with the window's last {RECENT_DAYS} days counted twice",
        _recency_score,
        _recency_sql,
    ),
    "shop-prior": Rule(
        "shop-prior",
        f"100 (A + {PRIOR_WEIGHT}p) / (A+N+L/2+{PRIOR_WEIGHT}), p the shop's own attendance rate",
        _prior_score,
        _prior_sql,
    ),
}
DEFAULT_RULE = "default"
