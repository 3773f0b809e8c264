"""Under load, kills, a transaction pooler and a lost database: real processes and servers, no mocks.

Figures from the last run are in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from jobs.context import Context
from jobs.models import JobRun, Status
from scoring import demo
from scoring.models import Appointment, CustomerScore, Outcome
from scoring.scores import recompute_scores
from tests.helpers import (
    CRON_SECRET,
    ROOT,
    THIS_DATABASE,
    connect_elsewhere,
    database_url,
    lock_held_elsewhere,
    manage,
    serve,
)

real_db = pytest.mark.django_db(transaction=True)
SCORE_FIELDS = ("customer_id", "shop_id", "score", "tier", "attended", "no_shows", "late_cancels", "cancellations",
                "last_appointment_at", "window_days")  # fmt: skip
SLOW = {"RECOMPUTE_SCORES_BATCH_SIZE": "50"}  # many small batches: runs last long enough to overlap


def seed(customers: int = 3000, appointments: int = 20000) -> None:
    demo.seed(shops=10, customers=customers, appointments=appointments, seed=3, now=timezone.now())


def scores() -> list[tuple]:
    return list(CustomerScore.objects.order_by("customer_id").values_list(*SCORE_FIELDS))


def assert_equals_one_clean_run() -> None:
    """The scores equal what one uninterrupted run computes, at the `now` of the last run that wrote."""
    last = JobRun.objects.filter(job="recompute-scores", status=Status.SUCCEEDED).latest("id")
    got = scores()
    CustomerScore.objects.all().delete()
    recompute_scores(Context(now=datetime.fromisoformat(last.params["now"])), full=True)
    assert got == scores()


def assert_no_overlap(runs: list[JobRun]) -> None:
    spans = sorted((run.started_at, run.finished_at, run.pk) for run in runs)
    for (_, end, first), (start, _, second) in pairwise(spans):
        assert end <= start, f"runs #{first} and #{second} overlap"


def advisory_locks() -> list[tuple]:
    with connect_elsewhere() as other:
        return other.execute(
            f"SELECT objid, pid, granted FROM pg_locks WHERE locktype = 'advisory' AND {THIS_DATABASE}"
        ).fetchall()


def recompute_in_parallel(url: str, count: int) -> list[tuple[int, str, str]]:
    """`count` real `manage.py recompute_scores --json` processes at once; (exit code, stdout, stderr) each."""
    env = {**os.environ, "DATABASE_URL": url, **SLOW}
    command = [sys.executable, "manage.py", "recompute_scores", "--json"]
    processes = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    finished = [process.communicate(timeout=120) for process in processes]
    return [(process.returncode, out, err) for process, (out, err) in zip(processes, finished, strict=True)]


def get(url: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


# 1. Concurrency ---------------------------------------------------------------------------------


@real_db
def test_20_simultaneous_requests_to_a_multi_process_server_run_one_at_a_time_and_are_all_recorded():
    seed()
    responses: list[tuple[int, str, bytes]] = []
    start = threading.Barrier(20)
    with serve(workers=4) as base:

        def call() -> None:
            start.wait()
            responses.append(get(f"{base}/api/jobs/recompute-scores", {"Authorization": f"Bearer {CRON_SECRET}"}))

        threads = [threading.Thread(target=call) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)

    assert len(responses) == 20
    assert all(status == 200 and kind == "application/json" for status, kind, _ in responses), responses
    bodies = [json.loads(body) for _, _, body in responses]
    runs = list(JobRun.objects.filter(job="recompute-scores"))
    assert len(runs) == 20  # one ledger row per request
    assert {body["runId"] for body in bodies} == {run.pk for run in runs}
    succeeded = [run for run in runs if run.status == Status.SUCCEEDED]
    assert succeeded and all(run.status in (Status.SUCCEEDED, Status.SKIPPED) for run in runs)
    print(f"20 requests: {len(succeeded)} succeeded, {20 - len(succeeded)} skipped")
    assert_no_overlap(succeeded)
    assert_equals_one_clean_run()


@real_db
def test_5_parallel_manage_py_processes_run_one_at_a_time_and_are_all_recorded():
    seed()
    outcomes = [(code, json.loads(out)) for code, out, _ in recompute_in_parallel(database_url(), 5)]
    assert {code for code, _ in outcomes} <= {0, 75}
    assert all(body["status"] == ("succeeded" if code == 0 else "skipped") for code, body in outcomes)
    runs = list(JobRun.objects.filter(job="recompute-scores"))
    assert len(runs) == 5
    print(f"5 processes: {sum(run.status == Status.SUCCEEDED for run in runs)} succeeded")
    assert_no_overlap([run for run in runs if run.status == Status.SUCCEEDED])
    assert_equals_one_clean_run()


# 2. kill -9 mid-run -----------------------------------------------------------------------------


@contextmanager
def recompute_held_at(customer_id: object, env: dict[str, str], *args: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """A real `manage.py recompute_scores` (`args`, or else `--full`) held mid-run, whatever the machine's speed.

    Another session locks the score row of `customer_id`, so the run's upsert of that
    customer's batch waits on it: every earlier batch is written (uncommitted), no later
    one is. Yields the process and its backend's pid once that backend is seen waiting.
    Leaving the block lets the upsert go on.
    """
    # pg_stat_activity is a snapshot per transaction: watch from a connection of its own.
    with connect_elsewhere() as blocker, connect_elsewhere() as watcher, blocker.transaction():
        blocker.execute("SELECT 1 FROM scoring_customerscore WHERE customer_id = %s FOR UPDATE", [customer_id])
        process = subprocess.Popen(
            [sys.executable, "manage.py", "recompute_scores", *(args or ["--full"])], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (waiting := watcher.execute(
            "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [blocker.info.backend_pid]
        ).fetchall()):  # fmt: skip
            assert process.poll() is None, f"the run ended without reaching the held row: {process.stderr.read()}"
            assert time.monotonic() < deadline, "the run never reached the held row"
            time.sleep(0.01)
        yield process, waiting[0][0]


def lock_gone_within(lock_id: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(objid == lock_id for objid, _, _ in advisory_locks()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.postgres
@real_db
def test_kill_9_at_random_points_ten_times_frees_the_lock_writes_nothing_and_the_next_run_recovers():
    seed()
    recompute_scores(Context(now=timezone.now()))  # the "previous run": every customer has a score row
    customers = list(CustomerScore.objects.order_by("customer_id").values_list("customer_id", flat=True))
    rng = random.Random(9)
    batch = 50
    env = {**os.environ, "DATABASE_URL": database_url(), "RECOMPUTE_SCORES_BATCH_SIZE": str(batch)}  # 60 batches
    held_at: list[int] = []
    for kill in range(10):
        # Change history, so that a finished run would rewrite many scores.
        flip = Appointment.objects.filter(outcome__in=[Outcome.ATTENDED, Outcome.NO_SHOW]).order_by("?")[:400]
        for appointment in flip:
            appointment.outcome = Outcome.NO_SHOW if appointment.outcome == Outcome.ATTENDED else Outcome.ATTENDED
            appointment.checked_in_at = appointment.starts_at if appointment.outcome == Outcome.ATTENDED else None
            appointment.save(update_fields=["outcome", "checked_in_at"])
        before = scores()
        held = rng.randrange(batch, len(customers))  # in batch 2 or later: earlier batches are written by then
        held_at.append(held // batch + 1)
        with recompute_held_at(customers[held], env) as (process, _):
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        # The row is free again: the orphaned statement ends, its backend finds no client and rolls back.
        assert lock_gone_within(482175, 2), f"kill {kill}: the lock outlived its process by 2 s"
        assert scores() == before, f"kill {kill} (held at customer {held}): a killed run's writes were kept"
    print(f"10 kills, each while batch {held_at} of 60 waited")

    killed = list(JobRun.objects.filter(job="recompute-scores", status=Status.RUNNING).values_list("pk", flat=True))
    assert len(killed) == 10
    result = manage("recompute_scores", "--json")
    assert result.returncode == 0, result.stderr
    assert set(JobRun.objects.filter(status=Status.ABANDONED).values_list("pk", flat=True)) == set(killed)
    assert not JobRun.objects.filter(status=Status.RUNNING).exists()
    assert_equals_one_clean_run()


@pytest.mark.postgres
@real_db
def test_a_run_killed_mid_statement_lets_go_of_its_lock_within_2_seconds():
    seed(customers=500, appointments=3000)
    recompute_scores(Context(now=timezone.now()))
    customers = list(CustomerScore.objects.order_by("customer_id").values_list("customer_id", flat=True))
    env = {**os.environ, "DATABASE_URL": database_url(), "RECOMPUTE_SCORES_BATCH_SIZE": "50"}
    with recompute_held_at(customers[200], env) as (process, backend):
        # Its statement waits on a row that stays locked until the end of this block: without a look at its
        # socket, the backend would wait (and hold the job's lock) for as long as that.
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed = time.monotonic()
        assert lock_gone_within(482175, 2), "the lock outlived its killed run by 2 s"
        print(f"lock gone {time.monotonic() - killed:.2f} s after the kill, the row still held")
        with connect_elsewhere() as other:
            assert not other.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend]).fetchall()


@pytest.mark.postgres
@real_db
def test_two_runs_under_different_lock_ids_never_slide_the_window_twice():
    seed()
    then = timezone.now() - timedelta(days=3)
    recompute_scores(Context(now=then))  # the last run, three days ago: the next slides the window three days
    visit = Appointment.objects.filter(outcome=Outcome.ATTENDED, starts_at__lt=then).first()
    Appointment.objects.filter(pk=visit.pk).update(outcome=Outcome.NO_SHOW, checked_in_at=None)  # to rescore
    env = {**os.environ, "DATABASE_URL": database_url()}
    # The first run has slid the window (uncommitted) and waits to rescore the marked customer.
    with recompute_held_at(visit.customer_id, env, "--json") as (first, _):
        second = subprocess.Popen(
            [sys.executable, "manage.py", "recompute_scores", "--json", "--lock-id", "999"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        with suppress(subprocess.TimeoutExpired):  # a second slide would wait on the first's rows, not skip
            second.wait(10)
    out, err = second.communicate(timeout=60)
    first.communicate(timeout=60)
    holder = JobRun.objects.get(lock_id=482175)
    assert (second.returncode, json.loads(out)) == (75, {
        "job": "recompute-scores", "runId": holder.pk + 1, "status": "skipped", "skipped": True,
        "reason": "locked", "heldBy": f"run #{holder.pk}", "held": "the scoring state",
    }), err  # fmt: skip
    assert holder.status == Status.SUCCEEDED
    assert_equals_one_clean_run()


# 3. A transaction-mode pooler -------------------------------------------------------------------


@pytest.fixture
def pgbouncer():
    """PgBouncer in transaction mode with a pool of 2 server connections, in front of the test database."""
    binary = "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        if os.environ.get("REQUIRE_PGBOUNCER"):
            pytest.fail("REQUIRE_PGBOUNCER is set but pgbouncer is missing (apt-get install pgbouncer)")
        pytest.skip("needs pgbouncer (Debian package; .ci/run installs it)")
    from tests.helpers import free_port, wait_for_port

    s = connection.settings_dict
    port = free_port()
    # pgbouncer drops root for the postgres user, who must be able to read its files.
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    folder.chmod(0o755)
    (folder / "users.txt").write_text(f'"{s["USER"]}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={s["HOST"] or "127.0.0.1"} port={s["PORT"] or 5432}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/users.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 200
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
"""
    )
    user = ["-u", "postgres"] if os.geteuid() == 0 else []
    for file in folder.iterdir():
        file.chmod(0o644)
    process = subprocess.Popen([binary, *user, str(folder / "pgbouncer.ini")])
    try:
        wait_for_port(port)
        yield f"postgres://{s['USER']}@127.0.0.1:{port}/{s['NAME']}"
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder)


