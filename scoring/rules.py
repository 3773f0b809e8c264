"""The product's rules, each defined once: the Python here and the SQL in scoring/scores.py and offers.py use these.

The scoring window is a setting (RECOMPUTE_SCORES_WINDOW_DAYS, 180 days by default).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import NamedTuple

from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce

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


def effective_tier(tier: str | None, pinned_tier: str, pinned_until: date | None, today: date) -> Tier:
    """The tier that counts: a pin while `pinned_until` (inclusive, a UTC date) has not passed, else the
    score's tier (`new` for a customer not scored yet)."""
    if pinned_tier and pinned_until is not None and pinned_until >= today:
        return Tier(pinned_tier)
    return Tier(tier or Tier.NEW)


def effective_tier_in_sql(today: date) -> Case:
    """effective_tier for a queryset of customers, computed by the database."""
    return Case(
        When(Q(pinned_until__gte=today) & ~Q(pinned_tier=""), then=F("pinned_tier")),
        default=Coalesce(F("score__tier"), Value(Tier.NEW.value)),
    )
