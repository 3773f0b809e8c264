"""Why a customer has their score: everything the customer's admin page shows, gathered in six queries whatever
the customer's history (the page lists at most LISTED appointments; the counts cover the whole window)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q

from jobs.models import JobRun
from scoring import adjustments, history, rules
from scoring.models import (
    Action,
    Adjustment,
    Appointment,
    Customer,
    CustomerChange,
    CustomerScore,
    DirtyCustomer,
    Outcome,
    ScoreChange,
    ScoringState,
    Tier,
)

LISTED = 200  # appointments on the page, newest first; the appointments list has them all
ADJUSTMENTS = 500  # the customer's latest adjustments read (forgiveness of the listed appointments, pins)
HISTORY = 500  # score changes drawn (the history is pruned after JOB_RUNS_RETENTION_DAYS anyway)


@dataclass(frozen=True)
class Counts:
    """What the rule counts in a window: attended, no-shows, late cancels, and cancellations in time (reported)."""

    attended: int = 0
    no_shows: int = 0
    late_cancels: int = 0
    cancellations: int = 0

    @property
    def scored(self) -> int:
        return self.attended + self.no_shows + self.late_cancels

    @property
    def score(self) -> rules.Score:
        return rules.score_for(self.attended, self.no_shows, self.late_cancels)

    @property
    def formula(self) -> str:
        return rules.score_formula(self.attended, self.no_shows, self.late_cancels)


@dataclass(frozen=True)
class Line:
    """One appointment: whether it counts in the score, what as or why not, and its forgive/undo entries."""

    appointment: Appointment
    counts: bool
    why: str
    adjustments: list[Adjustment] = field(default_factory=list)


@dataclass(frozen=True)
class Explanation:
    customer: Customer
    score: CustomerScore | None
    run: JobRun | None  # the run that last changed the score, while the ledger keeps it
    marked: bool  # a change since the last run: the next run rescores the customer
    effective: Tier
    pin: Adjustment | None  # the entry of the pin in force, if any
    window_start: datetime
    window_end: datetime
    counts: Counts  # of the appointments in the window, as the rule counts them
    counted: list[Line]
    not_counted: list[Line]
    unresolved: list[Line]  # ended, still pending: resolve-outcomes gives them an outcome
    more: bool  # more appointments than LISTED: the oldest are not listed
    history: list[ScoreChange]  # oldest first

    @property
    def tier(self) -> Tier:
        """The computed tier (`new` until the customer has a score)."""
        return Tier(self.score.tier) if self.score else Tier.NEW

    @property
    def agrees(self) -> bool:
        """Whether the stored score is the rule applied to the appointments in its window as they are now."""
        if self.score is None:
            return False
        stored = (self.score.attended, self.score.no_shows, self.score.late_cancels, self.score.cancellations)
        counts = (self.counts.attended, self.counts.no_shows, self.counts.late_cancels, self.counts.cancellations)
        return stored == counts and (self.score.score, self.score.tier) == self.counts.score


def thresholds() -> list[tuple[Tier, str]]:
    """Each tier and when a customer is in it, from the rule's constants."""
    return [
        (Tier.RELIABLE, f"a score of {rules.RELIABLE_FROM} or more"),
        (Tier.WATCH, f"a score from {rules.WATCH_FROM} to {rules.RELIABLE_FROM - 1}"),
        (Tier.RISKY, f"a score below {rules.WATCH_FROM}"),
        (Tier.NEW, f"fewer than {rules.NEW_BELOW} scored appointments in the window, whatever the score"),
    ]


def in_words(tier: Tier) -> str:
    return dict(thresholds())[tier]


def explain(customer_id: uuid.UUID, now: datetime) -> Explanation:
    """Why the customer has their score, as of `now`.

    The window is the stored score's: it ends at the end of the last run's window (every score a run has not
    marked since is exact there). The counts are the rule's over the appointments in that window as they are
    now; when they differ from the stored ones (a change since the last run), `agrees` is False and the next
    run stores what they give.
    """
    marked = Exists(DirtyCustomer.objects.filter(customer_id=OuterRef("pk"))) | Exists(
        CustomerChange.objects.filter(customer_id=OuterRef("pk"))
    )
    customer = (
        Customer.objects.select_related("shop", "score", "score__run").annotate(marked=marked).get(pk=customer_id)
    )
    score: CustomerScore | None = getattr(customer, "score", None)
    state = ScoringState.objects.only("last_now").first()
    end = (state.last_now if state else None) or (score.computed_at if score else now)
    start = end - timedelta(days=score.window_days if score else settings.RECOMPUTE_SCORES_WINDOW_DAYS)
    counts = _counts(customer, start, end)
    visits = Appointment.objects.filter(customer=customer).select_related("shop").order_by("-starts_at", "-id")
    listed = list(visits[: LISTED + 1])
    entries = list(Adjustment.objects.filter(customer=customer).order_by("-at", "-id")[:ADJUSTMENTS])
    changes = list(history.of(customer.pk).select_related("run")[:HISTORY])
    by_visit: dict[uuid.UUID, list[Adjustment]] = defaultdict(list)
    for entry in entries:
        if entry.appointment_id is not None:
            by_visit[entry.appointment_id].append(entry)
    counted: list[Line] = []
    not_counted: list[Line] = []
    unresolved: list[Line] = []
    for visit in listed[:LISTED]:
        line = _line(visit, start, end, now, by_visit.get(visit.pk, []))
        if visit.outcome == Outcome.PENDING and visit.ends_at <= now:
            unresolved.append(line)
        else:
            (counted if line.counts else not_counted).append(line)
    pinned = adjustments.pin_lasts(customer, adjustments.today_utc(now))
    effective = Tier(customer.pinned_tier) if pinned else Tier(score.tier if score else Tier.NEW)
    pin = next((entry for entry in entries if entry.action == Action.PIN), None) if pinned else None
    return Explanation(
        customer=customer, score=score, run=score.run if score else None, marked=customer.marked,
        effective=effective, pin=pin, window_start=start, window_end=end, counts=counts, counted=counted,
        not_counted=not_counted, unresolved=unresolved, more=len(listed) > LISTED, history=changes[::-1],
    )  # fmt: skip


def _counts(customer: Customer, start: datetime, end: datetime) -> Counts:
    """The rule's counts over the window, in the database: resolved, not forgiven, start in [start, end)."""
    window = Appointment.objects.filter(customer=customer, starts_at__gte=start, starts_at__lt=end, forgiven=False)
    totals = window.aggregate(
        **{
            name: Count("pk", filter=Q(outcome=outcome))
            for name, outcome in (
                ("attended", Outcome.ATTENDED), ("no_shows", Outcome.NO_SHOW),
                ("late_cancels", Outcome.LATE_CANCEL), ("cancellations", Outcome.CANCELLED),
            )
        }
    )  # fmt: skip
    return Counts(**totals)


def _line(visit: Appointment, start: datetime, end: datetime, now: datetime, entries: list[Adjustment]) -> Line:
    """Whether the appointment counts in the score of the window [start, end), and what as, or why not."""
    if visit.outcome == Outcome.PENDING:
        why = "ended, not resolved yet" if visit.ends_at <= now else "booked: it has not happened yet"
    elif visit.starts_at < start:
        why = "before the window"
    elif visit.starts_at >= end:
        why = "after the window's end: the next run counts it"
    elif visit.forgiven:
        why = "forgiven"
    elif visit.outcome == Outcome.CANCELLED:
        why = "cancelled in time: reported, not scored"
    else:
        return Line(visit, True, visit.get_outcome_display(), entries)
    return Line(visit, False, why, entries)
