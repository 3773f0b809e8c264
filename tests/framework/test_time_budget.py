"""A run that runs out of time stops between batches, says where, and the next full run resumes there.

The budget is 0 s: every run does exactly one batch (each run does at least one), so nothing depends on
the machine's speed and no clock is patched.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from jobs.models import Status, Trigger
from jobs.runner import run_job

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_time(settings):
    settings.JOBS_TIME_BUDGET_SECONDS = 0


def test_a_run_out_of_time_is_partial_with_a_checkpoint_and_the_next_run_resumes_from_it():
    runs = []
    while not runs or runs[-1].status == Status.PARTIAL:
        runs.append(run_job("batches", trigger=Trigger.CRON))
        assert len(runs) < 10, "never finished"
    assert [run.status for run in runs] == ["partial"] * 3 + ["succeeded"]  # 3 + 3 + 3 + 1 groups
    assert [(run.counters["total"], run.counters["remaining"]) for run in runs] == [(3, 7), (6, 4), (9, 1), (10, 0)]
    assert [run.counters.get("resume_after") for run in runs] == ["3", "6", "9", None]
    assert Group.objects.count() == 10  # each written once: none skipped, none twice


def test_dry_runs_and_scoped_runs_neither_take_nor_leave_a_resume_point():
    assert run_job("batches", trigger=Trigger.CRON).counters["resume_after"] == "3"
    dry = run_job("batches", {"dry_run": True}, trigger=Trigger.CLI)
    scoped = run_job("batches", {"prefix": "x"}, trigger=Trigger.CLI)
    assert dry.counters["resume_after"] == "6"  # a dry full run resumes too, and is rolled back
    assert scoped.counters["resume_after"] == "3"  # a scoped run starts from the beginning
    resumed = run_job("batches", trigger=Trigger.CRON)
    assert resumed.counters["resume_after"] == "6"  # from the real full run's point: neither of the others'
