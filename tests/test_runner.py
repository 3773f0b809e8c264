from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from jobs.models import JobRun, Status, Trigger
from jobs.registry import JOBS
from jobs.runner import Params, RunResult, run_job
from scoring.models import CustomerScore, Shop
from tests import factories as make
from tests import helpers
from tests.helpers import TEST_LOCK_ID, lock_held_elsewhere, lock_is_free, make_job

db = pytest.mark.django_db
real_db = pytest.mark.django_db(transaction=True)


@pytest.fixture
def job(monkeypatch):
    """Register a test-only job; returns a function that registers one with the given work."""

    def register(func, name="test-job"):
        monkeypatch.setitem(JOBS, name, make_job(name, func))
        return name

    return register


@db
def test_it_records_a_succeeded_run_with_its_counters():
    make.customer()
    result = run_job("recompute-scores", trigger=Trigger.CLI, origin="tests")
    run = JobRun.objects.get()
    assert run.status == Status.SUCCEEDED and result.run.pk == run.pk
    assert run.counters["total"] == 1 and run.errors == [] and run.error_count == 0
    assert run.lock_id == 482175 and run.params["lock_id"] == 482175 and "now" in run.params
    assert run.finished_at >= run.started_at and run.duration_ms >= 0
    assert (run.trigger, run.origin) == (Trigger.CLI, "tests")
    assert result.body == {
        "job": "recompute-scores",
        "runId": run.pk,
        "status": "succeeded",
        **run.counters,
        "errors": [],
    }
    assert (result.http_status, result.exit_code) == (200, 0)


@real_db
def test_it_skips_when_another_session_holds_the_lock():
    make.customer()
    with lock_held_elsewhere(482175):
        result = run_job("recompute-scores", trigger=Trigger.CLI)
    assert result.body == {
        "job": "recompute-scores", "runId": result.run.pk, "status": "skipped", "skipped": True, "reason": "locked"
    }  # fmt: skip
    assert JobRun.objects.get().status == Status.SKIPPED
    assert not CustomerScore.objects.exists()
    assert (result.http_status, result.exit_code) == (200, 75)


@real_db
def test_a_second_run_while_the_first_is_running_is_skipped(job, on_postgres):
    name = job(helpers.blocking)
    helpers.started.clear()
    helpers.release.clear()
    first: list[RunResult] = []

    def run_first() -> None:
        try:
            first.append(run_job(name, trigger=Trigger.CRON))
        finally:
            connections.close_all()

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        assert helpers.started.wait(10)
        if on_postgres:  # visible to everyone as a plain advisory lock on the job's key
            with helpers.connect_elsewhere() as other:
                row = other.execute(
                    "SELECT objid, objsubid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                ).fetchall()
            assert row == [(TEST_LOCK_ID, 1)]
        second = run_job(name, trigger=Trigger.CLI)
        assert second.run.status == Status.SKIPPED
    finally:
        helpers.release.set()
        thread.join(10)
    assert first[0].run.status == Status.SUCCEEDED
    assert list(JobRun.objects.order_by("id").values_list("status", flat=True)) == ["succeeded", "skipped"]
    assert lock_is_free(TEST_LOCK_ID)


@real_db
@pytest.mark.parametrize(
    ("work", "status"),
    [(helpers.failing_item, Status.PARTIAL), (helpers.crashing, Status.FAILED)],
)
def test_the_lock_is_free_after_item_errors_and_after_a_crash(job, work, status):
    name = job(work)
    assert run_job(name, trigger=Trigger.CLI).run.status == status
    assert lock_is_free(TEST_LOCK_ID)


@real_db
def test_the_lock_is_free_after_success():
    run_job("recompute-scores", trigger=Trigger.CLI)
    assert lock_is_free(482175)


@real_db
def test_an_item_that_raises_a_database_error_loses_only_its_own_work(job):
    name = job(helpers.failing_item)
    result = run_job(name, trigger=Trigger.CLI)
    assert result.run.status == Status.PARTIAL
    assert result.body["done"] == 2
    assert result.run.error_count == 1
    assert result.run.errors[0].startswith("item 2: ")
    assert "no_such_table" in result.run.errors[0]
    # committed: items 1 and 3 are there, item 2's own write was undone with it
    assert sorted(Shop.objects.values_list("name", flat=True)) == ["item 1", "item 3"]
    assert (result.http_status, result.exit_code) == (200, 1)


@real_db
def test_a_job_that_raises_is_failed_with_its_traceback_stored_not_shown(job, on_postgres):
    name = job(helpers.crashing)
    result = run_job(name, trigger=Trigger.CLI)
    run = JobRun.objects.get()
    assert run.status == Status.FAILED
    assert "RuntimeError: the job itself broke" in run.traceback
    assert "Traceback" not in str(result.body) and "broke" not in str(result.body)
    assert result.body["error"] and result.body["runId"] == run.pk
    assert (result.http_status, result.exit_code) == (500, 1)
    if on_postgres:  # the run is one transaction there: a crash commits none of its writes
        assert not Shop.objects.exists()


@db
def test_a_run_left_running_by_a_dead_process_is_marked_abandoned_by_the_next_run():
    dead = JobRun.objects.create(
        job="recompute-scores", trigger=Trigger.CRON, started_at=timezone.now() - timedelta(hours=1), lock_id=482175
    )
    other_job = JobRun.objects.create(
        job="prune-job-runs", trigger=Trigger.CRON, started_at=timezone.now() - timedelta(hours=1), lock_id=482177
    )
    result = run_job("recompute-scores", trigger=Trigger.CLI)
    dead.refresh_from_db()
    other_job.refresh_from_db()
    assert dead.status == Status.ABANDONED
    assert dead.finished_at is not None
    assert dead.errors == [f"abandoned: its process died mid-run; noticed by run #{result.run.pk}"]
    assert other_job.status == Status.RUNNING  # another job's lock, another job's business


@real_db
def test_a_skipped_run_leaves_the_live_run_alone():
    live = JobRun.objects.create(
        job="recompute-scores", trigger=Trigger.CRON, started_at=timezone.now(), lock_id=482175
    )
    with lock_held_elsewhere(482175):  # the live run's lock
        assert run_job("recompute-scores", trigger=Trigger.CLI).run.status == Status.SKIPPED
    live.refresh_from_db()
    assert live.status == Status.RUNNING


@db
def test_the_lock_id_comes_from_the_parameter_then_the_setting_then_the_registry():
    assert run_job("recompute-scores", trigger=Trigger.CLI).run.lock_id == 482175
    with override_settings(RECOMPUTE_SCORES_LOCK_ID=700001):
        assert run_job("recompute-scores", trigger=Trigger.CLI).run.lock_id == 700001
        param = run_job("recompute-scores", trigger=Trigger.CLI, params=Params(lock_id=700002))
        assert param.run.lock_id == 700002


@db
def test_a_dry_run_reports_the_work_and_keeps_none_of_it():
    make.customer()
    result = run_job("recompute-scores", trigger=Trigger.CLI, params=Params(dry_run=True))
    assert result.run.status == Status.SUCCEEDED
    assert result.body["created"] == 1 and result.body["dryRun"] is True
    assert result.run.params["dry_run"] is True
    assert not CustomerScore.objects.exists()
