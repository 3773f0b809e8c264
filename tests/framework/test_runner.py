from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from jobs import report
from jobs.models import JobLease, JobRun, Status, Trigger
from jobs.runner import run_job
from tests.framework import testjobs
from tests.framework.testjobs import TEST_LOCK_ID
from tests.helpers import THIS_DATABASE, connect_elsewhere, lock_held_elsewhere, lock_is_free

db = pytest.mark.django_db
real_db = pytest.mark.django_db(transaction=True)
WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


@db
def test_it_records_a_succeeded_run_with_its_counters_in_their_declared_order():
    run = run_job("nightly", trigger=Trigger.CLI, origin="tests")
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED
    assert run.counters == {"total": 200, "written": 200} and run.errors == [] and run.error_count == 0
    assert run.lock_id == TEST_LOCK_ID and run.params["lock_id"] == TEST_LOCK_ID and "now" in run.params
    assert run.params["size"] == 200  # the form's default, recorded
    assert run.finished_at >= run.started_at and run.duration_ms >= 0
    assert (run.trigger, run.origin) == (Trigger.CLI, "tests")
    assert list(report.body(run)) == ["job", "runId", "status", "total", "written", "errors"]
    assert report.body(run) == {
        "job": "nightly", "runId": run.pk, "status": "succeeded", "total": 200, "written": 200, "errors": []
    }  # fmt: skip
    assert Group.objects.count() == 200


@real_db
def test_it_skips_when_another_session_holds_the_lock():
    with lock_held_elsewhere(TEST_LOCK_ID):
        run = run_job("nightly", trigger=Trigger.CLI)
    assert report.body(run) == {
        "job": "nightly", "runId": run.pk, "status": "skipped", "skipped": True, "reason": "locked",
        "heldBy": "another database session",
    }  # fmt: skip
    assert JobRun.objects.get().status == Status.SKIPPED
    assert not Group.objects.exists()


@contextmanager
def first_run_waiting(job: str) -> Iterator[list[JobRun]]:
    """A cron run of `job` (one that waits for the test) in a thread of its own, until the block ends; yields
    the list its run is put in once it ends."""
    testjobs.started.clear()
    testjobs.release.clear()
    first: list[JobRun] = []

    def run_first() -> None:
        try:
            first.append(run_job(job, trigger=Trigger.CRON))
        finally:
            connections.close_all()

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        assert testjobs.started.wait(10)
        yield first
    finally:
        testjobs.release.set()
        thread.join(10)


@real_db
def test_a_second_run_while_the_first_is_running_is_skipped(on_postgres):
    with first_run_waiting("blocking") as first:
        if on_postgres:  # visible to everyone as a plain advisory lock on the job's key
            with connect_elsewhere() as other:
                row = other.execute(
                    f"SELECT objid, objsubid FROM pg_locks WHERE locktype = 'advisory' AND granted AND {THIS_DATABASE}"
                ).fetchall()
            assert row == [(990005, 1)]
        second = run_job("blocking", trigger=Trigger.CLI)
        assert second.status == Status.SKIPPED
        assert second.held_by == f"run #{JobRun.objects.order_by('id').first().pk}"  # one of ours, named
    assert first[0].status == Status.SUCCEEDED
    assert list(JobRun.objects.order_by("id").values_list("status", flat=True)) == ["succeeded", "skipped"]
    assert lock_is_free(990005)


