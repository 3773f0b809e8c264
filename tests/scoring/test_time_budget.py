"""recompute-scores out of time: each run scores one batch, and the resumed runs end with an unlimited run's scores."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.context import Context
from jobs.models import Status, Trigger
from jobs.runner import run_job
from scoring import scores as scoring
from scoring.models import CustomerScore, Outcome
from tests import factories as make

pytestmark = pytest.mark.django_db
FIELDS = ("customer_id", "score", "tier", "attended", "no_shows", "late_cancels", "cancellations")


@pytest.fixture
def no_time(settings):
    """A budget that is spent as soon as the run starts: every run does exactly one batch, then stops."""
    settings.JOBS_TIME_BUDGET_SECONDS = 0
    settings.RECOMPUTE_SCORES_BATCH_SIZE = 3


def scores() -> list[tuple]:
    return list(CustomerScore.objects.order_by("customer_id").values_list(*FIELDS))


def test_a_budget_limited_run_resumes_and_ends_with_the_scores_of_an_unlimited_run(no_time):
    shop = make.shop()
    now = timezone.now()
    for i in range(14):
        customer = make.customer(shop)
        for day in range(i % 5):
            make.appointment(customer, now - timedelta(days=day + 1), [Outcome.ATTENDED, Outcome.NO_SHOW][day % 2])

    runs = []
    while not runs or runs[-1].status == Status.PARTIAL:
        runs.append(run_job("recompute-scores", trigger=Trigger.CRON))
        assert len(runs) < 10, "never finished"

    assert [run.status for run in runs] == ["partial"] * 4 + ["succeeded"]  # batches of 3, 3, 3, 3, 2
    first = runs[0]
    assert (first.counters["total"], first.counters["remaining"]) == (3, 11) and first.counters["resume_after"]
    assert "resume_after" not in runs[-1].counters
    assert sum(run.counters["total"] for run in runs) == 14  # each customer scored once, none skipped
    resumed = scores()

    CustomerScore.objects.all().delete()
    scoring.recompute_scores(Context(now=timezone.now()), batch_size=100, full=True)
    assert resumed == scores()


def test_dry_runs_and_one_shop_runs_leave_the_resume_point_alone(no_time, settings):
    settings.RECOMPUTE_SCORES_BATCH_SIZE = 5
    shop = make.shop()
    for _ in range(8):
        make.customer(shop)
    partial = run_job("recompute-scores", trigger=Trigger.CRON)
    assert (partial.status, partial.counters["total"], partial.counters["remaining"]) == ("partial", 5, 3)
    run_job("recompute-scores", {"dry_run": True}, trigger=Trigger.CLI)
    run_job("recompute-scores", {"shop": shop.pk}, trigger=Trigger.CLI)
    resumed = run_job("recompute-scores", trigger=Trigger.CRON)
    # The 3 the pass had left; then, on to this run's `now`, the 5 the one-shop run scored at its own.
    assert (resumed.status, resumed.counters["full_pass"], resumed.counters["total"]) == ("succeeded", 1, 8)
    assert "resume_after" not in resumed.counters  # the pass ended


def test_failed_batches_count_as_remaining_and_are_named_in_the_errors(monkeypatch, settings):
    settings.RECOMPUTE_SCORES_BATCH_SIZE = 2
    for _ in range(9):  # batches of 2, 2, 2, 2, 1
        make.customer()
    real = scoring._upsert_sql
    calls = []

    def every_other_batch_fails(*args, **kwargs):  # the batch's statement itself fails in the database
        calls.append(args)
        return "SELECT * FROM no_such_table" if len(calls) % 2 == 0 else real(*args, **kwargs)

    monkeypatch.setattr(scoring, "_upsert_sql", every_other_batch_fails)
    run = run_job("recompute-scores", trigger=Trigger.CRON)
    assert run.status == Status.PARTIAL and run.error_count == 2
    assert (run.counters["total"], run.counters["remaining"]) == (5, 4)
    assert "no_such_table" in run.errors[0] and run.errors[0].startswith("customers ")
    assert CustomerScore.objects.count() == 5
