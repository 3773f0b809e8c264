"""Alerts through the outbox when the receiver misbehaves: real servers on loopback, real processes, real kills.

Figures from the last run are in docs/reliability.md.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.utils import timezone

from jobs import alerts, outbox
from jobs.models import JobRun, OutboxMessage, Status, Trigger
from jobs.registry import JOBS
from tests.framework.testjobs import JOBS_FOR_TESTS
from tests.helpers import CRON_SECRET, ROOT, connect_elsewhere, database_url, serve, webhook_receiver
from tests.receivers import dripping, never_answering, receiver

real_db = pytest.mark.django_db(transaction=True)
BEARER = {"Authorization": f"Bearer {CRON_SECRET}"}


@pytest.fixture(autouse=True)
def alerting(settings, monkeypatch) -> Iterator[None]:
    settings.CRON_SECRET = CRON_SECRET
    settings.JOBS_ALERT_EMAILS = []
    settings.SITE_URL = "https://jobs.example.com"
    for job in JOBS_FOR_TESTS:  # `crashing` and the like, beside the real jobs
        monkeypatch.setitem(JOBS, job.name, job)
    yield
    for thread in threading.enumerate():  # attempts still under way record their outcome before the tables go
        if thread.name.startswith("outbox "):
            thread.join(30)


def failed_run(job: str = "recompute-scores", reason: str = "OperationalError: lock timeout") -> JobRun:
    return JobRun.objects.create(job=job, trigger=Trigger.CRON, status=Status.FAILED, lock_id=482175,
                                 started_at=timezone.now(), errors=[reason], error_count=1)  # fmt: skip


def timed(request: str, path: str) -> tuple[float, int]:
    started = time.monotonic()
    response = getattr(Client(), request)(path, headers=BEARER)
    return time.monotonic() - started, response.status_code


def attempts_ended(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while OutboxMessage.objects.filter(lease_until__isnull=False, delivered_at__isnull=True).exists():
        assert time.monotonic() < deadline, "an attempt outlived its deadline"
        time.sleep(0.05)


@real_db
def test_with_a_webhook_that_never_answers_a_failing_cron_call_and_a_health_request_answer_within_3_s(settings):
    settings.JOBS_ALERT_SEND_SECONDS = 4  # longer than a request may wait: the attempt ends in its thread
    with never_answering() as (url, came):
        settings.JOBS_ALERT_WEBHOOK_URL = url
        took_run, status = timed("post", "/api/jobs/crashing")
        assert status == 500  # the run failed, and its alert could not go: the run's answer is unchanged
        attempts_ended(10)
        failed_run("failing-item")  # a second incident, for the health request to try to send
        took_health, health = timed("get", "/api/jobs/health")
        assert health == 503
        attempts_ended(10)
    print(f"cron call {took_run:.2f} s, health request {took_health:.2f} s, webhook connections {len(came)}")
    assert took_run < 3 and took_health < 3
    waiting = {row.job: row for row in OutboxMessage.objects.all()}
    assert set(waiting) == {"crashing", "failing-item"}
    for row in waiting.values():
        assert (row.attempts, row.delivered_at, row.last_error) == (1, None, "TimeoutError: no answer within 4 s")

    port = int(url.split(":")[2].split("/")[0])
    with webhook_receiver(port) as (_, received):  # the webhook answers again, on the same port
        assert timed("get", "/api/jobs/health")[0] < 1  # before the retry time: nothing is tried
        assert received == []
        with time_machine.travel(timezone.now() + timedelta(minutes=1, seconds=1)):
            timed("get", "/api/jobs/health")  # the next check after it delivers both
            timed("get", "/api/jobs/health")
    assert sorted((body["job"], body["id"]) for body in received) == sorted(
        (row.job, str(row.pk)) for row in waiting.values()
    )
    assert OutboxMessage.objects.filter(delivered_at__isnull=True).count() == 0


@real_db
def test_a_receiver_that_answers_after_6_s_gets_each_message_at_most_twice_from_50_health_requests_in_20_s():
    with receiver(answer_after=6) as (url, posts), serve({"JOBS_ALERT_WEBHOOK_URL": url}, workers=4) as base:
        warm_up(f"{base}/api/jobs/health")
        failed_run()
        answers: list[tuple[float, int]] = []

        def ask() -> None:
            request = urllib.request.Request(f"{base}/api/jobs/health", headers=BEARER)
            started = time.monotonic()
            try:
                urllib.request.urlopen(request, timeout=30)
                code = 200
            except urllib.error.HTTPError as error:
                code = error.code
            answers.append((time.monotonic() - started, code))

        threads = []
        for _ in range(50):  # one every 0.4 s, each in its own thread: a slow answer delays none of the others
            threads.append(threading.Thread(target=ask))
            threads[-1].start()
            time.sleep(0.4)
        for thread in threads:
            thread.join(30)
        deadline = time.monotonic() + 15
        while OutboxMessage.objects.filter(delivered_at__isnull=True).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    per_message = Counter(posts.ids())
    slowest = max(took for took, _ in answers)
    print(f"50 health requests: slowest {slowest:.2f} s; POSTs per message {dict(per_message)}")
    assert len(answers) == 50 and {code for _, code in answers} == {503}
    assert slowest < 3
    assert per_message and max(per_message.values()) <= 2
    assert OutboxMessage.objects.get(job="recompute-scores").delivered_at is not None  # by the attempt's thread


def warm_up(url: str) -> None:
    """Until every worker has started: gunicorn listens before its workers have imported Django."""

    def ask() -> float:
        started = time.monotonic()
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(urllib.request.Request(url, headers=BEARER), timeout=30)
        return time.monotonic() - started

    while max(concurrent.futures.ThreadPoolExecutor(8).map(lambda _: ask(), range(8))) > 0.5:
        pass


@real_db
def test_a_webhook_that_drips_a_byte_every_4_s_has_its_attempt_ended_by_its_deadline():
    failed_run()
    with dripping(every=4) as (url, _):
        env = {**os.environ, "DATABASE_URL": database_url(), "JOBS_ALERT_WEBHOOK_URL": url,
               "JOBS_ALERT_SEND_SECONDS": "5"}  # fmt: skip
        started = time.monotonic()
        result = subprocess.run([sys.executable, "manage.py", "job_health"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        took = time.monotonic() - started
    line = next(line for line in result.stdout.splitlines() if "recompute-scores opened" in line)
    print(f"job_health took {took:.1f} s (the attempt's deadline 5 s): {line.strip()}")
    assert line.split()[0] == "failed" and "TimeoutError: no answer within 5 s" in line, result.stdout
    assert took < 5 + 4  # the deadline, and the time a process takes to start
    row = OutboxMessage.objects.get()
    assert (row.attempts, row.lease_until, row.last_error) == (1, None, "TimeoutError: no answer within 5 s")


@real_db
def test_a_sender_killed_mid_delivery_leaves_the_message_to_be_sent_again_after_its_lease_with_the_same_id(settings):
    settings.JOBS_ALERT_SEND_SECONDS = 3  # a lease of 9 s
    failed_run()
    with receiver(hold_first=True) as (url, posts):
        settings.JOBS_ALERT_WEBHOOK_URL = url
        env = {**os.environ, "DATABASE_URL": database_url(), "JOBS_ALERT_WEBHOOK_URL": url,
               "JOBS_ALERT_SEND_SECONDS": "3"}  # fmt: skip
        sender = subprocess.Popen([sys.executable, "manage.py", "job_health"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        assert posts.first.wait(60), "the sender never sent"
        sender.send_signal(signal.SIGKILL)  # while the receiver holds its request
        sender.wait(10)
        posts.release.set()
        claimed = OutboxMessage.objects.get()
        assert (claimed.attempts, claimed.delivered_at) == (1, None) and claimed.lease_until is not None
        deadline = time.monotonic() + 30
        while len(posts.bodies) < 2 and time.monotonic() < deadline:
            alerts.check(timezone.now())  # whoever checks next: the end of a run, a health request
            time.sleep(0.2)
    again = posts.times[1] - posts.times[0]
    print(f"sent again {again:.1f} s after the killed attempt (lease 9 s), ids {posts.ids()}")
    assert len(posts.bodies) == 2 and posts.ids()[0] == posts.ids()[1] == str(claimed.pk)
    assert posts.bodies[0] == posts.bodies[1]
    assert 9 - 1 < again < 9 + 3
    row = OutboxMessage.objects.get()
    assert row.attempts == 2 and row.delivered_at is not None


def committed(message_id: str) -> tuple[bool, int]:
    """From a connection of its own: whether the message's row is committed, and the job's alert version."""
    if connection.vendor == "postgresql":
        with connect_elsewhere() as other:
            found = other.execute("SELECT count(*) FROM jobs_outboxmessage WHERE id = %s", [message_id]).fetchone()[0]
            version = other.execute("SELECT version FROM jobs_jobalert WHERE job = 'recompute-scores'").fetchone()
    else:
        with sqlite3.connect(connection.settings_dict["NAME"]) as other:
            found = other.execute("SELECT count(*) FROM jobs_outboxmessage WHERE id = ?", [message_id.replace("-", "")])
            found = found.fetchone()[0]
            version = other.execute("SELECT version FROM jobs_jobalert WHERE job = 'recompute-scores'").fetchone()
        other.close()
    return bool(found), version[0] if version else 0


@real_db
def test_a_message_leaves_only_once_it_and_its_incident_are_committed(settings):
    failed_run()
    seen: list[tuple[bool, int]] = []  # asked by the receiver, before it answers, from a connection of its own
    with receiver(on_post=lambda body: seen.append(committed(body["id"]))) as (url, posts):
        settings.JOBS_ALERT_WEBHOOK_URL = url
        alerts.check(timezone.now())
    assert len(posts.bodies) == 1
    assert seen == [(True, 1)], "the message left before its transaction committed"


def test_the_lease_is_longer_than_an_attempt(settings):
    for seconds in (1, 10, 60):
        settings.JOBS_ALERT_SEND_SECONDS = seconds
        assert outbox.lease() >= timedelta(seconds=2 * seconds)


@real_db
def test_an_smtp_server_that_never_answers_costs_one_attempt_its_deadline_and_the_webhook_still_goes(settings):
    settings.JOBS_ALERT_SEND_SECONDS = 1
    settings.JOBS_ALERT_EMAILS = ["ops@example.com"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    failed_run()
    with never_answering() as (smtp, _), receiver() as (url, posts):
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", int(smtp.split(":")[2].split("/")[0])
        settings.JOBS_ALERT_WEBHOOK_URL = url
        alerts.check(timezone.now(), send_for=0)  # decided, not sent: as job_health does
        started = time.monotonic()
        reports = {report.row.channel: report for report in outbox.send_due(timezone.now(), 30)}
        took = time.monotonic() - started
    print(f"one pass {took:.2f} s: {[report.line() for report in reports.values()]}")
    assert reports["email"].outcome == "failed" and "TimeoutError: no answer within 1 s" in reports["email"].detail
    assert reports["webhook"].outcome == "sent" and len(posts.bodies) == 1
    assert took < 1 + 1
