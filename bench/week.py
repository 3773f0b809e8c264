"""A simulated week of operations: every call vercel.json makes, on time, through the real HTTP path, with the
clock moved by time-machine, incidents caused on purpose, and an uptime monitor asking /api/jobs/health every
15 minutes. Prints each alert as it is sent, and what health said at the end.

    python -m bench.week          (make week)

Runs on a database of its own: a fresh SQLite file (WEEK_DATABASE_URL may name a PostgreSQL database instead,
which is dropped and created). The incidents:

1. Tuesday 03:55: Vercel stops calling expire-offers until 06:00 (late, then recovered with the runs missed).
2. Wednesday 10:00-11:00: another database session holds expire-offers' lock (blocked, naming the holder).
3. Thursday to Saturday: resolve-outcomes is called with `?limit=20`, fewer than end each day (behind).
4. Thursday 16:00-20:00: the alert webhook accepts and never answers (the requests must not wait on it; the
   alert arrives once it answers again). E-mail goes to a locmem outbox, the webhook to a real local server.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)  # a Monday
SECRET = "week-simulation-cron-secret-0123456789"


def main() -> None:
    url = os.environ.get("WEEK_DATABASE_URL") or f"sqlite:///{tempfile.mkdtemp(prefix='week-')}/week.sqlite3"
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    os.environ.update(
        DATABASE_URL=url, CRON_SECRET=SECRET, DEBUG="true", JOBS_ALERT_EMAILS="ops@example.com",
        JOBS_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{hook.server_port}/hook", JOBS_ALERT_SEND_SECONDS="3",
    )  # fmt: skip
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    logging.disable(logging.CRITICAL)  # the runs' own lines: this prints the alerts
    settings.ALLOWED_HOSTS = ["testserver"]
    week(url)


def week(url: str) -> None:
    import time_machine
    from cronsim import CronSim
    from django.core import mail
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    from scoring import demo

    setup_test_environment()  # mail.outbox
    fresh_database(url)
    call_command("migrate", verbosity=0)
    with time_machine.travel(START - timedelta(days=1), tick=False):
        demo.seed(shops=20, customers=1000, appointments=20000, seed=7, now=START - timedelta(days=1))
    config = json.loads((ROOT / "vercel.json").read_text())
    crons = list(config["schedules"].values()) if "schedules" in config else config["crons"]  # either form
    calls = sorted(
        (fire.astimezone(UTC), cron["path"])
        for cron in crons
        for fire in _fires(
            CronSim(cron["schedule"], (START - timedelta(seconds=1)).astimezone(ZoneInfo(cron.get("timezone", "UTC")))),
            START + timedelta(days=7),
        )
    )
    monitor = [(START + timedelta(minutes=15 * n), "/api/jobs/health") for n in range(1, 7 * 96 + 1)]
    client = Client(headers={"Authorization": f"Bearer {SECRET}"})
    seen = 0
    print(f"A week from {START:%a %Y-%m-%d}: {len(calls)} cron calls, {len(monitor)} health checks\n")
    with time_machine.travel(START, tick=False) as clock:
        for at, path in sorted([*calls, *monitor]):
            path = incident(at, path)
            if path is None:
                continue
            clock.move_to(at + timedelta(seconds=30 if path == "/api/jobs/health" else 7))  # Vercel starts late
            if (at - START).days == 3 and 16 <= at.hour < 20:  # 4.
                HANGING.set()
            else:
                HANGING.clear()
            began = time.monotonic()
            with held(at):
                client.get(path)
            if HANGING.is_set():
                SLOWEST[0] = max(SLOWEST[0], time.monotonic() - began)
            for sending in threading.enumerate():  # an attempt the request left running ends (within its deadline)
                if sending.name.startswith("outbox "):  # before the simulated clock moves on
                    sending.join()
            for message in mail.outbox[seen:]:
                print(f"{at:%a %H:%M}  e-mail   {message.subject.removeprefix('[jobs] ')}")
            seen = len(mail.outbox)
            while RECEIVED:
                got = RECEIVED.popleft()
                print(f"{at:%a %H:%M}  webhook  #{got['id']} {got['text'].split(' http')[0][:100]}")
        final = json.loads(client.get("/api/jobs/health").content)
    print(f"\nslowest request while the webhook hung: {SLOWEST[0]:.2f} s")
    print(f"health at the end: {final['status']}")
    for name, entry in final["jobs"].items():
        print(f"  {name:<17} {entry['verdict']}")


HANGING = threading.Event()
RECEIVED: deque[dict[str, str]] = deque()
SLOWEST = [0.0]


class Webhook(http.server.BaseHTTPRequestHandler):
    """The alert webhook: answers at once, or (incident 4) takes the POST and never answers."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if HANGING.is_set():
            time.sleep(10)  # far past the sender's deadline: it gives up and tries again later
            return
        RECEIVED.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _fires(cron: Iterator[datetime], end: datetime) -> Iterator[datetime]:
    for fire in cron:
        if fire >= end:
            return
        yield fire


def incident(at: datetime, path: str) -> str | None:
    """The call as it is made this week: None when Vercel does not make it."""
    day = (at - START).days
    if path == "/api/jobs/expire-offers" and day == 1 and (3, 55) < (at.hour, at.minute) < (6, 0):
        return None  # 1. Vercel stops calling
    if path == "/api/jobs/resolve-outcomes" and day in (3, 4, 5):
        return f"{path}?limit=20"  # 3. too few a day
    return path


@contextmanager
def held(at: datetime) -> Iterator[None]:
    """2. Wednesday 10:00-11:00: another session holds expire-offers' lock."""
    if not ((at - START).days == 2 and 10 <= at.hour < 11):
        yield
        return
    from django.db import connection

    from jobs import locks

    if connection.vendor != "postgresql":  # a lease taken by someone else
        locks.take_lease(482174, "another database session", timedelta(hours=2))
        yield
        locks.release_lease(482174, "another database session")
        return
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(482174)")
        yield


def fresh_database(url: str) -> None:
    if url.startswith("sqlite"):
        return
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


if __name__ == "__main__":
    main()
