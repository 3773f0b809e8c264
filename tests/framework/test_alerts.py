"""Alerts: one per incident, reminders, recovery with counts; the health endpoint for uptime monitors."""

from __future__ import annotations

import json
import logging
from base64 import b64encode
from datetime import datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.utils import timezone

from jobs import alerts
from jobs.context import Backlog, Result
from jobs.models import JobAlert, JobRun, OutboxMessage, Status, Trigger
from jobs.registry import JOBS, Job
from jobs.runner import run_job
from tests.helpers import free_port, webhook_receiver

pytestmark = pytest.mark.django_db
SECRET = "s3cret-for-tests-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture(autouse=True)
def configured(settings):
    settings.CRON_SECRET = SECRET
    settings.JOBS_ALERT_EMAILS = ["ops@example.com"]
    settings.JOBS_ALERT_WEBHOOK_URL = ""
    settings.SITE_URL = "https://jobs.example.com"


def ran(job: str, status: Status, hours_ago: float, **fields: object) -> JobRun:
    started_at = timezone.now() - timedelta(hours=hours_ago)
    return JobRun.objects.create(job=job, trigger=Trigger.CRON, status=status, started_at=started_at, lock_id=1,
                                 finished_at=started_at, duration_ms=0, **fields)  # fmt: skip


def subjects(*jobs: str) -> list[str]:
    """The alert e-mails' subjects, for these jobs (other test jobs may turn late as the ledger ages)."""
    return [m.subject for m in mail.outbox if not jobs or m.subject.split()[1] in jobs]


def test_a_failing_job_sends_one_email_per_incident_however_often_it_is_checked():
    ran("nightly", Status.SUCCEEDED, hours_ago=30)
    run = ran("nightly", Status.FAILED, hours_ago=1, errors=["OperationalError: lock timeout"], error_count=1)
    for _ in range(3):
        alerts.check(timezone.now())
    assert subjects("nightly") == [
        f"[jobs] nightly is failing: Last run #{run.pk} failed: OperationalError: lock timeout"
    ]
    sent = next(m for m in mail.outbox if m.subject.startswith("[jobs] nightly"))
    assert f"https://jobs.example.com/admin/jobs/jobrun/{run.pk}/change/" in sent.body
    assert sent.to == ["ops@example.com"]


def test_a_run_that_fails_alerts_at_its_end_without_anything_else_checking():
    run_job("crashing", trigger=Trigger.CLI)
    assert len(mail.outbox) == 1 and "crashing is failing" in mail.outbox[0].subject
    assert "RuntimeError: the job itself broke" in mail.outbox[0].subject
    run_job("crashing", trigger=Trigger.CLI)
    assert len(mail.outbox) == 1  # the same incident


def test_the_threshold_of_failures_in_a_row_opens_the_incident(settings):
    settings.JOBS_ALERT_AFTER_FAILURES = 2
    ran("on-demand", Status.FAILED, hours_ago=2)
    alerts.check(timezone.now())
    assert subjects("on-demand") == []
    ran("on-demand", Status.FAILED, hours_ago=1)
    alerts.check(timezone.now())
    assert len(subjects("on-demand")) == 1


def test_a_recovery_says_how_long_it_lasted_and_how_many_runs_failed_or_were_missed():
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for hours_ago in (3, 2, 1):
            ran("crashing", Status.FAILED, hours_ago=hours_ago)
        alerts.check(timezone.now())
        clock.shift(timedelta(hours=5))
        run_job("failing-item", trigger=Trigger.CLI)  # another job: no recovery for this one
        JobRun.objects.create(job="crashing", trigger=Trigger.CLI, status=Status.SUCCEEDED, lock_id=1,
                              started_at=timezone.now())  # fmt: skip
        alerts.check(timezone.now())
    assert [subject.split(":")[0] for subject in subjects("crashing", "failing-item")] == [
        "[jobs] crashing is failing", "[jobs] failing-item is failing", "[jobs] crashing recovered after 8 h"
    ]  # fmt: skip
    assert "3 runs failed, 0 missed" in subjects("crashing")[-1]  # the incident began with the first failure


