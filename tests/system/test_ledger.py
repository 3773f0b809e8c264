"""The ledger tells the truth when the database or the process misbehaves (real processes, sockets and sessions)."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest
from django.db import transaction
from django.utils import timezone

from jobs.context import Context, Result
from jobs.models import JobRun, Status, Trigger
from jobs.registry import JOBS, Job
from jobs.runner import run_job
from scoring.models import Appointment, Customer, CustomerScore, Outcome, Shop
from scoring.scores import recompute_scores
from tests.helpers import ROOT, connect_elsewhere, database_url, free_port, webhook_receiver
from tests.system.test_reliability import SCORE_FIELDS, assert_equals_one_clean_run, recompute_held_at, seed

real_db = pytest.mark.django_db(transaction=True)
COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"  # the server's CommandComplete for COMMIT


@contextmanager
def proxy_that_drops_after_commit() -> Iterator[tuple[int, threading.Event]]:
    """A TCP proxy to PostgreSQL that closes both sides right after passing on the first COMMIT's acknowledgement."""
    listener = socket.create_server(("127.0.0.1", free_port()))
    port, dropped = listener.getsockname()[1], threading.Event()

    def pump(client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", 5432))
        try:
            while not dropped.is_set():
                for ready in select.select([client, server], [], [], 1)[0]:
                    data = ready.recv(65536)
                    if not data:
                        return
                    (server if ready is client else client).sendall(data)
                    if ready is server and COMMIT_DONE in data:
                        dropped.set()  # the client has its "COMMIT" answer; now the line goes dead
        finally:
            client.close()
            server.close()

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=pump, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield port, dropped
    finally:
        listener.close()


@pytest.mark.postgres
@real_db
def test_a_connection_dropped_right_after_commit_leaves_the_run_succeeded_with_its_counters():
    seed(customers=500, appointments=4000)
    with proxy_that_drops_after_commit() as (port, dropped):
        url = database_url().replace(":5432/", f":{port}/") + "?sslmode=disable"
        result = subprocess.run(
            [sys.executable, "manage.py", "recompute_scores"], cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "DATABASE_URL": url},
        )  # fmt: skip
    assert dropped.is_set(), result.stderr
    run = JobRun.objects.get()
    assert run.status == Status.SUCCEEDED, (run.status, result.stdout, result.stderr)
    assert run.counters["total"] == 500 and run.counters["created"] == 500 and run.finished_at
    assert CustomerScore.objects.count() == 500  # the work and its record, committed together


@pytest.mark.postgres
@real_db
def test_a_customer_deleted_by_another_session_mid_run_costs_at_most_its_batch():
    seed()
    recompute_scores(Context(now=timezone.now()))  # every customer has a score ...
    shop = Shop.objects.first()
    doomed = Customer.objects.create(id=uuid.UUID(int=1), shop=shop, name="Deleted mid-run")  # ... but this one,
    # in the first batch: the run inserts its score, uncommitted, before it reaches the held row.
    customers = list(Customer.objects.order_by("id").values_list("id", flat=True))
    env = {**os.environ, "DATABASE_URL": database_url(), "RECOMPUTE_SCORES_BATCH_SIZE": "50"}
    outcome: dict[str, object] = {}

    def delete_the_customer() -> None:  # as the ORM's cascade would, in one transaction
        with connect_elsewhere() as other:
            outcome["pid"] = other.info.backend_pid
            try:
                with other.transaction():
                    other.execute("DELETE FROM scoring_customerscore WHERE customer_id = %s", [doomed.pk])
                    other.execute("DELETE FROM scoring_customer WHERE id = %s", [doomed.pk])
                outcome["deleter"] = "committed"
            except Exception as error:
                outcome["deleter"] = f"{type(error).__name__}: {error}".splitlines()[0]

    with recompute_held_at(customers[500], env) as (process, backend):
        deleter = threading.Thread(target=delete_the_customer)
        deleter.start()
        deadline = time.monotonic() + 10
        with connect_elsewhere() as watcher:  # the delete waits for the run, or is done
            while deleter.is_alive() and time.monotonic() < deadline:
                pids = watcher.execute("SELECT pg_blocking_pids(%s)", [outcome.get("pid", 0)]).fetchone()[0]
                if backend in pids:
                    outcome["waited_for_the_run"] = True
                    break
                time.sleep(0.02)
    assert process.wait(60) in (0, 1), process.stderr.read()
    deleter.join(30)
    run = JobRun.objects.get(job="recompute-scores")
    print(f"run {run.status}, deleting session: {outcome}")
    assert run.status in (Status.SUCCEEDED, Status.PARTIAL), (run.status, run.errors)
    assert outcome["deleter"] == "committed"  # it waited for the run, then its delete took the new score too
    assert not Customer.objects.filter(pk=doomed.pk).exists()
    others = CustomerScore.objects.order_by("customer_id")
    saved = list(others.values_list(*SCORE_FIELDS))
    with transaction.atomic():  # what a clean run at the same `now` computes, for everyone else
        CustomerScore.objects.all().delete()
        recompute_scores(Context(now=datetime.fromisoformat(run.params["now"])), full=True)
        assert saved == list(others.values_list(*SCORE_FIELDS))
        transaction.set_rollback(True)
    assert len(saved) == len(customers) - 1