@pytest.mark.postgres
@real_db
def test_through_pgbouncer_in_transaction_mode_runs_exclude_each_other_and_leave_no_lock(pgbouncer):
    import psycopg

    seed()
    # The pooler really pools by transaction: a session lock taken through it outlives its client.
    with psycopg.connect(pgbouncer, autocommit=True, prepare_threshold=None) as client:
        client.execute("SELECT pg_advisory_lock(991234)")
    assert any(objid == 991234 for objid, _, _ in advisory_locks()), "expected the session lock to leak"

    finished = recompute_in_parallel(pgbouncer, 5)
    codes = [code for code, _, _ in finished]
    assert set(codes) <= {0, 75} and 0 in codes, [err for _, _, err in finished]
    env = {**os.environ, "DATABASE_URL": pgbouncer, **SLOW}
    runs = list(JobRun.objects.filter(job="recompute-scores"))
    assert len(runs) == 5
    assert_no_overlap([run for run in runs if run.status == Status.SUCCEEDED])
    assert [lock for lock in advisory_locks() if lock[0] != 991234] == []

    with lock_held_elsewhere(482175):  # an outside session, straight to PostgreSQL
        result = subprocess.run(
            [sys.executable, "manage.py", "recompute_scores"], cwd=ROOT, env=env, capture_output=True, text=True
        )
    assert result.returncode == 75, result.stderr
    assert [lock for lock in advisory_locks() if lock[0] != 991234] == []
    assert_equals_one_clean_run()