def test_a_late_job_counts_the_runs_it_missed_when_it_recovers(settings):
    with time_machine.travel(timezone.now().replace(hour=10, minute=2, second=0), tick=False) as clock:
        ran("frequent", Status.SUCCEEDED, hours_ago=0.05)  # at 09:59
        clock.shift(timedelta(hours=2))  # */5 with a 1 h grace: late, and 12 runs missed by the time it recovers
        alerts.check(timezone.now())
        assert subjects("frequent")[0].startswith("[jobs] frequent is late: No run since ")
        ran("frequent", Status.FAILED, hours_ago=0)
        clock.shift(timedelta(minutes=5))
        ran("frequent", Status.SUCCEEDED, hours_ago=0)
        alerts.check(timezone.now())
    # 26 scheduled times from 10:00 to 12:05; the failed run (12:02) answered the 12:00 one, and the recovering
    # run itself, 2 minutes after its time, the 12:05 one
    assert subjects("frequent")[-1].startswith("[jobs] frequent recovered after 2 h: 1 run failed, 24 missed."), (
        subjects()
    )


def test_while_an_incident_stays_open_a_reminder_goes_every_repeat_period(settings):
    settings.JOBS_ALERT_REPEAT_HOURS = 24
    with time_machine.travel(timezone.now(), tick=False) as clock:
        ran("on-demand", Status.FAILED, hours_ago=1)
        alerts.check(timezone.now())
        clock.shift(timedelta(hours=23))
        alerts.check(timezone.now())
        clock.shift(timedelta(hours=2))
        alerts.check(timezone.now())
        alerts.check(timezone.now())
    sent = subjects("on-demand")
    assert len(sent) == 2 and sent[0].startswith("[jobs] on-demand is failing: ")
    assert (
        sent[1].startswith("[jobs] on-demand is still failing (since ") and ", 26 h ago): " in sent[1]
    )  # since the failed run


def test_a_webhook_that_is_down_fails_no_job_and_the_alert_is_sent_at_the_first_check_after_its_retry_time(settings):
    port = free_port()
    settings.JOBS_ALERT_EMAILS = []
    settings.JOBS_ALERT_WEBHOOK_URL = f"http://127.0.0.1:{port}/hook"
    run = run_job("crashing", trigger=Trigger.CLI)
    assert run.status == Status.FAILED  # as it would be without alerts
    waiting = OutboxMessage.objects.get(job="crashing")
    assert (waiting.channel, waiting.attempts, waiting.delivered_at) == ("webhook", 1, None)
    assert waiting.last_error.startswith("ConnectionRefusedError: ")
    assert timedelta(seconds=59) < waiting.next_attempt_at - waiting.created_at < timedelta(seconds=61)
    with webhook_receiver(port) as (_, received):
        alerts.check(timezone.now())
        assert received == []  # not before its retry time
        later = timezone.now() + timedelta(minutes=1, seconds=1)
        alerts.check(later)
        alerts.check(later)
    assert len(received) == 1
    body = received[0]
    assert {key: body[key] for key in ("id", "kind", "job", "verdict", "previous", "runId")} == {
        "id": str(waiting.pk), "kind": "opened", "job": "crashing", "verdict": "failing", "previous": "ok",
        "runId": run.pk,
    }  # fmt: skip
    assert body["reason"] == "RuntimeError: the job itself broke"
    assert body["text"].startswith("crashing is failing: ") and body["adminUrl"].endswith(f"/jobrun/{run.pk}/change/")
    sent = OutboxMessage.objects.get(job="crashing")
    assert sent.attempts == 2 and later <= sent.delivered_at < later + timedelta(seconds=2)


def test_a_webhook_url_with_credentials_is_sent_with_basic_auth_and_no_log_line_shows_them(settings, caplog):
    caplog.set_level(logging.DEBUG)
    port = free_port()
    settings.JOBS_ALERT_EMAILS = []
    # Percent-encoded, as a URL's userinfo must be: the user is "hook@ops", the password "pa:ss/w0rd".
    settings.JOBS_ALERT_WEBHOOK_URL = f"http://hook%40ops:pa%3Ass%2Fw0rd@127.0.0.1:{port}/hook/path-secret-token"
    run_job("crashing", trigger=Trigger.CLI)  # nothing listens yet: not delivered, logged
    with webhook_receiver(port) as (_, received):
        alerts.check(timezone.now() + timedelta(minutes=1))  # the first retry
    assert received.paths == ["/hook/path-secret-token"] and received[0]["job"] == "crashing"
    assert received.headers[0]["Authorization"] == "Basic " + b64encode(b"hook@ops:pa:ss/w0rd").decode()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "not delivered by webhook to 127.0.0.1: ConnectionRefusedError: " in logged
    assert "alert for job crashing sent (webhook)" in logged
    for secret in ("pa%3Ass%2Fw0rd", "pa:ss/w0rd", "w0rd", "hook%40ops", "hook@ops", "path-secret-token"):
        assert secret not in logged


