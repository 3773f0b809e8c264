"""Which runs speak for a job's health (JobRun.real): recorded with the run, and backfilled by migration 0007."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from jobs.models import JobRun, Trigger
from jobs.runner import run_job

pytestmark = pytest.mark.django_db


def test_a_run_is_real_unless_it_is_dry_or_narrowed_to_part_of_the_work():
    whole = run_job("nightly", {"size": 1}, trigger=Trigger.CLI)
    dry = run_job("nightly", {"size": 1, "dry_run": True}, trigger=Trigger.CLI)
    narrowed = run_job("nightly", {"size": 1, "prefix": "p"}, trigger=Trigger.CLI)
    assert [JobRun.objects.get(pk=run.pk).real for run in (whole, dry, narrowed)] == [True, False, False]


@pytest.mark.django_db(transaction=True)
def test_the_migration_marks_the_dry_and_narrowed_runs_already_in_the_ledger():
    executor = MigrationExecutor(connection)
    executor.migrate([("jobs", "0006_outbox")])
    old = executor.loader.project_state([("jobs", "0006_outbox")]).apps.get_model("jobs", "JobRun")
    now = timezone.now()
    made = {
        params_name: old.objects.create(job=job, trigger="cron", status="succeeded", started_at=now, lock_id=1,
                                        params=params).pk
        for params_name, job, params in (
            ("whole", "nightly", {"now": "x", "lock_id": 1, "size": 2}),
            ("dry", "nightly", {"now": "x", "lock_id": 1, "dry_run": True}),
            ("narrowed", "nightly", {"now": "x", "lock_id": 1, "prefix": "p"}),
            ("another job's field", "frequent", {"now": "x", "lock_id": 1, "prefix": "p"}),  # not its scope
        )
    }  # fmt: skip
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    real = dict(JobRun.objects.values_list("pk", "real"))
    assert {name: real[pk] for name, pk in made.items()} == {
        "whole": True,
        "dry": False,
        "narrowed": False,
        "another job's field": True,
    }
