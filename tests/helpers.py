"""Real second connections and test-only jobs for the runner's tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from django.db import connection, connections

from jobs import locks
from jobs.items import item
from jobs.models import JobLease
from jobs.registry import Job
from scoring.models import Shop

TEST_LOCK_ID = 990001
CRON_SECRET = "reliability-test-secret-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


def connect_elsewhere() -> psycopg.Connection:
    """A plain psycopg connection to the test database, outside Django."""
    s = connection.settings_dict
    return psycopg.connect(
        dbname=s["NAME"], host=s["HOST"] or None, port=s["PORT"] or None, user=s["USER"] or None,
        password=s["PASSWORD"] or None, autocommit=True,
    )  # fmt: skip


@contextmanager
def lock_held_elsewhere(lock_id: int) -> Iterator[None]:
    """Hold a job's lock from another real connection, as an outside process would."""
    if connection.vendor == "postgresql":
        with connect_elsewhere() as other:
            other.execute("SELECT pg_advisory_lock(%s)", [lock_id])
            yield
            other.execute("SELECT pg_advisory_unlock(%s)", [lock_id])
        return
    taken = threading.Event()
    done = threading.Event()

    def hold() -> None:
        try:
            locks.take_lease(lock_id, "someone-else", timedelta(minutes=5))
            taken.set()
            done.wait(30)
            locks.release_lease(lock_id, "someone-else")
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait(10)
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def lock_is_free(lock_id: int) -> bool:
    """Whether another connection could take the lock right now (and nothing is left behind)."""
    if connection.vendor == "postgresql":
        with connect_elsewhere() as other:
            left = other.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s", [lock_id % 2**32]
            ).fetchone()[0]
            taken = other.execute("SELECT pg_try_advisory_lock(%s)", [lock_id]).fetchone()[0]
            other.execute("SELECT pg_advisory_unlock_all()")
            return left == 0 and taken
    return not JobLease.objects.filter(lock_id=lock_id).exists()


# Test-only jobs, registered per test with monkeypatch.setitem(JOBS, ...).
started = threading.Event()
release = threading.Event()


def blocking(*, now: datetime) -> dict[str, object]:
    """Writes a shop, then waits until the test lets it finish."""
    Shop.objects.create(name="written by the blocking job")
    started.set()
    release.wait(30)
    return {"total": 1, "errors": []}


def failing_item(*, now: datetime) -> dict[str, object]:
    """Three items; the second raises a database error half-way through its writes."""
    errors: list[str] = []
    done = 0
    for n in (1, 2, 3):
        with item(errors, f"item {n}"):
            Shop.objects.create(name=f"item {n}")
            if n == 2:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT * FROM no_such_table")
            done += 1
    return {"total": 3, "done": done, "errors": errors}


def crashing(*, now: datetime) -> dict[str, object]:
    Shop.objects.create(name="written before the crash")
    raise RuntimeError("the job itself broke")


def make_job(name: str, func: object, lock_id: int = TEST_LOCK_ID) -> Job:
    return Job(name=name, lock_id=lock_id, func=func, schedule=None, description="test job")  # type: ignore[arg-type]


def database_url() -> str:
    """DATABASE_URL for the test database, for real subprocesses (manage.py, servers)."""
    s = connection.settings_dict
    if connection.vendor == "postgresql":
        auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
        return f"postgres://{auth}@{s['HOST'] or 'localhost'}:{s['PORT'] or 5432}/{s['NAME']}"
    return f"sqlite:///{s['NAME']}"


def manage(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run manage.py in a real process against the test database."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env={**os.environ, "DATABASE_URL": database_url(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@contextmanager
def serve(env: dict[str, str] | None = None, workers: int = 4) -> Iterator[str]:
    """The app under gunicorn (several worker processes) against the test database; yields its base URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "project.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
         "--timeout", "120", "--log-level", "warning"],
        env={**os.environ, "DATABASE_URL": database_url(), "CRON_SECRET": CRON_SECRET, **(env or {})},
        cwd=ROOT,
    )  # fmt: skip
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(20)
