"""What leaves the system goes through an outbox: an alert is a row first, and is delivered afterwards.

A message is written, one row per channel, in the transaction that decided it (jobs/alerts.py), and is
delivered by whichever process checks next: the end of a run, a health request, `manage.py job_health`.

1. Claim: a conditional UPDATE of the row on its attempt count, only while no lease runs
   (`lease_until` empty or past); rowcount 1 means the attempt is ours. Two processes never send one
   message at once; a message whose sender died mid-send is taken again once its lease has run out, so
   it is delivered at least once and never lost. The lease is 3 x JOBS_ALERT_SEND_SECONDS: longer than
   an attempt can last, with room to record its outcome.
2. Attempt: one deadline, JOBS_ALERT_SEND_SECONDS, for connecting, sending and reading together. A socket
   timeout counts per operation (a receiver that drips a byte every 4 s never trips a 5 s timeout), so a
   timer shuts the attempt's socket at the deadline, which ends any read or write waiting on it. The
   attempt runs in a thread of its own: its caller waits for it only as long as its budget allows (2 s in
   all for a request), and an attempt still going then finishes in its thread, which records the outcome.
   The thread is not a daemon: a process that exits normally (a command) finishes its attempts first.
3. Outcome: delivered, or tried again after 1 min, 2, 4, ... at most an hour. A channel that failed is
   left alone for the rest of the pass (one hung receiver costs one wait, not one per message); a channel
   that works again also sends, in the same pass, the messages that were waiting out their backoff on it.

Each channel is a row of its own, so a failing webhook never makes the e-mail go twice. Check-ins (jobs/checkins.py)
go the same way, in a lane per job: a monitor that hangs holds back that job's signals only, and a signal waiting
out its backoff holds back the ones after it, so that a run's end never reaches a monitor before its start. Each message
carries its row's id, the same on every attempt (`id` in the webhook's JSON, the e-mail's Message-ID),
so that a receiver can drop a repeat.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse
from base64 import b64encode
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import connections
from django.db.models import F, Q

from jobs import monitors
from jobs.models import Channel, OutboxMessage
from jobs.timefmt import utc

logger = logging.getLogger("jobs")

REQUEST_SECONDS = 2.0  # the most a request (a run over HTTP, a health request) waits for deliveries, in all
COMMAND_SECONDS = 30.0  # the most `manage.py job_health` waits (at least one whole attempt)
FIRST_RETRY = timedelta(minutes=1)  # after a failed attempt; doubled after each further one ...
LAST_RETRY = timedelta(hours=1)  # ... up to this
PASS_SIZE = 100  # messages looked at per pass, oldest first


@dataclass(frozen=True)
class Message:
    """An alert, as decided (jobs/alerts.py); stored in its rows' `content`."""

    kind: str  # opened | reminder | recovered
    job: str
    verdict: str  # failing | late | ok
    previous: str
    run_id: int | None
    reason: str
    text: str
    admin_url: str


def queue(message: Message, channels: list[str], now: datetime) -> list[OutboxMessage]:
    """Write the message, one row per channel. Call it in the transaction that decided the message."""
    rows = [
        OutboxMessage(job=message.job, kind=message.kind, channel=channel, content=asdict(message), created_at=now,
                      next_attempt_at=now)
        for channel in channels
    ]  # fmt: skip
    return OutboxMessage.objects.bulk_create(rows)


def send_seconds() -> float:
    """One attempt's deadline, for everything it does."""
    return float(settings.JOBS_ALERT_SEND_SECONDS)


def lease() -> timedelta:
    """How long a claimed message is left to its sender: longer than an attempt, with room to record it."""
    return timedelta(seconds=3 * send_seconds())


