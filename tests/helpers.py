"""Real second connections, processes and servers, for tests of every layer; what PostgreSQL's plans read."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from django.db import connection, connections

from jobs import locks
from jobs.context import Context, Result
from jobs.models import JobLease

CRON_SECRET = "reliability-test-secret-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


# Advisory lock keys are per database: other databases on the same server (a benchmark's) are not ours.
THIS_DATABASE = "database = (SELECT oid FROM pg_database WHERE datname = current_database())"


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
            (left,) = other.execute(
                f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND {THIS_DATABASE}",
                [lock_id % 2**32],
            ).fetchone() or (None,)
            (taken,) = other.execute("SELECT pg_try_advisory_lock(%s)", [lock_id]).fetchone() or (None,)
            other.execute("SELECT pg_advisory_unlock_all()")
            return left == 0 and bool(taken)
    return not JobLease.objects.filter(lock_id=lock_id).exists()


def outside_a_run(work: Callable[..., Result], now: datetime, **kwargs: Any) -> dict[str, Any]:
    """Call a job's work directly, as the runner would but without lock or ledger.

    Returns its counters, `remaining` (when it tells) and the errors its items caught, as one dict.
    """
    ctx = Context(now=now)
    result = work(ctx, **kwargs)
    remaining = {"remaining": result.remaining} if result.remaining is not None else {}
    return {**result.counters, **remaining, "errors": [*ctx.errors, *result.errors]}


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


class Received(list[dict[str, Any]]):
    """The JSON bodies POSTed to a webhook receiver, in order; with each request's path and headers."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []


@contextmanager
def webhook_receiver(port: int | None = None) -> Iterator[tuple[str, Received]]:
    """A real HTTP server on this machine that records the JSON bodies POSTed to it."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.paths.append(self.path)
            received.headers.append(dict(self.headers))
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook/secret-token", received
    finally:
        server.shutdown()
        server.server_close()


class Background(threading.Thread):
    """`work` in a thread with its own connection: its backend's pid (PostgreSQL), then its result or error."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__()
        self.work, self.result, self.error, self.pid = work, None, None, 0
        self.connected = threading.Event()
        self.start()
        self.connected.wait(10)

    def run(self) -> None:
        try:
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    self.pid = cursor.fetchone()[0]
            self.connected.set()
            self.result = self.work()
        except Exception as error:
            self.error = error
        finally:
            self.connected.set()
            connections.close_all()


def waits_on(watcher: psycopg.Connection, waiter: Background, blocker: int) -> bool:
    """Whether `waiter` is seen waiting on a lock of backend `blocker` before it ends (10 s at most)."""
    deadline = time.monotonic() + 10
    while waiter.is_alive() and time.monotonic() < deadline:
        if blocker in watcher.execute("SELECT pg_blocking_pids(%s)", [waiter.pid]).fetchone()[0]:
            return True
        time.sleep(0.01)
    return False


def blocks_read(reports: list[str], table: str) -> int:
    """The blocks that the scans of `table` read in the statements these auto_explain reports show."""

    def scans(node: dict) -> Iterator[dict]:
        if node.get("Relation Name") == table and node["Node Type"] != "ModifyTable":
            yield node
        for child in node.get("Plans", []):
            yield from scans(child)

    return sum(
        scan["Shared Hit Blocks"] + scan["Shared Read Blocks"] for plan in _plans(reports) for scan in scans(plan)
    )


def pages_written(reports: list[str], table: str) -> int:
    """The pages of `table` and its indexes first dirtied by the statements writing to it that these reports show."""
    return sum(plan["Shared Dirtied Blocks"] for plan in _plans(reports) if plan.get("Relation Name") == table)


def _plans(reports: list[str]) -> list[dict]:
    return [json.loads(report.split("plan:", 1)[1])["Plan"] for report in reports]