@pytest.mark.postgres
@real_db
def test_writers_never_wait_on_a_run_and_what_they_change_is_rescored_by_the_next():
    seed()
    recompute_scores(Context(now=timezone.now()))
    customers = list(Customer.objects.order_by("id").values_list("id", flat=True))
    first, later = customers[0], customers[-1]  # in the held run's first batch (done), and in one it never reaches
    visit = Appointment.objects.filter(customer_id=first).exclude(outcome=Outcome.PENDING).first()
    assert visit is not None
    Appointment.objects.filter(pk=visit.pk).update(outcome=Outcome.NO_SHOW)  # marked: moved, then cleared, by the run
    env = {**os.environ, "DATABASE_URL": database_url(), "RECOMPUTE_SCORES_BATCH_SIZE": "50"}
    waited = []
    with recompute_held_at(customers[500], env) as (process, _), connect_elsewhere() as writer:
        writer.execute("SET lock_timeout = '2s'")  # a writer that waited on the run would fail here
        for statement, params in [
            ("UPDATE scoring_appointment SET outcome = 'attended', checked_in_at = starts_at "
             "WHERE id = %s", [visit.pk]),
            ("INSERT INTO scoring_appointment (id, shop_id, customer_id, starts_at, ends_at, outcome, resolved_at, "
             "created_at) SELECT gen_random_uuid(), shop_id, id, now() - interval '2 days', "
             "now() - interval '2 days' + interval '1 hour', 'no_show', now(), now() FROM scoring_customer "
             "WHERE id = %s", [later]),
        ]:  # fmt: skip
            started = time.monotonic()
            writer.execute(statement, params)
            waited.append(time.monotonic() - started)
    assert process.wait(60) == 0, process.stderr.read()
    print(f"the writes took {', '.join(f'{s * 1000:.0f} ms' for s in waited)} while the run was held")
    assert max(waited) < 1
    counters = run_job("recompute-scores", trigger=Trigger.CLI).counters  # the next run
    assert (counters["full_pass"], counters["dirty"] >= 2) == (0, True)
    assert_equals_one_clean_run()


@real_db
def test_on_sqlite_a_killed_runs_lease_frees_its_job_within_two_minutes(tmp_path, settings, monkeypatch, on_postgres):
    if on_postgres:
        pytest.skip("the lease is SQLite's lock")
    settings.JOBS_LEASE_SECONDS = 10
    lock_id, ready = 990201, tmp_path / "ready"
    env = {**os.environ, "DATABASE_URL": database_url(), "JOBS_LEASE_SECONDS": "10"}
    sleeper = subprocess.Popen([sys.executable, "-m", "tests.system.sleeper", str(lock_id), str(ready)], cwd=ROOT,
                               env=env)  # fmt: skip
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert sleeper.poll() is None and time.monotonic() < deadline, "the sleeper never took its lock"
        time.sleep(0.05)
    killed_at = time.monotonic()
    sleeper.send_signal(signal.SIGKILL)
    sleeper.wait(10)

    monkeypatch.setitem(JOBS, "sleeper", Job("sleeper", lock_id, lambda ctx: Result({"done": 1}), "Quick this time."))
    while (run := run_job("sleeper", trigger=Trigger.CLI)).status == Status.SKIPPED:
        assert run.held_by.startswith("run #"), run.held_by
        assert time.monotonic() - killed_at < 120, "the killed run's lease outlived two minutes"
        time.sleep(1)
    waited = time.monotonic() - killed_at
    print(f"blocked {waited:.1f} s after the kill (lease 10 s)")
    assert run.status == Status.SUCCEEDED and waited < 10 + 5
    assert JobRun.objects.filter(job="sleeper", status=Status.ABANDONED).count() == 1


@real_db
def test_five_processes_checking_at_once_send_one_alert_per_incident():
    JobRun.objects.create(
        job="recompute-scores", trigger=Trigger.CRON, status=Status.FAILED, lock_id=482175,
        started_at=timezone.now(), errors=["OperationalError: lock timeout"], error_count=1,
    )  # fmt: skip
    with webhook_receiver() as (url, received):
        env = {**os.environ, "DATABASE_URL": database_url(), "JOBS_ALERT_WEBHOOK_URL": url}
        checks = [subprocess.Popen([sys.executable, "manage.py", "job_health"], cwd=ROOT, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(5)]  # fmt: skip
        outputs = [check.communicate(timeout=60) for check in checks]
    assert [check.returncode for check in checks] == [1] * 5, outputs
    assert "health: failing (GET /api/jobs/health answers 503)" in outputs[0][0]
    assert "alerts: a JSON POST to 127.0.0.1" in outputs[0][0] and "secret-token" not in outputs[0][0]
    assert [(body["job"], body["verdict"]) for body in received] == [("recompute-scores", "failing")]
    assert received[0]["reason"] == "OperationalError: lock timeout"
