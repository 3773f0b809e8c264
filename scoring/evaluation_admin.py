"""What the score predicts, in the admin: the shop page's table, chart and sentence, and the stored runs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from jobs.admin import ReadOnly, TimesInUTCAdmin
from scoring.evaluation import TIERS, ShopEvaluation, TierRow, percent, sentence
from scoring.models import Evaluation, Shop
from scoring.rules import DEFAULT_RULE

COLOURS = {"reliable": "#2e7d32", "watch": "#b26a00", "risky": "#c62828", "new": "#607d8b"}
CHART_WIDTH, BAR_HEIGHT, LABEL_WIDTH = 420, 22, 70
HISTORY = 6  # earlier runs shown beside the latest


def shop_evaluation(shop: Shop) -> SafeString:
    """The latest evaluation of the default rule for this shop: a sentence, a table, a bar chart, earlier AUCs."""
    runs = list(Evaluation.objects.filter(shop=shop, rule=DEFAULT_RULE).order_by("-computed_at")[: HISTORY + 1])
    if not runs:
        return render_to_string("scoring/shop_evaluation.html", {"latest": None})
    latest = runs[0]
    rows = [_row(tier, latest.tiers.get(tier) or {}) for tier in TIERS]
    top = max((row["share"] or 0 for row in rows), default=0) or 1
    for index, row in enumerate(rows):
        row["y"] = index * (BAR_HEIGHT + 6)
        row["width"] = round((CHART_WIDTH - LABEL_WIDTH - 60) * (row["share"] or 0) / top)
        row["text_x"] = LABEL_WIDTH + row["width"] + 6
    context = {
        "latest": latest, "rows": rows, "sentence": _sentence(latest), "auc": _auc(latest.auc),
        "earlier": [(run, _auc(run.auc)) for run in runs[1:]], "chart_width": CHART_WIDTH,
        "chart_height": len(rows) * (BAR_HEIGHT + 6), "bar_height": BAR_HEIGHT, "label_width": LABEL_WIDTH,
    }  # fmt: skip
    return render_to_string("scoring/shop_evaluation.html", context)


def _row(tier: str, counts: dict[str, Any]) -> dict[str, Any]:
    appointments = counts.get("appointments", 0)
    share = counts.get("missed", 0) / appointments if appointments else None
    return {
        "tier": tier, "customers": counts.get("customers", 0), "appointments": appointments,
        "missed": counts.get("missed", 0), "missed_any": counts.get("missed_any", 0), "share": share,
        "percent": percent(share), "colour": COLOURS[tier],
    }  # fmt: skip


def _sentence(evaluation: Evaluation) -> str:
    result = ShopEvaluation(evaluation.shop_id, evaluation.at, evaluation.rule)
    for tier in TIERS:
        result.tiers[tier] = TierRow(**(evaluation.tiers.get(tier) or {}))
    return sentence(result)


def _auc(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnly, TimesInUTCAdmin):
    list_display = ["shop", "at", "rule", "customers", "appointments", "missed", "auc", "tier_changes", "computed_at"]
    list_filter = ["rule", "shop"]
    list_select_related = ["shop"]
    ordering = ["-computed_at"]
    show_full_result_count = False