@real_db
def test_a_run_under_another_lock_id_is_skipped_when_what_it_shares_is_held(on_postgres):
    with first_run_waiting("sharing") as first:
        second = run_job("sharing", {"lock_id": 990009}, trigger=Trigger.CLI)  # its own lock is free
        holder = f"run #{JobRun.objects.order_by('id').first().pk}"
        assert report.body(second) == {
            "job": "sharing", "runId": second.pk, "status": "skipped", "skipped": True, "reason": "locked",
            "heldBy": holder, "held": "the shared thing",
        }  # fmt: skip
        assert report.summary(second).endswith(f": the shared thing is held by {holder}")
    assert first[0].status == Status.SUCCEEDED
    assert Group.objects.count() == 1  # the first run's: the second wrote nothing
    assert lock_is_free(990008) and lock_is_free(990009)
    if on_postgres:
        with connect_elsewhere() as other:
            left = other.execute(f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND {THIS_DATABASE}")
            assert left.fetchone()[0] == 0  # the shared thing's lock went with the run
    else:
        assert not JobLease.objects.exists()


@real_db
@pytest.mark.parametrize(("job", "status"), [("failing-item", Status.PARTIAL), ("crashing", Status.FAILED)])
def test_the_lock_is_free_after_item_errors_and_after_a_crash(job, status):
    run = run_job(job, trigger=Trigger.CLI)
    assert run.status == status
    assert lock_is_free(run.lock_id)


@real_db
def test_the_lock_is_free_after_success():
    run_job("nightly", trigger=Trigger.CLI)
    assert lock_is_free(TEST_LOCK_ID)


@real_db
def test_an_item_that_raises_a_database_error_loses_only_its_own_work():
    run = run_job("failing-item", trigger=Trigger.CLI)
    assert run.status == Status.PARTIAL
    assert report.body(run)["done"] == 2
    assert run.error_count == 1
    assert run.errors[0].startswith("item 2: ")
    assert "no_such_table" in run.errors[0]
    # committed: items 1 and 3 are there, item 2's own write was undone with it
    assert sorted(Group.objects.values_list("name", flat=True)) == ["item 1", "item 3"]


@real_db
def test_a_job_that_raises_is_failed_with_its_reason_and_traceback_stored_not_shown(on_postgres):
    run = run_job("crashing", trigger=Trigger.CLI)
    run.refresh_from_db()
    assert run.status == Status.FAILED
    assert run.errors == ["RuntimeError: the job itself broke"] and run.error_count == 1
    assert "Traceback" in run.traceback and "RuntimeError: the job itself broke" in run.traceback
    body = report.body(run)
    assert "Traceback" not in str(body) and "broke" not in str(body)
    assert body["error"] and body["runId"] == run.pk
    if on_postgres:  # the run is one transaction there: a crash commits none of its writes
        assert not Group.objects.exists()


@db
def test_a_run_left_running_by_a_dead_process_is_marked_abandoned_by_the_next_run():
    dead = JobRun.objects.create(
        job="nightly", trigger=Trigger.CRON, started_at=timezone.now() - timedelta(hours=1), lock_id=TEST_LOCK_ID
    )
    other_job = JobRun.objects.create(
        job="frequent", trigger=Trigger.CRON, started_at=timezone.now() - timedelta(hours=1), lock_id=990002
    )
    run = run_job("nightly", trigger=Trigger.CLI)
    dead.refresh_from_db()
    other_job.refresh_from_db()
    assert dead.status == Status.ABANDONED
    [error] = dead.errors
    assert re.fullmatch(rf"abandoned: its process died mid-run; noticed by run #{run.pk} at {WHEN}", error)
    assert other_job.status == Status.RUNNING  # another job's lock, another job's business


@db
def test_an_abandoned_run_ends_when_it_was_last_seen_not_when_a_later_run_noticed_it():
    """With no lease to tell more (PostgreSQL: a run shows nothing before it commits), that is its start."""
    started_at = timezone.now() - timedelta(days=1)
    dead = JobRun.objects.create(job="nightly", trigger=Trigger.CRON, started_at=started_at, lock_id=TEST_LOCK_ID)
    run_job("nightly", trigger=Trigger.CLI)
    dead.refresh_from_db()
    assert (dead.status, dead.finished_at, dead.duration_ms) == (Status.ABANDONED, started_at, None)


@db
def test_without_advisory_locks_the_lease_tells_when_an_abandoned_run_was_last_seen(on_postgres, settings):
    if on_postgres:
        pytest.skip("the lease is the lock on databases without advisory locks (SQLite)")
    settings.JOBS_LEASE_SECONDS = 60
    started_at = timezone.now() - timedelta(hours=2)
    dead = JobRun.objects.create(job="nightly", trigger=Trigger.CRON, started_at=started_at, lock_id=TEST_LOCK_ID)
    renewed = started_at + timedelta(minutes=7)  # its last renewal: the lease ran out a minute later
    JobLease.objects.create(
        lock_id=TEST_LOCK_ID, owner=f"run #{dead.pk} 0123abcd", expires_at=renewed + timedelta(seconds=60)
    )
    run_job("nightly", trigger=Trigger.CLI)
    dead.refresh_from_db()
    assert (dead.status, dead.finished_at, dead.duration_ms) == (Status.ABANDONED, renewed, None)


@real_db
def test_a_skipped_run_leaves_the_live_run_alone():
    live = JobRun.objects.create(job="nightly", trigger=Trigger.CRON, started_at=timezone.now(), lock_id=TEST_LOCK_ID)
    with lock_held_elsewhere(TEST_LOCK_ID):  # the live run's lock
        assert run_job("nightly", trigger=Trigger.CLI).status == Status.SKIPPED
    live.refresh_from_db()
    assert live.status == Status.RUNNING


@db
def test_the_lock_id_comes_from_the_parameter_then_the_variable_then_the_declaration():
    assert run_job("nightly", trigger=Trigger.CLI).lock_id == TEST_LOCK_ID
    with override_settings(JOBS_LOCK_IDS={"NIGHTLY_LOCK_ID": 700001}):
        assert run_job("nightly", trigger=Trigger.CLI).lock_id == 700001
        assert run_job("nightly", {"lock_id": 700002}, trigger=Trigger.CLI).lock_id == 700002


@db
def test_a_dry_run_reports_the_work_and_keeps_none_of_it():
    run = run_job("nightly", {"dry_run": True, "size": 2}, trigger=Trigger.CLI)
    assert run.status == Status.SUCCEEDED
    assert report.body(run)["written"] == 2 and report.body(run)["dryRun"] is True
    assert run.params["dry_run"] is True
    assert not Group.objects.exists()
