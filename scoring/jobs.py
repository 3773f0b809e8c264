"""The scheduled jobs of the scoring domain, declared for the jobs framework (found at start-up)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, timedelta
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from jobs.context import Context, Result
from jobs.forms import JobForm, TrueFalseField, WholeNumberField
from jobs.registry import job
from scoring import adjustments, evaluation, offers, outcomes, scores
from scoring.models import Shop

LIMIT_DEFAULT, LIMIT_MAX = 200, 1000


class ShopField(forms.ModelChoiceField):
    """A shop's UUID; the cleaned value is the UUID. Unknown: a "not found" error (404 over HTTP)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(queryset=Shop.objects.order_by("name"), required=False, empty_label="all shops", **kwargs)

    def to_python(self, value: Any) -> uuid.UUID | None:
        if value is None:
            return None
        try:
            shop = uuid.UUID(str(value))
        except ValueError:
            raise ValidationError("must be a shop's UUID", code="invalid") from None
        if not Shop.objects.filter(pk=shop).exists():
            raise ValidationError("no shop has this id", code="not_found")
        return shop


class ShopForm(JobForm):
    shop = ShopField(help_text="only this shop (UUID)")
    query_names = {"shop": "shopId"}
    scope = ("shop",)


class RecomputeForm(ShopForm):
    full = TrueFalseField(help_text="rescore every customer, not only those whose score may have changed")


class LimitForm(JobForm):
    limit = WholeNumberField(
        low=1, cap=LIMIT_MAX, default=LIMIT_DEFAULT, help_text=f"at most this many items (max {LIMIT_MAX})"
    )


class ShopLimitForm(ShopForm, LimitForm):
    pass


class PastDateField(forms.DateField):
    """A day before today (UTC), as YYYY-MM-DD; empty: None (the job takes its default)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, input_formats=["%Y-%m-%d"], **kwargs)

    def to_python(self, value: Any) -> date | None:
        try:
            day = super().to_python(value)
        except ValidationError:
            raise ValidationError("must be a date, YYYY-MM-DD", code="invalid") from None
        if day is not None and day >= timezone.now().astimezone(UTC).date():
            raise ValidationError("must be a day before today (UTC)", code="invalid")
        return day


class EvaluateForm(ShopForm):
    at = PastDateField(help_text=f"score as of this day, YYYY-MM-DD (default {evaluation.DEFAULT_DAYS_AGO} days ago)")


class ResolveForm(JobForm):
    """No limit: every appointment that is due, within the time budget (the next run goes on from there)."""

    limit = WholeNumberField(
        low=1, cap=LIMIT_MAX, help_text=f"at most this many appointments (max {LIMIT_MAX}); empty: all that are due",
        widget=forms.TextInput(attrs={"placeholder": "all"}),
    )  # fmt: skip


@job(
    name="resolve-outcomes",
    lock_id=482173,
    schedule="0 0 * * *",
    description="Give finished appointments their outcome (attended, no-show, cancellations).",
    form=ResolveForm,
    counters=outcomes.COUNTERS,
    backlog=outcomes.backlog,
    lag=timedelta(hours=26),  # a day between runs, and their grace
)
def resolve_outcomes(ctx: Context) -> Result:
    return outcomes.resolve_outcomes(ctx, limit=ctx.params["limit"])


@job(
    name="expire-offers",
    lock_id=482174,
    schedule="*/5 * * * *",
    description="Expire unanswered slot offers and offer those slots to the next in line.",
    form=LimitForm,
    grace=timedelta(minutes=15),
    counters=offers.EXPIRE_COUNTERS,
    backlog=offers.backlog,
    lag=timedelta(minutes=30),
)
def expire_offers(ctx: Context) -> Result:
    return offers.expire_offers(ctx, limit=ctx.params["limit"])


def recompute_kind(params: Mapping[str, Any], counters: Mapping[str, Any]) -> str:
    """`full pass` or `incremental`: what a run did (its `full_pass` counter), or, before it tells, what was asked.

    A run asked for nothing in particular is a full pass when one is due (a pass cut short, a new window
    or rule): only its counters say so.
    """
    if "full_pass" in counters:
        return "full pass" if counters["full_pass"] else "incremental"
    return "full pass" if params.get("full") else "incremental"


@job(
    name="recompute-scores",
    lock_id=482175,
    schedule="0 2 * * *",
    description="Rescore the customers whose appointments changed or crossed the window's edges (or all: full).",
    form=RecomputeForm,
    counters=(*scores.COUNTERS, "forgiven"),
    also=(("0 3 * * 0", "full=1"),),  # a weekly full pass
    backlog=scores.backlog,
    kind=recompute_kind,
)
def recompute_scores(ctx: Context) -> Result:
    # First the shops' grace rules: the no-shows they forgive mark their customers, whom this run then rescores.
    forgiven = adjustments.apply_grace_rule(ctx.now, shop=ctx.params["shop"])
    result = scores.recompute_scores(ctx, shop=ctx.params["shop"], full=ctx.params["full"])
    return replace(result, counters={**result.counters, "forgiven": forgiven})


@job(
    name="offer-loop",
    lock_id=482176,
    auth="internal",
    description="Offer each open slot to the best-ranked waiting customer (called by the app).",
    form=ShopLimitForm,
    counters=offers.LOOP_COUNTERS,
)
def offer_loop(ctx: Context) -> Result:
    return offers.offer_loop(ctx, shop=ctx.params["shop"], limit=ctx.params["limit"])


@job(
    name="evaluate-scores",
    lock_id=482181,
    schedule="0 5 * * 1",
    description="Replay the rule at a past date and measure, per shop, what its tiers predicted since then.",
    form=EvaluateForm,
    counters=evaluation.COUNTERS,
    grace=timedelta(hours=2),
)
def evaluate_scores(ctx: Context) -> Result:
    return evaluation.evaluate_scores(ctx, at=ctx.params["at"], shop=ctx.params["shop"])