@dataclass(frozen=True)
class Report:
    """What one pass did with one message on one channel (manage.py job_health prints one line for each)."""

    row: OutboxMessage
    outcome: str  # sent | failed | sending | waiting
    detail: str

    def line(self) -> str:
        row = self.row
        verdict = row.content.get("verdict", "?")
        return f"{self.outcome:<7}  {row.job} {row.kind} ({verdict}) by {row.channel}, message {row.pk}: {self.detail}"


def send_due(now: datetime, seconds: float) -> list[Report]:
    """Deliver the messages that are due, oldest first, waiting at most `seconds` in all; say what became of each."""
    started = time.monotonic()

    def clock() -> datetime:
        return now + timedelta(seconds=time.monotonic() - started)

    waiting = list(OutboxMessage.objects.filter(delivered_at__isnull=True).order_by("created_at", "id")[:PASS_SIZE])
    # A channel with an attempt under way, here or elsewhere, is left to it: messages go out in order, and a
    # receiver that hangs costs one attempt at a time.
    held = {lane(row): f"message {row.pk} is being sent" for row in waiting if _leased(row, now)}
    backing_off: dict[str, list[OutboxMessage]] = {}
    reports: dict[Any, Report] = {}  # the last word on each message
    todo = deque(waiting)
    while todo:
        row = todo.popleft()
        at, left = clock(), seconds - (time.monotonic() - started)
        if not configured(row):
            reports[row.pk] = Report(row, "waiting", f"no {row.channel} destination is configured any more")
        elif lane(row) in held:
            reports[row.pk] = Report(row, "waiting", _held(row, held[lane(row)]))
        elif row.next_attempt_at > at:
            backing_off.setdefault(lane(row), []).append(row)
            if row.channel == Channel.CHECKIN:  # in order: what comes after it waits for it
                held[lane(row)] = f"message {row.pk} waits to be sent again first"
            reports[row.pk] = Report(row, "waiting", f"next attempt at {utc(row.next_attempt_at)}{_after(row)}")
        elif left <= 0:
            reports[row.pk] = Report(row, "waiting", "due; no time left in this check")
        elif not claim(row, at):
            held[lane(row)] = f"message {row.pk} is being sent"
            reports[row.pk] = Report(row, "waiting", "another process took it just now")
        else:
            attempt = Attempt(row, at)
            attempt.start()
            report = attempt.wait(left)
            if report is None:  # still going: it finishes, and records its outcome, in its thread
                held[lane(row)] = f"message {row.pk} is still being sent"
                report = Report(row, "sending", f"no answer yet after {left:.1f} s; finishing in the background")
            elif report.outcome == "failed":
                held[lane(row)] = f"{row.channel} failed just now"
            else:  # the channel works: what waited out its backoff on it goes now, in order (record() said so too)
                earlier = backing_off.pop(lane(row), [])
                for waited in earlier:
                    waited.next_attempt_at = at
                todo.extendleft(reversed(earlier))
            reports[row.pk] = report
    return list(reports.values())


def _leased(row: OutboxMessage, now: datetime) -> bool:
    return row.lease_until is not None and row.lease_until > now


def _held(row: OutboxMessage, why: str) -> str:
    if row.lease_until is not None and why.startswith(f"message {row.pk} "):
        return f"being sent (attempt {row.attempts}); left to its sender until {utc(row.lease_until)}"
    return f"not tried now: {why}"


def _after(row: OutboxMessage) -> str:
    return f", after attempt {row.attempts}: {row.last_error}" if row.attempts and row.last_error else ""


def lane(row: OutboxMessage) -> str:
    """What is delivered in order, one attempt at a time: a channel; for check-ins, one job's monitor."""
    return f"{row.channel} {row.job}" if row.channel == Channel.CHECKIN else row.channel


def configured(row: OutboxMessage) -> bool:
    if row.channel == Channel.CHECKIN:
        return bool(monitors.url_of(row.job))
    return bool(settings.JOBS_ALERT_WEBHOOK_URL if row.channel == Channel.WEBHOOK else settings.JOBS_ALERT_EMAILS)


