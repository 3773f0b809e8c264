from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scoring.models import Tier
from scoring.rules import score_for


@pytest.mark.parametrize(
    ("attended", "no_shows", "late_cancels", "score", "tier"),
    [
        (0, 0, 0, 50, Tier.NEW),  # no history: the neutral 50
        (1, 0, 0, 67, Tier.NEW),  # 200/3 = 66.67
        (2, 0, 0, 75, Tier.NEW),  # fewer than 3 scored appointments: still new
        (3, 0, 0, 80, Tier.RELIABLE),  # 400/5 = 80: reliable starts here
        (2, 1, 0, 60, Tier.WATCH),  # 300/5
        (0, 3, 0, 20, Tier.RISKY),  # 100/5
        (0, 0, 3, 29, Tier.RISKY),  # 100/3.5 = 28.57
        (1, 0, 2, 50, Tier.WATCH),  # 200/4 = 50: watch starts here
        (1, 1, 1, 44, Tier.RISKY),  # 200/4.5 = 44.44
        (0, 1, 1, 29, Tier.NEW),  # 2 scored: new, whatever the score
        (1, 2, 1, 36, Tier.RISKY),  # 200/5.5 = 36.36
        (6, 0, 1, 82, Tier.RELIABLE),  # 700/8.5 = 82.35
        (3, 1, 1, 62, Tier.WATCH),  # 400/6.5 = 61.54
        (1, 0, 1, 57, Tier.NEW),  # 200/3.5 = 57.14
        (0, 0, 1, 40, Tier.NEW),  # 100/2.5 = 40
        (97, 0, 0, 99, Tier.RELIABLE),  # 9800/99 = 98.99
        (0, 200, 0, 0, Tier.RISKY),  # 100/202 = 0.495: rounds down to 0
        (1, 0, 3, 44, Tier.RISKY),  # 200/4.5 = 44.44
        (2, 2, 0, 50, Tier.WATCH),  # 300/6 = 50
        (0, 0, 2, 33, Tier.NEW),  # 100/3 = 33.33
    ],
)
def test_the_rule_gives_the_product_table(attended, no_shows, late_cancels, score, tier):
    assert score_for(attended, no_shows, late_cancels) == (score, tier)


def test_exact_halves_round_up_not_to_even():
    assert score_for(0, 6, 0).score == 13  # 100/8 = 12.5
    assert score_for(0, 38, 0).score == 3  # 100/40 = 2.5


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000))
def test_the_integer_formula_is_the_exact_ratio_rounded_half_up(attended, no_shows, late_cancels):
    exact = Fraction(100 * (attended + 1)) / (attended + no_shows + Fraction(late_cancels, 2) + 2)
    score, tier = score_for(attended, no_shows, late_cancels)
    assert score == int(exact + Fraction(1, 2))
    assert 0 <= score <= 100
    scored = attended + no_shows + late_cancels
    expected = Tier.NEW if scored < 3 else Tier.RELIABLE if score >= 80 else Tier.WATCH if score >= 50 else Tier.RISKY
    assert tier == expected