def test_an_undelivered_webhook_is_logged_by_its_host_and_error_never_its_path(settings, caplog):
    settings.JOBS_ALERT_EMAILS = []
    # A control character in the path: http.client refuses the URL, quoting all of it in its message.
    settings.JOBS_ALERT_WEBHOOK_URL = f"http://ops:pw-secret-42@127.0.0.1:{free_port()}/hook/path-secret-token\x01"
    with caplog.at_level(logging.DEBUG):
        run_job("crashing", trigger=Trigger.CLI)
    warnings = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert warnings == [
        "alert for job crashing not delivered by webhook to 127.0.0.1: InvalidURL; attempt 1, the next in 1 min"
    ]
    assert not any("path-secret-token" in r.getMessage() or "pw-secret-42" in r.getMessage() for r in caplog.records)


# The health endpoint -------------------------------------------------------------------------------------


def get_health(path: str = "/api/jobs/health", **headers: str) -> tuple[int, dict]:
    response = Client().get(path, headers=headers or BEARER)
    assert response["Content-Type"] == "application/json" and response["Cache-Control"] == "no-store"
    return response.status_code, json.loads(response.content)


def test_health_lists_every_job_and_is_200_when_none_is_failing_or_late():
    status, body = get_health()
    assert status == 200 and body["status"] == "ok" and body["checkedAt"].endswith("Z")
    assert set(body["jobs"]) == {"nightly", "frequent", "on-demand", "batches", "blocking", "failing-item", "sharing",
                                 "crashing", "prune-job-runs"}  # fmt: skip
    assert body["jobs"]["nightly"] == {
        "verdict": "never run", "late": False, "note": "No run recorded yet.", "lastRunId": None,
        "lastRunStatus": None, "lastSuccessAt": None, "nextRunAt": body["jobs"]["nightly"]["nextRunAt"],
    }  # fmt: skip
    assert body["jobs"]["on-demand"]["nextRunAt"] is None


@pytest.mark.parametrize(
    ("status", "hours_ago", "fields", "verdict", "code"),
    [
        (Status.SUCCEEDED, 0.01, {}, "ok", 200),
        (Status.FAILED, 0.01, {"errors": ["RuntimeError: x"], "error_count": 1}, "failing", 503),
        (Status.RUNNING, 0.01, {}, "running", 200),
        (Status.PARTIAL, 0.01, {"counters": {"remaining": 3, "resume_after": "7"}}, "resuming", 200),
        (Status.SUCCEEDED, 0.01, {"params": {"dry_run": True}}, "never run", 200),
    ],
)
def test_health_answers_each_verdict(status, hours_ago, fields, verdict, code):
    run = ran("on-demand", status, hours_ago, **fields)
    got, body = get_health()
    entry = body["jobs"]["on-demand"]
    assert (got, entry["verdict"]) == (code, verdict)
    assert body["status"] == ("failing" if code == 503 else "ok")
    if verdict != "never run":
        assert (entry["lastRunId"], entry["lastRunStatus"]) == (run.pk, status)


def test_a_health_request_alone_finds_a_job_that_stopped_arriving_and_alerts_once():
    ran("nightly", Status.SUCCEEDED, hours_ago=50)  # the ledger began 50 h ago; nothing has run since
    status, body = get_health("/api/jobs/health/")
    assert status == 503 and body["status"] == "late"  # the worst verdict: late, not failing
    assert body["jobs"]["nightly"]["verdict"] == "late" and body["jobs"]["nightly"]["late"] is True
    assert body["jobs"]["frequent"]["late"] is True  # never ran, though the ledger began long enough ago
    get_health()
    assert sorted(subject.split(":")[0] for subject in subjects("frequent", "nightly")) == [
        "[jobs] frequent is late", "[jobs] nightly is late"
    ]  # fmt: skip


def test_health_takes_the_cron_secret_only():
    assert Client().get("/api/jobs/health").status_code == 401
    assert Client().get("/api/jobs/health", headers={"X-Cron-Secret": SECRET}).status_code == 200
    assert Client().post("/api/jobs/health", headers=BEARER).status_code == 405


def test_a_backlog_that_grows_over_runs_is_behind_alerts_once_and_recovers_when_it_drains():
    with time_machine.travel(timezone.now().replace(hour=12, minute=0), tick=False) as clock:
        for hours_ago, left in ((2, 421), (1, 730), (0.5, 1039)):  # each run leaves more than the one before
            ran("on-demand", Status.SUCCEEDED, hours_ago=hours_ago, counters={"total": 200, "remaining": left})
        status, body = get_health()
        entry = body["jobs"]["on-demand"]
        assert (status, body["status"], entry["verdict"]) == (503, "behind", "behind")
        assert "the last 3 runs left 421 -> 730 -> 1,039" in entry["note"]
        get_health()
        assert [s.split(":")[0] for s in subjects("on-demand")] == ["[jobs] on-demand is behind"]  # once
        clock.shift(timedelta(minutes=10))
        ran("on-demand", Status.SUCCEEDED, hours_ago=0, counters={"total": 1039, "remaining": 0})
        status, body = get_health()
        assert body["jobs"]["on-demand"]["verdict"] == "ok"
    assert subjects("on-demand")[-1].startswith("[jobs] on-demand recovered after 40 min: 0 runs failed, 0 missed.")


