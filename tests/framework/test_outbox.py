"""The outbox: a message per channel, its stable id, its lease, its retries, what job_health and the admin say."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from jobs import alerts, outbox
from jobs.models import JobRun, OutboxMessage, Status, Trigger
from jobs.runner import run_job
from tests.helpers import free_port, webhook_receiver

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def configured(settings):
    settings.JOBS_ALERT_EMAILS = ["ops@example.com"]
    settings.JOBS_ALERT_WEBHOOK_URL = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    settings.DEFAULT_FROM_EMAIL = "jobs@jobs.example.com"
    settings.SITE_URL = "https://jobs.example.com"


def failed(job: str = "on-demand") -> JobRun:
    return JobRun.objects.create(job=job, trigger=Trigger.CRON, status=Status.FAILED, started_at=timezone.now(),
                                 lock_id=1, errors=["RuntimeError: x"], error_count=1)  # fmt: skip


def test_each_channel_is_a_message_of_its_own_and_a_failing_webhook_never_sends_the_email_twice(settings):
    run_job("crashing", trigger=Trigger.CLI)
    rows = {row.channel: row for row in OutboxMessage.objects.filter(job="crashing")}
    assert rows["email"].delivered_at is not None and rows["webhook"].delivered_at is None
    port = int(settings.JOBS_ALERT_WEBHOOK_URL.split(":")[2].split("/")[0])
    with webhook_receiver(port) as (_, received):
        for minutes in (1, 3, 10):
            alerts.check(timezone.now() + timedelta(minutes=minutes))
    assert [body["id"] for body in received] == [str(rows["webhook"].pk)]
    assert [m.subject.split(":")[0] for m in mail.outbox] == ["[jobs] crashing is failing"]


def test_an_email_carries_its_messages_id_as_its_message_id():
    run_job("crashing", trigger=Trigger.CLI)
    row = OutboxMessage.objects.get(job="crashing", channel="email")
    sent = mail.outbox[0].message()
    assert sent["Message-ID"] == f"<alert.{row.pk}@jobs.example.com>"
    assert (sent["To"], sent["From"]) == ("ops@example.com", "jobs@jobs.example.com")


def test_a_message_that_keeps_failing_is_tried_again_after_1_2_4_minutes_and_so_on_up_to_an_hour(settings):
    settings.JOBS_ALERT_EMAILS = []
    failed()
    now = timezone.now()
    alerts.check(now)
    gaps = []
    mine = OutboxMessage.objects.filter(job="on-demand")  # other test jobs turn late as the hours go by
    for _ in range(8):
        row = mine.get()
        gaps.append(round((row.next_attempt_at - now).total_seconds() / 60))
        alerts.check(now + timedelta(seconds=1))  # not yet: still waiting
        assert mine.get().attempts == row.attempts
        now = row.next_attempt_at
        alerts.check(now)
    assert gaps == [1, 2, 4, 8, 16, 32, 60, 60]
    assert mine.get().attempts == 9


def test_a_claimed_message_is_left_to_its_sender_until_its_lease_runs_out(settings):
    settings.JOBS_ALERT_SEND_SECONDS = 10
    now = timezone.now()
    row = OutboxMessage.objects.create(job="on-demand", kind="opened", channel="webhook", content={}, created_at=now,
                                       next_attempt_at=now)  # fmt: skip
    assert outbox.claim(OutboxMessage.objects.get(), now)
    for later in (now, now + timedelta(seconds=29)):
        assert not outbox.claim(OutboxMessage.objects.get(), later)  # its sender may still be at it
    assert outbox.claim(OutboxMessage.objects.get(), now + timedelta(seconds=30))  # it died: another takes over
    stale = OutboxMessage(pk=row.pk, attempts=1, lease_until=None)  # what a process read before the first claim
    assert not outbox.claim(stale, now + timedelta(hours=1))
    assert OutboxMessage.objects.get().attempts == 2


def test_job_health_says_what_it_delivered_and_why_not_one_line_per_message_and_channel(capsys):
    failed()
    with pytest.raises(SystemExit):
        call_command("job_health")
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines() if " on-demand opened (failing) by " in line]
    assert sorted((line[0], line[5].rstrip(",")) for line in lines) == [("failed", "webhook"), ("sent", "email")], out
    assert "ConnectionRefusedError" in out and "(attempt 1, after " in out and "next at " in out
    with pytest.raises(SystemExit):
        call_command("job_health")
    out = capsys.readouterr().out
    assert "waiting  on-demand opened (failing) by webhook, message " in out and ": next attempt at " in out


def test_the_outbox_admin_lists_each_message_with_its_status_and_is_read_only(settings):
    failed()
    alerts.check(timezone.now())
    client = Client()
    client.force_login(User.objects.create_superuser("ops", password="pw-123-long"))
    page = client.get("/admin/jobs/outboxmessage/").content.decode()
    assert "delivered 20" in page and "(1 attempt)" in page
    assert "retrying: 1 attempt, last: ConnectionRefusedError: " in page
    retrying = client.get("/admin/jobs/outboxmessage/?status=retrying").content.decode()
    assert "retrying: 1 attempt" in retrying and "delivered 20" not in retrying
    row = OutboxMessage.objects.get(channel="webhook")
    assert client.get(f"/admin/jobs/outboxmessage/{row.pk}/change/").status_code == 200
    assert client.post(f"/admin/jobs/outboxmessage/{row.pk}/delete/").status_code == 403
    assert client.get("/admin/jobs/outboxmessage/add/").status_code == 403


def test_a_redirect_is_not_followed_its_status_is_the_error(settings):
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(301)
            self.send_header("Location", "http://elsewhere.example.com/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Redirect)
    Thread(target=server.handle_request, daemon=True).start()
    settings.JOBS_ALERT_EMAILS = []
    settings.JOBS_ALERT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_address[1]}/hook"
    failed()
    alerts.check(timezone.now())
    server.server_close()
    assert OutboxMessage.objects.get().last_error == "HTTP 301"


def test_a_channel_that_works_again_also_sends_what_waited_out_its_backoff_on_it_in_the_same_check(settings):
    settings.JOBS_ALERT_EMAILS = []
    now = timezone.now()
    failed("on-demand")
    alerts.check(now)  # refused: its next attempt in 1 min
    failed("crashing")
    port = int(settings.JOBS_ALERT_WEBHOOK_URL.split(":")[2].split("/")[0])
    with webhook_receiver(port) as (_, received):
        alerts.check(now + timedelta(seconds=5))  # the new message goes, and the channel works: the older one too
    assert [body["job"] for body in received] == ["crashing", "on-demand"]  # each with its createdAt
    assert OutboxMessage.objects.filter(delivered_at__isnull=True).count() == 0
