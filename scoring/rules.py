"""The scoring rule, as one pure function (a product decision; see README)."""

from __future__ import annotations

from typing import NamedTuple

from scoring.models import Tier


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
    if attended + no_shows + late_cancels < 3:
        tier = Tier.NEW
    elif score >= 80:
        tier = Tier.RELIABLE
    elif score >= 50:
        tier = Tier.WATCH
    else:
        tier = Tier.RISKY
    return Score(score, tier)
