"""Check-ins: every real run sends a start and an end signal to the job's outside monitor, in its protocol, paired by
the run's id, through the outbox; dry, scoped and skipped runs send nothing. Real monitors on loopback."""

from __future__ import annotations

import pytest
from django.test import Client

from jobs import monitors
from jobs.models import OutboxMessage, Status, Trigger
from jobs.runner import run_job
from tests.framework.testjobs import TEST_LOCK_ID
from tests.helpers import free_port, lock_held_elsewhere
from tests.receivers import monitor

pytestmark = pytest.mark.django_db
PROTOCOLS = ["healthchecks", "sentry", "cronitor"]
SUCCESS = {"healthchecks": ["start", "success"], "sentry": ["in_progress", "ok"], "cronitor": ["run", "complete"]}
FAILURE = {"healthchecks": ["start", "fail"], "sentry": ["in_progress", "error"], "cronitor": ["run", "fail"]}


@pytest.fixture
def watched(settings):
    """Every test job checks in with the same monitor."""

    def watch(url: str) -> None:
        names = ["nightly", "crashing", "failing-item", "batches", "blocking"]
        settings.JOBS_CHECKIN_URLS = {f"{name.upper().replace('-', '_')}_CHECKIN_URL": url for name in names}

    return watch


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_run_sends_start_and_success_paired_by_its_id(protocol, watched):
    with monitor(protocol) as (url, signals):
        watched(url)
        run = run_job("nightly", trigger=Trigger.CLI)
    assert run.status == Status.SUCCEEDED
    assert signals.refused == []
    assert signals.pairs() == {monitors.pairing_id(run.pk): SUCCESS[protocol]}
    assert OutboxMessage.objects.filter(channel="checkin", delivered_at__isnull=True).count() == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("job", ["crashing", "failing-item"])  # failed, and partial with an item error
def test_a_failing_run_sends_start_and_fail_paired_by_its_id(protocol, job, watched):
    with monitor(protocol) as (url, signals):
        watched(url)
        run = run_job(job, trigger=Trigger.CLI)
    assert run.status == (Status.FAILED if job == "crashing" else Status.PARTIAL)
    assert signals.refused == []
    assert signals.pairs() == {monitors.pairing_id(run.pk): FAILURE[protocol]}


def test_two_runs_are_told_apart_by_their_ids(watched):
    with monitor("healthchecks") as (url, signals):
        watched(url)
        first, second = run_job("nightly", trigger=Trigger.CLI), run_job("crashing", trigger=Trigger.CLI)
    assert signals.seen == [
        ("start", monitors.pairing_id(first.pk)), ("success", monitors.pairing_id(first.pk)),
        ("start", monitors.pairing_id(second.pk)), ("fail", monitors.pairing_id(second.pk)),
    ]  # fmt: skip


def test_a_run_stopped_by_its_time_budget_without_errors_is_a_success(watched, settings):
    settings.JOBS_TIME_BUDGET_SECONDS = 0  # one batch, then out of time: partial, resuming
    with monitor("sentry") as (url, signals):
        watched(url)
        run = run_job("batches", trigger=Trigger.CLI)
    assert (run.status, run.errors) == (Status.PARTIAL, [])
    assert [word for word, _ in signals.seen] == ["in_progress", "ok"]


@pytest.mark.parametrize("params", [{"dry_run": True}, {"prefix": "one shop"}], ids=["dry", "scoped"])
def test_a_dry_or_scoped_run_sends_nothing(watched, params):
    with monitor("healthchecks") as (url, signals):
        watched(url)
        run = run_job("nightly", params, trigger=Trigger.CLI)
    assert run.status == Status.SUCCEEDED
    assert signals.seen == [] and not OutboxMessage.objects.filter(channel="checkin").exists()


@pytest.mark.django_db(transaction=True)  # the lock is held by another connection
def test_a_skipped_run_sends_nothing(watched, settings):
    settings.CRON_SECRET = "s3cret-for-tests-0123456789abcdef"
    with monitor("cronitor") as (url, signals), lock_held_elsewhere(TEST_LOCK_ID):
        watched(url)
        response = Client().get("/api/jobs/nightly", headers={"Authorization": f"Bearer {settings.CRON_SECRET}"})
    assert response.json()["skipped"] is True
    assert signals.seen == [] and not OutboxMessage.objects.filter(channel="checkin").exists()


def test_a_monitor_that_stays_down_leaves_only_the_last_runs_signals_waiting(settings):
    settings.JOBS_CHECKIN_URLS = {"NIGHTLY_CHECKIN_URL": f"http://127.0.0.1:{free_port()}/ping/x"}  # nothing listens
    runs = [run_job("nightly", trigger=Trigger.CLI) for _ in range(3)]
    assert all(run.status == Status.SUCCEEDED for run in runs)
    waiting = OutboxMessage.objects.filter(channel="checkin", delivered_at__isnull=True)
    assert sorted((row.content["run_id"], row.kind) for row in waiting) == [(runs[-1].pk, "start"),
                                                                             (runs[-1].pk, "success")]  # fmt: skip


def test_a_job_without_a_monitor_sends_nothing_and_writes_no_row(settings):
    settings.JOBS_CHECKIN_URLS = {}
    run_job("nightly", trigger=Trigger.CLI)
    assert not OutboxMessage.objects.filter(channel="checkin").exists()


def test_the_protocol_is_read_from_the_url():
    run = 41
    pair = monitors.pairing_id(run)
    assert monitors.ping_url("https://hc-ping.com/5f2a", "start", run) == f"https://hc-ping.com/5f2a/start?rid={pair}"
    assert monitors.ping_url("https://hc-ping.com/5f2a", "success", run) == f"https://hc-ping.com/5f2a?rid={pair}"
    assert monitors.ping_url("https://hc-ping.com/ab/nightly?create=1", "fail", run) == (
        f"https://hc-ping.com/ab/nightly/fail?create=1&rid={pair}"
    )
    sentry = "https://o1.ingest.sentry.io/api/42/cron/nightly/abc123"  # the settings drop a trailing slash
    assert monitors.ping_url(sentry, "fail", run) == f"{sentry}/?status=error&check_in_id={pair}"
    assert monitors.ping_url("https://cronitor.link/p/key/nightly", "start", run) == (
        f"https://cronitor.link/p/key/nightly?state=run&series={pair}"
    )
    assert monitors.protocol("https://example.com/ping/key/nightly") == "cronitor"
    assert monitors.pairing_id(run) != monitors.pairing_id(run + 1)