def claim(row: OutboxMessage, now: datetime) -> bool:
    """Take the message for one attempt unless another process has: rowcount 1 means it is ours.

    The attempt count is the row's version: of several processes that read the same row, one claims it.
    A lease that ran out means its sender died or hung; the message is taken again.
    """
    until = now + lease()
    taken = (
        OutboxMessage.objects.filter(pk=row.pk, attempts=row.attempts, delivered_at__isnull=True)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now))
        .update(attempts=F("attempts") + 1, lease_until=until)
    )
    if not taken:
        return False
    if row.lease_until is not None:
        logger.warning(
            "alert for job %s by %s: attempt %d never finished (its process died or stopped); sending message %s again",
            row.job, row.channel, row.attempts, row.pk,
        )  # fmt: skip
    row.attempts, row.lease_until = row.attempts + 1, until
    return True


class Attempt(threading.Thread):
    """One attempt to deliver one message on its channel, in a thread of its own.

    Whoever is left when it ends records its outcome: the caller if it is still waiting, else the thread,
    on its own database connection. Not a daemon: a process that exits normally lets it finish.
    """

    def __init__(self, row: OutboxMessage, now: datetime) -> None:
        super().__init__(name=f"outbox {row.pk}")
        self.row, self.now = row, now
        # Read here, once: the settings the attempt was started with, whatever happens to them meanwhile.
        self.seconds = send_seconds()
        self.url: str = (
            monitors.ping_url(monitors.url_of(row.job), row.kind, row.content.get("run_id", 0))
            if row.channel == Channel.CHECKIN
            else settings.JOBS_ALERT_WEBHOOK_URL
        )
        self.emails: list[str] = list(settings.JOBS_ALERT_EMAILS)
        self.sender: str = settings.DEFAULT_FROM_EMAIL
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._result: tuple[Exception | None, float] | None = None
        self._abandoned = False

    def run(self) -> None:
        started = time.monotonic()
        error: Exception | None = None
        try:
            deliver(self.row, Deadline(self.seconds), url=self.url, emails=self.emails, sender=self.sender)
        except Exception as failure:
            error = failure
        with self._lock:
            self._result = (error, time.monotonic() - started)
            abandoned = self._abandoned
        self._ended.set()
        if abandoned:  # nobody waits for it any more: it records its outcome itself
            try:
                self._record()
            except Exception:
                logger.exception("alert for job %s: the outcome of message %s was not recorded", self.row.job,
                                 self.row.pk)  # fmt: skip
            finally:
                connections.close_all()  # this thread's own connections

    def wait(self, seconds: float) -> Report | None:
        """The attempt's outcome, recorded, if it ends within `seconds`; else None, and the thread records it."""
        self._ended.wait(max(seconds, 0))
        with self._lock:
            if self._result is None:
                self._abandoned = True
                return None
        return self._record()

    def _record(self) -> Report:
        assert self._result is not None
        error, took = self._result
        return record(self.row, error, self.now + timedelta(seconds=took), took, self.url)