# 4. Database faults -----------------------------------------------------------------------------

UNREACHABLE = "postgres://postgres@127.0.0.1:1/nowhere"


def test_an_unreachable_database_gives_503_json_over_http():
    with serve({"DATABASE_URL": UNREACHABLE}, workers=1) as base:
        status, kind, body = get(f"{base}/api/jobs/recompute-scores", {"Authorization": f"Bearer {CRON_SECRET}"})
    assert (status, kind) == (503, "application/json")
    assert json.loads(body) == {"error": "Database unavailable"}


def test_an_unreachable_database_gives_a_clean_command_error():
    result = subprocess.run(
        [sys.executable, "manage.py", "recompute_scores"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "DATABASE_URL": UNREACHABLE},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("CommandError: database error: connection failed")
    assert "Traceback" not in result.stderr


def test_an_unmigrated_database_gives_a_clean_command_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "recompute_scores"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/empty.sqlite3"},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("CommandError: database error: no such table")
    assert "Traceback" not in result.stderr


@pytest.mark.postgres
@real_db
def test_a_connection_dropped_mid_run_never_ends_as_a_success():
    seed()
    recompute_scores(Context(now=timezone.now()))
    customers = list(CustomerScore.objects.order_by("customer_id").values_list("customer_id", flat=True))
    env = {**os.environ, "DATABASE_URL": database_url(), **SLOW}
    with recompute_held_at(customers[len(customers) // 2], env) as (process, backend):
        with connect_elsewhere() as other:
            other.execute("SELECT pg_terminate_backend(%s)", [backend])
        code = process.wait(60)
    assert code == 1, process.stderr.read()
    run = JobRun.objects.get()
    assert run.status in (Status.RUNNING, Status.FAILED)  # running: its process could not record the end
    manage("recompute_scores")
    run.refresh_from_db()
    assert run.status in (Status.ABANDONED, Status.FAILED)


# 5. A hostile caller ----------------------------------------------------------------------------

PRODUCTION = {
    "DEBUG": "false",
    "VERCEL_ENV": "production",
    "SECRET_KEY": "a-production-secret-key-for-the-hostile-input-test-0123456789",
    "ALLOWED_HOSTS": "127.0.0.1",
    "INTERNAL_SECRET": "internal-" + CRON_SECRET,
}
JOB = "/api/jobs/recompute-scores"
GOOD = {"Authorization": f"Bearer {CRON_SECRET}"}
UNKNOWN_SHOP = "00000000-0000-4000-8000-000000000000"
HOSTILE = [
    # (what, method, path, headers, body, status)
    ("PUT", "PUT", JOB, GOOD, b"", 405),
    ("PATCH", "PATCH", JOB, GOOD, b"", 405),
    ("DELETE", "DELETE", JOB, GOOD, b"", 405),
    ("OPTIONS", "OPTIONS", JOB, GOOD, b"", 405),
    ("TRACE", "TRACE", JOB, GOOD, b"", 405),
    ("made-up method", "BREW", JOB, GOOD, b"", 405),
    ("no credentials", "GET", JOB, {}, b"", 401),
    ("POST without credentials", "POST", JOB, {}, b"", 401),
    ("wrong bearer", "GET", JOB, {"Authorization": "Bearer nope"}, b"", 401),
    ("empty bearer", "GET", JOB, {"Authorization": "Bearer "}, b"", 401),
    ("scheme only", "GET", JOB, {"Authorization": "Bearer"}, b"", 401),
    ("lower-case scheme", "GET", JOB, {"Authorization": f"bearer {CRON_SECRET}"}, b"", 401),
    ("basic scheme", "GET", JOB, {"Authorization": f"Basic {CRON_SECRET}"}, b"", 401),
    ("two spaces", "GET", JOB, {"Authorization": f"Bearer  {CRON_SECRET}"}, b"", 401),
    ("secret one short", "GET", JOB, {"X-Cron-Secret": CRON_SECRET[:-1]}, b"", 401),
    ("secret one long", "GET", JOB, {"X-Cron-Secret": CRON_SECRET + "0"}, b"", 401),
    ("secret of 1 char", "GET", JOB, {"X-Cron-Secret": "x"}, b"", 401),
    ("secret of 4 KB", "GET", JOB, {"X-Cron-Secret": "x" * 4000}, b"", 401),
    ("secret as prefix", "GET", JOB, {"X-Cron-Secret": CRON_SECRET[:10]}, b"", 401),
    ("latin-1 secret", "GET", JOB, {"X-Cron-Secret": "s\u00e9cr\u00e8t"}, b"", 401),
    ("internal secret on a cron job", "GET", JOB, {"X-Internal-Secret": PRODUCTION["INTERNAL_SECRET"]}, b"", 401),
    ("cron secret on the internal job", "POST", "/api/jobs/offer-loop", {"X-Cron-Secret": CRON_SECRET}, b"", 401),
    ("bearer on the internal job", "GET", "/api/jobs/offer-loop", GOOD, b"", 401),
    ("5 MB body, no secret", "POST", JOB, {"Content-Type": "application/json"}, b"x" * 5_000_000, 401),
    (
        "JSON body claiming a secret",
        "POST",
        JOB,
        {"Content-Type": "application/json"},
        json.dumps({"secret": CRON_SECRET}).encode(),
        401,
    ),
    ("unknown job", "GET", "/api/jobs/drop-tables", GOOD, b"", 404),
    ("unknown job, no secret", "GET", "/api/jobs/drop-tables", {}, b"", 401),
    ("path below a job", "GET", JOB + "/x", GOOD, b"", 404),
    ("encoded NUL in the job name", "GET", "/api/jobs/recompute%00scores", GOOD, b"", 404),
    ("unicode job name", "GET", "/api/jobs/r%C3%A9sum%C3%A9", GOOD, b"", 404),
    ("limit on a job without one", "GET", JOB + "?limit=5", GOOD, b"", 400),
    ("limit negative", "GET", "/api/jobs/resolve-outcomes?limit=-1", GOOD, b"", 400),
    ("limit zero", "GET", "/api/jobs/resolve-outcomes?limit=0", GOOD, b"", 400),
    ("limit text", "GET", "/api/jobs/resolve-outcomes?limit=many", GOOD, b"", 400),
    ("limit float", "GET", "/api/jobs/resolve-outcomes?limit=1.5", GOOD, b"", 400),
    ("limit exponent", "GET", "/api/jobs/resolve-outcomes?limit=1e3", GOOD, b"", 400),
    ("limit with spaces", "GET", "/api/jobs/resolve-outcomes?limit=%205", GOOD, b"", 400),
    ("limit of minus 3000 digits", "GET", "/api/jobs/resolve-outcomes?limit=-" + "9" * 3000, GOOD, b"", 400),
    ("limit in arabic digits", "GET", "/api/jobs/resolve-outcomes?limit=%D9%A5", GOOD, b"", 400),
    ("shopId not a UUID", "GET", JOB + "?shopId=42", GOOD, b"", 400),
    ("shopId SQL", "GET", JOB + "?shopId=%27%3B%20DROP%20TABLE%20scoring_shop%3B--", GOOD, b"", 400),
    ("shopId unknown", "GET", JOB + "?shopId=" + UNKNOWN_SHOP, GOOD, b"", 404),
    ("shopId unicode", "GET", JOB + "?shopId=%F0%9F%92%A5", GOOD, b"", 400),
    ("shopId very long", "GET", JOB + "?shopId=" + "a" * 3000, GOOD, b"", 400),
    ("dryRun not a boolean", "GET", JOB + "?dryRun=perhaps", GOOD, b"", 400),
    ("dryRun with SQL", "GET", JOB + "?dryRun=1%27%20OR%20%271", GOOD, b"", 400),
    ("limit with a plus sign", "GET", "/api/jobs/resolve-outcomes?limit=%2B5", GOOD, b"", 400),
    ("bad host header", "GET", JOB, {**GOOD, "Host": "evil.example.com"}, b"", 400),
]


def send(base: str, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
    import http.client

    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value.encode("latin-1"))
        if body:
            conn.putheader("Content-Length", str(len(body)))
        # A huge body is announced but not sent: the server must answer without waiting for it
        # (sending it all would only race the server's close of the unread socket).
        conn.endheaders(body if len(body) <= 65536 else None)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@real_db
def test_hostile_requests_get_their_documented_4xx_json_and_run_nothing():
    assert len(HOSTILE) >= 40
    with serve(PRODUCTION, workers=2) as base:
        answers = [(what, status, send(base, method, path, headers, body))
                   for what, method, path, headers, body, status in HOSTILE]  # fmt: skip
        # The control: the same server runs a job for the right secret, and ignores ?lockId= in production.
        ok_status, _, ok_body = send(base, "GET", JOB + "?lockId=7", GOOD, b"")
    problems = []
    for what, expected, (status, headers, body) in answers:
        text = body.decode("utf-8", "replace")
        if status != expected:
            problems.append(f"{what}: {status}, expected {expected}: {text[:120]}")
        if headers.get("Content-Type") != "application/json" or headers.get("Cache-Control") != "no-store":
            problems.append(f"{what}: not a no-store JSON answer: {headers.get('Content-Type')}")
        elif "error" not in json.loads(body):
            problems.append(f"{what}: no error named")
        if CRON_SECRET in text or PRODUCTION["INTERNAL_SECRET"] in text or "Traceback" in text:
            problems.append(f"{what}: leaks a secret or a traceback")
    assert problems == [], "\n".join(problems)
    assert ok_status == 200 and json.loads(ok_body)["status"] == "succeeded"
    run = JobRun.objects.get()  # the control's, and no other
    assert run.lock_id == 482175


# Values that hold credentials, each recognisable. The development server copies the whole environment
# into request.META, and Django's technical page (DEBUG=true) lists META and the settings.
CREDENTIALS = {
    "JOBS_ALERT_WEBHOOK_URL": "https://hooks.example.com/services/T0HOOK/B0HOOK/hook-path-secret-7f3a",
    "EMAIL_URL": "smtp+tls://mailer:email-pass-secret-91c2@smtp.example.com:587",
    "DATABASE_URL_UNPOOLED": "postgres://app:unpooled-pass-secret-44d1@db.example.com:5432/app",  # as Neon sets
}


@contextmanager
def runserver(env: dict[str, str], log: Path) -> Iterator[str]:
    """`manage.py runserver` (no reloader) against the test database; its output goes to `log`."""
    from tests.helpers import free_port, wait_for_port

    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for_port(port, timeout=60)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(20)


@real_db
@pytest.mark.parametrize("debug", ["false", "true"])
def test_a_bad_host_header_shows_no_credential_with_debug_off_or_on(debug, tmp_path):
    s = connection.settings_dict
    url, password = database_url(), s["PASSWORD"]
    if connection.vendor == "postgresql" and not password:  # trust authentication ignores a password
        password = "db-pass-secret-0c5e"
        url = url.replace(f"://{s['USER']}@", f"://{s['USER']}:{password}@")
    env = {**CREDENTIALS, **PRODUCTION, "DATABASE_URL": url, "CRON_SECRET": CRON_SECRET, "DEBUG": debug}
    with runserver(env, tmp_path / "server.log") as base:
        status, _, body = send(base, "GET", "/admin/login/", {"Host": "evil.example.com"}, b"")
    page, log = body.decode(), (tmp_path / "server.log").read_text()
    assert status == 400
    if debug == "true":  # the technical page, listing the environment and the settings, every credential hidden
        assert "DisallowedHost" in page and "JOBS_ALERT_WEBHOOK_URL" in page and "DATABASE_URL_UNPOOLED" in page
        assert "Invalid HTTP_HOST header: &#x27;evil.example.com&#x27;" in page
        assert page.count("********************") >= 8
    else:
        assert "Bad Request (400)" in page and "JOBS_ALERT_WEBHOOK_URL" not in page
    secrets = [*CREDENTIALS.values(), "hook-path-secret-7f3a", "/services/T0HOOK", "email-pass-secret-91c2",
               "unpooled-pass-secret-44d1", url, CRON_SECRET, PRODUCTION["SECRET_KEY"]]  # fmt: skip
    secrets += [password] if password else []
    shown = [secret for secret in secrets if secret in page or secret in log]
    print(f"DEBUG={debug}: {status}, {len(page):,} characters, {page.count('*' * 20)} values hidden, "
          f"{len(shown)} of {len(secrets)} secrets shown")  # fmt: skip
    assert shown == [], f"shown: {shown}"


def test_the_secret_comparison_is_constant_time_on_equal_length_digests(monkeypatch, settings):
    import hmac

    from django.test import RequestFactory

    from jobs import views

    settings.CRON_SECRET = CRON_SECRET
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(views.hmac, "compare_digest", recording)
    for secret in ("x", CRON_SECRET[:-1], CRON_SECRET, "y" * 5000):
        views.authenticate(RequestFactory().get(JOB, HTTP_X_CRON_SECRET=secret), internal=False)
    assert compared and set(compared) == {(32, 32)}
