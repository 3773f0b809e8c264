"""Check-ins when the monitor misbehaves: a monitor that hangs delays a run by at most one attempt's deadline, and
the run's end never reaches a monitor before its start. Real servers on loopback, real threads and connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from jobs import alerts, monitors
from jobs.models import OutboxMessage, Status, Trigger
from jobs.registry import JOBS
from jobs.runner import run_job
from tests.framework.testjobs import JOBS_FOR_TESTS
from tests.helpers import free_port
from tests.receivers import monitor, never_answering

real_db = pytest.mark.django_db(transaction=True)
DEADLINE = 2


@pytest.fixture(autouse=True)
def test_jobs(settings, monkeypatch) -> Iterator[None]:
    settings.JOBS_ALERT_EMAILS = []
    settings.JOBS_ALERT_WEBHOOK_URL = ""
    settings.JOBS_ALERT_SEND_SECONDS = DEADLINE
    for job in JOBS_FOR_TESTS:
        monkeypatch.setitem(JOBS, job.name, job)
    yield
    for thread in threading.enumerate():  # attempts still under way record their outcome before the tables go
        if thread.name.startswith("outbox "):
            thread.join(30)


def timed_run() -> tuple[float, Status]:
    started = time.monotonic()
    run = run_job("nightly", trigger=Trigger.CLI)
    return time.monotonic() - started, Status(run.status)


@real_db
def test_a_monitor_that_hangs_delays_a_run_by_at_most_its_deadline_and_gets_start_before_end_later(settings):
    settings.JOBS_CHECKIN_URLS = {}
    timed_run()  # warm: the first run opens the connection and fills the caches
    baseline, _ = timed_run()
    with never_answering() as (url, came):
        settings.JOBS_CHECKIN_URLS = {"NIGHTLY_CHECKIN_URL": url}
        took, status = timed_run()
    print(f"run without a monitor {baseline:.2f} s, with a monitor that hangs {took:.2f} s (deadline {DEADLINE} s)")
    assert status == Status.SUCCEEDED  # the monitor's silence is not the run's problem
    assert len(came) == 1  # the start was tried; the end waits behind it, not tried against the same hung monitor
    assert took - baseline <= DEADLINE + 1  # the second: room for a busy machine's noise, not for the monitor
    start, end = OutboxMessage.objects.filter(channel="checkin").order_by("created_at")
    assert (start.kind, start.attempts, start.delivered_at) == ("start", 1, None)
    assert (end.kind, end.attempts, end.delivered_at) == ("success", 0, None)

    with monitor("healthchecks") as (url, signals):  # the monitor answers again (here, at a new URL)
        settings.JOBS_CHECKIN_URLS = {"NIGHTLY_CHECKIN_URL": url}
        alerts.check(timezone.now())  # within the start's backoff: nothing goes, the end not before its start
        assert signals.seen == []
        with time_machine.travel(timezone.now() + timedelta(minutes=1, seconds=1)):
            alerts.check(timezone.now())
    pair = monitors.pairing_id(start.content["run_id"])
    assert signals.seen == [("start", pair), ("success", pair)]
    assert OutboxMessage.objects.filter(channel="checkin", delivered_at__isnull=True).count() == 0


@real_db
def test_a_dead_monitor_neither_fails_nor_slows_a_run(settings):
    settings.JOBS_CHECKIN_URLS = {"NIGHTLY_CHECKIN_URL": f"http://127.0.0.1:{free_port()}/ping/x"}  # nothing listens
    took, status = timed_run()
    assert status == Status.SUCCEEDED and took < 1.5
    rows = OutboxMessage.objects.filter(channel="checkin", delivered_at__isnull=True)
    assert sorted(rows.values_list("kind", flat=True)) == ["start", "success"]
    assert "ConnectionRefusedError" in rows.get(kind="start").last_error