def record(row: OutboxMessage, error: Exception | None, at: datetime, took: float, url: str) -> Report:
    """Write an attempt's outcome on its row, log it, and say it."""
    by = {Channel.WEBHOOK: f"webhook to {webhook_host(url)}", Channel.CHECKIN: f"check-in to {webhook_host(url)}"}.get(
        Channel(row.channel), "email"
    )
    text = row.content.get("text", "")
    what = "check-in" if row.channel == Channel.CHECKIN else "alert"
    if error is None:
        OutboxMessage.objects.filter(pk=row.pk, delivered_at__isnull=True).update(delivered_at=at, lease_until=None)
        # The channel works again: its other waiting messages need not sit out their backoff.
        same = {"job": row.job} if row.channel == Channel.CHECKIN else {}  # a check-in's lane is its job's monitor
        OutboxMessage.objects.filter(
            channel=row.channel, delivered_at__isnull=True, next_attempt_at__gt=at, **same
        ).update(next_attempt_at=at)
        logger.info("%s for job %s sent (%s): %s [message %s, attempt %d]", what, row.job, row.channel, text, row.pk,
                    row.attempts)  # fmt: skip
        return Report(row, "sent", f"in {took:.2f} s (attempt {row.attempts})")
    reason = why(error) if row.channel in (Channel.WEBHOOK, Channel.CHECKIN) else f"{type(error).__name__}: {error}"
    reason = reason[:300]
    retry = min(FIRST_RETRY * 2 ** min(row.attempts - 1, 10), LAST_RETRY)
    # Only while it is still our attempt: a lease that ran out may have passed the message to another sender.
    OutboxMessage.objects.filter(pk=row.pk, attempts=row.attempts, delivered_at__isnull=True).update(
        lease_until=None, next_attempt_at=at + retry, last_error=reason
    )
    wait = f"{retry.seconds // 60} min" if retry < LAST_RETRY else "1 h"
    logger.warning("%s for job %s not delivered by %s: %s; attempt %d, the next in %s", what, row.job, by, reason,
                   row.attempts, wait)  # fmt: skip
    return Report(row, "failed", f"{reason} (attempt {row.attempts}, after {took:.1f} s); next at {utc(at + retry)}")


# Delivery ---------------------------------------------------------------------------------------------------


class Deadline:
    """One deadline for a whole attempt. At the deadline a timer shuts the sockets it watches, which ends whatever
    read or write waits on them; `remaining()` raises TimeoutError once it has passed, and a connect gets what
    remains as its timeout.

    Why a timer rather than socket timeouts shrunk before each read: http.client reads through a buffered file
    and TLS through its own layer, neither of which lets us set a timeout before each read from the socket;
    shutting the socket ends the read wherever it waits, over HTTP, HTTPS or SMTP. (A name lookup comes before
    there is a socket to shut: the resolver's own timeouts bound it, and the lease leaves room for them.)
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._watched: list[Callable[[], socket.socket | None]] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0 or self.expired:
            raise TimeoutError(f"no answer within {self.seconds:g} s")
        return left

    def watch(self, find: Callable[[], socket.socket | None]) -> None:
        """Shut whatever socket `find` returns at the deadline."""
        with self._lock:
            self._watched.append(find)

    def run(self, send: Callable[[], None]) -> None:
        timer = threading.Timer(self.remaining(), self._cut)
        timer.daemon = True
        timer.start()
        try:
            send()
        except Exception as error:
            # A socket's own timeout is what remained of the deadline: whichever fires first, it is the deadline
            # (smtplib words it "Connection unexpectedly closed: timed out": the timeout is in the error's chain).
            if self.expired or _timed_out(error):
                raise TimeoutError(f"no answer within {self.seconds:g} s") from error
            raise
        finally:
            timer.cancel()

    def _cut(self) -> None:
        with self._lock:
            self.expired = True
            for find in self._watched:
                sock = find()
                if sock is not None:
                    # socket.socket's own shutdown: an SSLSocket's would also drop its TLS state under its reader.
                    with contextlib.suppress(OSError):  # not connected yet, or already closed
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _timed_out(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, TimeoutError):
            return True
        error = error.__cause__ or error.__context__
    return False


def deliver(row: OutboxMessage, deadline: Deadline, *, url: str, emails: list[str], sender: str) -> None:
    """Send the message on its row's channel, within the deadline; raise if it was not delivered."""
    if row.channel == Channel.WEBHOOK:
        deadline.run(lambda: post_json(url, webhook_body(row), deadline))
    elif row.channel == Channel.CHECKIN:
        deadline.run(lambda: request("GET", url, None, deadline))
    else:
        deadline.run(lambda: send_email(row, emails, sender, deadline))