def test_runs_skipped_on_a_held_lock_make_the_job_blocked_naming_the_holder_and_the_recovery_counts_them():
    with time_machine.travel(timezone.now().replace(hour=12, minute=2, second=0), tick=False) as clock:
        ran("frequent", Status.SUCCEEDED, hours_ago=1.05)  # 10:59: the 11:00 run never ran
        for minutes in range(60, 0, -5):  # 12 calls came, 11:02 to 11:57, and each found the lock held
            ran("frequent", Status.SKIPPED, hours_ago=minutes / 60, held_by="another database session")
        status, body = get_health()
        entry = body["jobs"]["frequent"]
        assert (status, body["status"], entry["verdict"], entry["late"]) == (503, "blocked", "blocked", False)
        assert entry["note"].startswith("No run since ") and (
            ": 12 calls since 2026" in entry["note"]
            and "found lock 1 is held by another database session" in entry["note"]
        ), entry["note"]
        assert subjects("frequent")[0].startswith("[jobs] frequent is blocked: ")
        clock.shift(timedelta(seconds=20))  # the lock is free again: the 12:00 run comes, 2 min 20 s after its time
        ran("frequent", Status.SUCCEEDED, hours_ago=0)
        get_health()
    assert subjects("frequent")[-1].startswith(
        "[jobs] frequent recovered after 62 min: 0 runs failed, 12 skipped on a held lock, 0 missed."
    ), subjects("frequent")


def test_a_recovery_on_time_counts_nothing_missed_and_resuming_runs_are_not_failures():
    with time_machine.travel(timezone.now().replace(hour=2, minute=0, second=20), tick=False) as clock:
        ran("nightly", Status.SUCCEEDED, hours_ago=48)  # 2 days ago, 02:00:20
        ran("nightly", Status.FAILED, hours_ago=24, errors=["RuntimeError: x"], error_count=1)  # yesterday
        alerts.check(timezone.now())
        for seconds in (0, 5):  # today's run, 20 s after its time, ran out of time once, then finished
            clock.shift(timedelta(seconds=seconds))
            ran("nightly", Status.PARTIAL, hours_ago=0, counters={"remaining": 5, "resume_after": "5"})
        clock.shift(timedelta(seconds=5))
        ran("nightly", Status.SUCCEEDED, hours_ago=0)
        alerts.check(timezone.now())
    assert subjects("nightly")[-1].startswith("[jobs] nightly recovered after 24 h: 1 run failed, 0 missed."), subjects(
        "nightly"
    )


def test_a_run_reads_its_own_jobs_backlog_and_leaves_another_s_incident_to_it_while_health_reads_them_all(
    monkeypatch,
):
    """The domain's backlog queries are the costly part of a check: a run's end reads its own job's only, and leaves
    another job's open incident as it is (without its backlog, a job behind would seem recovered) to that job's own
    runs and to health requests, which read every job's."""
    read: list[str] = []

    def declare(name: str, lock_id: int) -> Job:
        def backlog(now: datetime) -> Backlog:
            read.append(name)
            return Backlog(due=0)

        job = Job(name, lock_id, lambda ctx: Result({}), "Has a backlog.", backlog=backlog)
        monkeypatch.setitem(JOBS, name, job)
        return job

    mine, other = declare("mine", 990101), declare("other", 990102)
    run_job(other, trigger=Trigger.CLI)
    read.clear()
    run_job(mine, trigger=Trigger.CLI)
    assert read == ["mine"]
    JobAlert.objects.filter(job="other").update(verdict="behind", opened_at=timezone.now())
    read.clear()
    run_job(mine, trigger=Trigger.CLI)
    assert read == ["mine"]
    assert JobAlert.objects.get(job="other").verdict == "behind"  # not decided without its backlog
    run_job(other, trigger=Trigger.CLI)
    assert JobAlert.objects.get(job="other").verdict == "ok"  # its own run read it: recovered
    JobAlert.objects.filter(job="other").update(verdict="ok")
    read.clear()
    run_job(other, trigger=Trigger.CLI)
    assert read == ["other"]
    read.clear()
    get_health()
    assert sorted(read) == ["mine", "other"]
