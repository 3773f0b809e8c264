"""A run that runs out of time stops between batches, says where, and the next run resumes there."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Status, Trigger
from jobs.runner import Params, run_job
from scoring import services
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
    while not runs or runs[-1].run.status == Status.PARTIAL:
        runs.append(run_job("recompute-scores", trigger=Trigger.CRON))
        assert len(runs) < 10, "never finished"

    assert [r.run.status for r in runs] == ["partial"] * 4 + ["succeeded"]  # batches of 3, 3, 3, 3, 2
    first = runs[0].run
    assert (first.counters["total"], first.counters["remaining"]) == (3, 11) and first.counters["resume_after"]
    assert runs[-1].run.status == Status.SUCCEEDED and "resume_after" not in runs[-1].run.counters
    assert sum(r.run.counters["total"] for r in runs) == 14  # each customer scored once, none skipped
    resumed = scores()

    CustomerScore.objects.all().delete()
    services.recompute_scores(now=timezone.now(), batch_size=100)
    assert resumed == scores()


def test_dry_runs_and_runs_of_another_scope_leave_the_resume_point_alone(no_time, settings):
    settings.RECOMPUTE_SCORES_BATCH_SIZE = 5
    shop = make.shop()
    for _ in range(8):
        make.customer(shop)
    partial = run_job("recompute-scores", trigger=Trigger.CRON)
    assert (partial.run.status, partial.run.counters["total"], partial.run.counters["remaining"]) == ("partial", 5, 3)
    run_job("recompute-scores", trigger=Trigger.CLI, params=Params(dry_run=True))
    run_job("recompute-scores", trigger=Trigger.CLI, params=Params(shop=shop.pk))
    resumed = run_job("recompute-scores", trigger=Trigger.CRON)
    assert (resumed.run.status, resumed.run.counters["total"]) == ("succeeded", 3)