def webhook_body(row: OutboxMessage) -> dict[str, Any]:
    """What Slack, Discord and the like show (`text`), and what a program reads (the rest); `id` is the same on
    every attempt, for a receiver to drop a repeat."""
    content = row.content
    return {
        "id": str(row.pk),
        "kind": row.kind,
        "text": f"{content.get('text', '')} {content.get('admin_url', '')}".strip(),
        "job": row.job,
        "verdict": content.get("verdict"),
        "previous": content.get("previous"),
        "runId": content.get("run_id"),
        "reason": content.get("reason"),
        "adminUrl": content.get("admin_url"),
        "createdAt": row.created_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def message_id(row: OutboxMessage, sender: str) -> str:
    """The e-mail's Message-ID: the row's, so that every attempt sends the same one."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    return f"<alert.{row.pk}@{domain}>"


def send_email(row: OutboxMessage, recipients: list[str], sender: str, deadline: Deadline) -> None:
    text, link = row.content.get("text", ""), row.content.get("admin_url", "")
    backend = get_connection(timeout=deadline.remaining())
    deadline.watch(lambda: getattr(getattr(backend, "connection", None), "sock", None))  # SMTP's socket
    EmailMessage(
        subject=f"[jobs] {text}"[:150],
        body=f"{text}\n\n{link}",
        from_email=sender,
        to=recipients,
        headers={"Message-ID": message_id(row, sender)},
        connection=backend,
    ).send()


class WebhookStatus(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def post_json(url: str, body: dict[str, Any], deadline: Deadline) -> None:
    """POST `body` as JSON, connect, send and read within the deadline. Credentials in the URL
    (https://user:password@host/...) go as HTTP Basic auth: never in the request line or an error message.

    A redirect is not followed, its status is the error: a POST redirected elsewhere would lose its body, or take
    it and the credentials to another host.
    """
    request("POST", url, json.dumps(body).encode(), deadline)


def request(method: str, url: str, data: bytes | None, deadline: Deadline) -> None:
    """Send one request (a JSON body, or none) and read the answer within the deadline; any status but 2xx is the
    error, a redirect included."""
    target, auth = without_credentials(url)
    parts = urllib.parse.urlsplit(target)
    kind = {"http": http.client.HTTPConnection, "https": http.client.HTTPSConnection}.get(parts.scheme)
    if kind is None or not parts.hostname:
        raise http.client.InvalidURL("not an http(s) URL")  # its text never holds the URL
    connection = kind(parts.hostname, parts.port, timeout=deadline.remaining())
    deadline.watch(lambda: connection.sock)
    headers = {"Content-Type": "application/json", "Content-Length": str(len(data))} if data is not None else {}
    try:
        # The request line is checked (a control character: InvalidURL) before anything is sent.
        connection.putrequest(method, urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")))
        for name, value in {**headers, **auth}.items():
            connection.putheader(name, value)
        connection.connect()
        deadline.remaining()  # the deadline may have passed while the name was looked up
        connection.endheaders(data)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    if not 200 <= response.status < 300:
        raise WebhookStatus(response.status)


def without_credentials(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its userinfo, and the Authorization header that carries it (percent-decoded)."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, {}
    user, _, password = userinfo.partition(":")
    pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {b64encode(pair).decode()}"}


def why(error: Exception) -> str:
    """Why a webhook POST failed, in words that cannot hold the URL's secrets (its path, its password).

    An HTTP status, or a network error (refused, timed out, name unknown, certificate): those name
    the host at most. Any other error (an InvalidURL quotes the URL) is named by its type alone.
    """
    if isinstance(error, WebhookStatus):
        return str(error)
    return f"{type(error).__name__}: {error}" if isinstance(error, OSError) else type(error).__name__


def webhook_host(url: str | None = None) -> str:
    """All that is ever shown of the webhook's URL: its path and any credentials in it are secrets."""
    return urllib.parse.urlsplit(settings.JOBS_ALERT_WEBHOOK_URL if url is None else url).hostname or "?"
