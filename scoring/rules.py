"""The product's rules, each defined once: the Python here and the SQL in scoring/scores.py and offers.py use these.

The scoring window is a setting (RECOMPUTE_SCORES_WINDOW_DAYS, 180 days by default).
"""

from __future__ import annotations

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
