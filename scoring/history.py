"""Each customer's score history: the changes the scores' trigger appends (scoring.models.ScoreChange), kept as long
as the job runs (JOB_RUNS_RETENTION_DAYS), and drawn on the customer's page as a small inline SVG."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Max, Min, QuerySet
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from jobs.timefmt import utc
from scoring import rules
from scoring.models import ScoreChange, Tier, UTCDate


def cutoff(now: datetime) -> datetime:
    """Where the kept history begins: the job runs' retention."""
    return now - timedelta(days=settings.JOB_RUNS_RETENTION_DAYS)


def prune(now: datetime) -> int:
    """Delete the changes older than the retention, in one statement (each change says what the score was
    before it, so the history still reads from its first row). Returns how many were deleted."""
    return ScoreChange.objects.filter(at__lt=cutoff(now)).delete()[0]


def of(customer_id: uuid.UUID) -> QuerySet[ScoreChange]:
    """A customer's changes, newest first: from the history's (day, customer) index, a probe for each day from the
    history's first change to its last (the ends of its time index: one query). The index is by day so that a run's
    changes, all dated at its `now`, are written to a few pages of it rather than a page each (migration 0022)."""
    span = ScoreChange.objects.aggregate(first=Min("at"), last=Max("at"))
    first, last = (span[end].astimezone(UTC).date() if span[end] else None for end in ("first", "last"))
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)] if first and last else []
    return (
        ScoreChange.objects.alias(day=UTCDate("at"))
        .filter(day__in=days, customer_id=customer_id)
        .order_by("-at", "-id")
    )


BANDS = (  # (tier, lowest score, highest score, fill): the tiers a score falls in once it is not `new`
    (Tier.RELIABLE, rules.RELIABLE_FROM, 100, "#dcfce7"),
    (Tier.WATCH, rules.WATCH_FROM, rules.RELIABLE_FROM, "#fef3c7"),
    (Tier.RISKY, 0, rules.WATCH_FROM, "#fee2e2"),
)
LINE = "#1e3a8a"


def chart(
    changes: Sequence[ScoreChange], score: int, since: datetime, now: datetime, *, width: int = 480, height: int = 140
) -> SafeString:
    """The score from the start of the kept history (or `since`, when the customer was added, if later) to `now`,
    where it is `score`: a step line over the tier bands, a dot at each change (hollow while `new`) that says on
    hover when, from what to what, and which run. Server-side SVG, no JavaScript."""
    points = sorted(changes, key=lambda change: (change.at, change.id))
    start = min(now, max(cutoff(now), min([since, *(change.at for change in points)])))
    span = max((now - start).total_seconds(), 1)
    left, right, top, bottom = 26, width - 4, 6, height - 18  # room for the scores on the left, the dates below

    def x(moment: datetime) -> float:
        return left + max(0.0, (moment - start).total_seconds()) / span * (right - left)

    def y(value: int) -> float:
        return bottom - value / 100 * (bottom - top)

    bands = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>',
        ((left, _n(y(high)), right - left, _n(y(low) - y(high)), fill) for _, low, high, fill in BANDS),
    )
    value = points[0].previous_score if points else score
    path = f"M {_n(x(start))} {_n(y(value))}"
    for change in points:
        path += f" H {_n(x(change.at))} V {_n(y(change.score))}"
    path += f" H {_n(x(now))} V {_n(y(score))}"  # the stored score (a score deleted and written again is no change)
    # The thresholds on the left, the dates below (the bands' names are in the legend under the chart).
    texts = [(left - 4, y(value) + 4, "end", str(value)) for value in (100, rules.RELIABLE_FROM, rules.WATCH_FROM, 0)]
    texts += [(left, height - 4, "start", start.date().isoformat()), (right, height - 4, "end", "now")]
    labels = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="{}" font-size="11" fill="#4b5563">{}</text>',
        ((_n(tx), _n(ty), anchor, text) for tx, ty, anchor, text in texts),
    )
    dots = format_html_join(
        "",
        '<circle cx="{}" cy="{}" r="3.5" fill="{}" stroke="{}" stroke-width="1.5"><title>{}</title></circle>',
        ((_n(x(c.at)), _n(y(c.score)), "#fff" if c.tier == Tier.NEW else LINE, LINE, describe(c)) for c in points),
    )
    label = f"Score from {utc(start)} to {utc(now)}: " + (
        f"{len(points)} change{'s' if len(points) != 1 else ''}, from {points[0].previous_score} to {score}"
        if points
        else f"{score} throughout"
    )
    return format_html(
        '<svg class="score-history" viewBox="0 0 {} {}" width="{}" height="{}" role="img" aria-label="{}">'
        "<title>{}</title>{}"
        '<path d="{}" fill="none" stroke="{}" stroke-width="2"/>{}{}</svg>',
        width, height, width, height, label, label, bands, path, LINE, labels, dots,
    )  # fmt: skip


def legend() -> SafeString:
    """The bands' names and colours, for under the chart."""
    return format_html_join(
        " ",
        '<span class="band"><span style="background:{}"></span>{} {}</span>',
        ((fill, tier.label, f"{low} to {high - 1 if high < 100 else 100}") for tier, low, high, fill in BANDS),
    )


def describe(change: ScoreChange) -> str:
    """`2026-11-02 02:00 UTC: 64 (Watch) -> 44 (Risky), run #12`."""
    run = f", run #{change.run_id}" if change.run_id else ""
    return (
        f"{utc(change.at)}: {change.previous_score} ({change.get_previous_tier_display()}) -> "
        f"{change.score} ({change.get_tier_display()}){run}"
    )


def _n(value: float) -> str:
    return f"{value:.1f}"
