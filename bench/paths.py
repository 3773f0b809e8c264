"""Benchmark the framework's all-day paths against PostgreSQL: a skipped run, health, the overview, a run's fixed cost.

    python -m bench.paths [--runs 300000] [--small 30000]

Seeds a database of its own (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/noshow_bench;
created if missing; only its jobs tables are emptied and seeded) with a ledger of --runs job runs, set-based,
at the rates of a busy deployment (below), then measures in one run, on a ledger of --small runs and again on
one of --runs (the same rates over a tenth of the time, so a path that grows with the ledger shows it):

1. over HTTP, gunicorn (1 worker) on loopback, the requests interleaved so the machine's load hits them alike:
   - a 401 (wrong secret): Django answering without the database, the baseline;
   - a skipped run of recompute-scores (its lock held by another session), target 10 ms median;
   - the health endpoint, target 50 ms median;
   - the jobs overview (admin/jobs/, logged in), target 150 ms median, beside the auth app's admin page
     (the same admin machinery, no ledger) as its baseline;
   each with connections kept open (the project's default: 60 s, checked before each reuse) and with a new
   database connection per request (`?conn_max_age=0` on DATABASE_URL, Django's own default);
2. in this process: a run's fixed cost, `run_job()` of a job with nothing to do, target 20 ms, beside the SQL
   floor of a recorded, locked run (INSERT, BEGIN, lock, UPDATE, COMMIT over a bare psycopg connection);
3. the round trips of each path (statements, BEGIN and COMMIT, as Django sends them; the connection's own
   start-up not counted).

The ledger (90 days at --runs 300000; 9 days at 30000): expire-offers every 5 minutes with a skipped duplicate
delivery for one call in ten and a failure now and then; resolve-outcomes, recompute-scores and prune-job-runs
daily, with a weekly full pass, a daily dry run and ten runs narrowed to one shop a day; evaluate-scores weekly
(every scheduled job on time: the steady state); and offer-loop, called by the app about every 30 s, nine
calls in ten for one shop, the whole-work calls failing for the last 7 days (so its last success is old and its
last real run hides behind thousands of narrowed ones).

Prints a table and writes it to bench/results-paths.md (or --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.common import create_database, wait_for

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/noshow_bench"
SECRET = "bench-secret"
HELD_LOCK = 482175  # recompute-scores: its lock is held by another session while the skips are timed
NOOP_LOCK = 482199
PROXIED = {"X-Forwarded-Proto": "https"}  # as Vercel's proxy says: the admin redirects plain HTTP
TARGETS_MS = {"skip": 10.0, "health": 50.0, "overview": 150.0, "fixed": 20.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300_000, help="job runs in the large ledger")
    parser.add_argument("--small", type=int, default=30_000, help="job runs in the small ledger")
    parser.add_argument("--requests", type=int, default=200, help="skipped runs, 401s and runs timed per size")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results-paths.md")
    args = parser.parse_args()

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    env = {**os.environ, "DATABASE_URL": url, "CRON_SECRET": SECRET, "DEBUG": "false", "SECRET_KEY": "bench",
           "ALLOWED_HOSTS": "127.0.0.1", "JOBS_ALERT_EMAILS": "", "JOBS_ALERT_WEBHOOK_URL": ""}  # fmt: skip
    create_database(url)
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    declare_noop()

    sizes = []
    for runs in (args.small, args.runs):
        print(f"seeding a ledger of {runs:,} runs ...", flush=True)
        started = time.perf_counter()
        days = seed(url, runs)
        print(f"  seeded {days} days in {time.perf_counter() - started:.1f} s", flush=True)
        cookie = login()
        counts = round_trips(url, cookie)
        fixed = measure_fixed(url, args.requests)
        http = {mode: measure_http(env, url, mode, cookie, args.requests) for mode in ("new", "persistent")}
        sizes.append({"runs": runs, "days": days, "counts": counts, "fixed": fixed, "http": http})
    report = render(sizes, args.requests)
    print(report)
    args.out.write_text(report)
    print(f"written to {args.out}")


# The ledger ----------------------------------------------------------------------------------------------------

# (job, trigger, first offset, step, params, status, counters, real) generators, in SQL over generate_series:
# every row's started_at is `now` minus an offset; `k` numbers the calls, newest first.
LEDGER = """
CREATE TEMP TABLE seed ON COMMIT DROP AS
WITH base AS (SELECT date_trunc('minute', now()) - make_interval(mins => extract(minute FROM now())::int % 5) AS five,
                     date_trunc('day', now()) AS today)
-- expire-offers: every 5 minutes, 7 s late as Vercel starts them; one call in 500 fails
SELECT 'expire-offers' AS job, 'cron' AS trigger, five - k * interval '5 minutes' + interval '7 seconds' AS at,
       CASE WHEN k % 500 = 499 THEN 'failed' ELSE 'succeeded' END AS status,
       jsonb_build_object('limit', 200) AS params, '{"total": 0, "expired": 0, "offered": 0}'::jsonb AS counters,
       true AS real, '' AS held_by
  FROM base, generate_series(0, %(days)s * 288 - 1) AS k
UNION ALL  -- one call in ten delivered twice: the second finds the first's lock held
SELECT 'expire-offers', 'cron', five - k * interval '5 minutes' + interval '7.4 seconds', 'skipped',
       jsonb_build_object('limit', 200), '{}', true, 'run #1'
  FROM base, generate_series(0, %(days)s * 288 - 1, 10) AS k
UNION ALL
SELECT 'resolve-outcomes', 'cron', today - k * interval '1 day' + interval '7 seconds', 'succeeded', '{}',
       '{"total": 120, "resolved": 110, "skipped": 0, "backfilled": 10, "remaining": 0}', true, ''
  FROM base, generate_series(0, %(days)s - 1) AS k
UNION ALL
SELECT 'recompute-scores', 'cron', today - k * interval '1 day' + interval '2 hours 7 seconds', 'succeeded', '{}',
       '{"total": 1000, "dirty": 1000, "changed": 340, "full_pass": 0, "remaining": 0}', true, ''
  FROM base, generate_series(0, %(days)s - 1) AS k
UNION ALL  -- the weekly full pass
SELECT 'recompute-scores', 'cron', today - k * interval '1 day' + interval '3 hours 7 seconds', 'succeeded',
       '{"full": true}', '{"total": 100000, "dirty": 100000, "changed": 0, "full_pass": 1, "remaining": 0}', true, ''
  FROM base, generate_series(0, %(days)s - 1, 7) AS k
UNION ALL  -- a dry run a day, by staff
SELECT 'recompute-scores', 'admin', today - k * interval '1 day' + interval '10 hours', 'succeeded',
       '{"dry_run": true}', '{"total": 1000, "full_pass": 0, "remaining": 0}', false, ''
  FROM base, generate_series(0, %(days)s - 1) AS k
UNION ALL  -- ten runs a day narrowed to one shop
SELECT 'recompute-scores', 'admin',
       today - (k / 10) * interval '1 day' + interval '11 hours' + (k % 10) * interval '1 minute', 'succeeded',
       jsonb_build_object('shop', md5(k::text)::uuid::text), '{"total": 100, "full_pass": 0}', false, ''
  FROM base, generate_series(0, %(days)s * 10 - 1) AS k
UNION ALL  -- weekly, on Mondays
SELECT 'evaluate-scores', 'cron', date_trunc('week', now()) - k * interval '7 days' + interval '5 hours 7 seconds',
       'succeeded', '{}', '{"shops": 50, "customers": 100000, "appointments": 250000}', true, ''
  FROM base, generate_series(0, %(days)s / 7) AS k
UNION ALL
SELECT 'prune-job-runs', 'cron', today - k * interval '1 day' + interval '4 hours 30 minutes 7 seconds', 'succeeded',
       '{}', '{"deleted": 3000, "remaining": 0, "messages_deleted": 0}', true, ''
  FROM base, generate_series(0, %(days)s - 1) AS k
"""

OFFER_LOOP = """
INSERT INTO seed
SELECT 'offer-loop', 'internal', now() - interval '30 seconds' - (k::float / %(count)s) * %(days)s * interval '1 day',
       CASE WHEN k % 10 <> 0 THEN 'succeeded'
            WHEN k::float / %(count)s * %(days)s < 7 THEN 'failed' ELSE 'succeeded' END,
       CASE WHEN k % 10 <> 0 THEN jsonb_build_object('shop', md5((k % 97)::text)::uuid::text, 'limit', 200)
            ELSE jsonb_build_object('limit', 200) END,
       '{"total": 3, "offered": 2, "exhausted": 1, "skipped": 0, "remaining": 0}', k % 10 = 0, ''
  FROM generate_series(0, %(count)s - 1) AS k
"""


def seed(url: str, runs: int) -> int:
    """Empty the jobs tables and write a ledger of `runs` runs ending now, in a few statements. Returns its days."""
    days = max(1, round(90 * runs / 300_000))
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE jobs_jobrun, jobs_jobalert, jobs_outboxmessage, jobs_joblease RESTART IDENTITY")
        conn.execute(LEDGER.replace("%(days)s", str(days)))
        others = scalar(conn, "SELECT count(*) FROM seed WHERE at <= now()")
        count = runs - others
        if count < 0:
            sys.exit(f"a ledger of {runs:,} runs is smaller than a day of the scheduled jobs' runs ({others:,})")
        conn.execute(OFFER_LOOP.replace("%(count)s", str(count)).replace("%(days)s", str(days)))
        has_real = conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = 'jobs_jobrun' AND column_name = 'real'"
        ).fetchone()
        real = ", real" if has_real else ""
        conn.execute(
            f"""
            INSERT INTO jobs_jobrun (job, trigger, status, started_at, finished_at, duration_ms, params, counters,
                                     errors, error_count, traceback, lock_id, origin, held_by, held{real})
            SELECT job, trigger, status, at, at + interval '80 milliseconds', 80,
                   params || jsonb_build_object('now', to_char(at, 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'), 'lock_id', l.id),
                   CASE status WHEN 'skipped' THEN '{{}}' ELSE counters END,
                   CASE status WHEN 'failed' THEN '["RuntimeError: the bench says so"]' ELSE '[]' END::jsonb,
                   (status = 'failed')::int, '', l.id, 'bench', held_by, ''{real}
              FROM seed JOIN (VALUES ('resolve-outcomes', 482173), ('expire-offers', 482174),
                                     ('recompute-scores', 482175), ('offer-loop', 482176),
                                     ('prune-job-runs', 482177), ('evaluate-scores', 482181)) AS l (name, id)
                                  ON l.name = seed.job
             WHERE at <= now() ORDER BY at
            """
        )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        # Every table, the domain's too (the backlogs are read on every health request): as autovacuum would
        # have (it may be off: it is on the bench machine this was written on). A queue of marks emptied by the
        # last recompute bench holds its 880,000 deleted rows until then, and each count of it reads them.
        conn.execute("VACUUM ANALYZE")
        total = scalar(conn, "SELECT count(*) FROM jobs_jobrun")
    if total != runs:
        sys.exit(f"seeded {total:,} runs, not {runs:,}")
    return days


def scalar(conn: psycopg.Connection, sql: str, params: list[Any] | None = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


# The paths -----------------------------------------------------------------------------------------------------


def declare_noop() -> None:
    """A job with nothing to do, declared in this process only: what a run costs besides its work."""
    from jobs.context import Context, Result
    from jobs.registry import Job, register

    def noop(ctx: Context) -> Result:
        return Result({"total": 0})

    register(Job("bench-noop", NOOP_LOCK, noop, "Does nothing: the runner's fixed cost."))


def login() -> str:
    """A staff session (a superuser) for the overview: its cookie."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore

    user = User.objects.filter(username="bench").first() or User.objects.create_superuser("bench", "", "bench")
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def round_trips(url: str, cookie: str) -> dict[str, int]:
    """Statements each path sends (BEGIN and COMMIT included), through Django's test client in this process."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from jobs.models import Trigger
    from jobs.runner import run_job

    client = Client(HTTP_HOST="127.0.0.1")
    client.cookies.load(cookie)
    auth = {"Authorization": f"Bearer {SECRET}", **PROXIED}
    counts = {}
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [HELD_LOCK])
        client.get("/api/jobs/recompute-scores", headers=auth)  # warm
        with CaptureQueriesContext(connection) as skip:
            response = client.get("/api/jobs/recompute-scores", headers=auth)
        assert response.json().get("skipped") is True, response.content
        counts["skip"] = len(skip)
    for name, path in (("health", "/api/jobs/health"), ("overview", "/admin/jobs/"), ("auth page", "/admin/auth/")):
        client.get(path, headers=auth)
        with CaptureQueriesContext(connection) as queries:
            client.get(path, headers=auth)
        counts[name] = len(queries)
    run_job("bench-noop", trigger=Trigger.CLI)
    with CaptureQueriesContext(connection) as queries:
        run_job("bench-noop", trigger=Trigger.CLI)
    counts["fixed"] = len(queries)
    connection.close()
    return counts


def measure_fixed(url: str, runs: int) -> dict[str, float]:
    """A run with nothing to do through the runner, alternating with the SQL floor of a recorded, locked run."""
    from django.db import connection

    from jobs.models import Trigger
    from jobs.runner import run_job

    floor_sql = psycopg.connect(url, autocommit=True)
    took, floor = [], []
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    tick = os.sysconf("SC_CLK_TCK")

    def backend_cpu() -> float:
        fields = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    cpu_before, backend_before = time.process_time(), backend_cpu()
    for _ in range(runs):
        started = time.perf_counter()
        run = run_job("bench-noop", trigger=Trigger.CLI)
        took.append(time.perf_counter() - started)
        assert run.status == "succeeded", run.status
        started = time.perf_counter()
        run_id = scalar(
            floor_sql,
            "INSERT INTO jobs_jobrun (job, trigger, status, started_at, params, counters, errors, error_count,"
            " traceback, lock_id, origin, held_by, held) VALUES ('bench-floor', 'cli', 'running', now(), '{}', '{}',"
            " '[]', 0, '', %s, '', '', '') RETURNING id",
            [NOOP_LOCK],
        )
        with floor_sql.transaction():
            floor_sql.execute("SELECT pg_try_advisory_xact_lock(%s)", [NOOP_LOCK])
            floor_sql.execute(
                "UPDATE jobs_jobrun SET status = 'succeeded', finished_at = now(), duration_ms = 0 WHERE id = %s",
                [run_id],
            )
        floor.append(time.perf_counter() - started)
    # The CPU of this process (the runner's Python, and the floor's little) and of the runner's database backend.
    cpu = (time.process_time() - cpu_before + backend_cpu() - backend_before) / runs * 1000
    floor_sql.execute("DELETE FROM jobs_jobrun WHERE job = 'bench-floor'")
    floor_sql.close()
    connection.close()
    return {"fixed": statistics.median(took) * 1000, "floor": statistics.median(floor) * 1000, "cpu": cpu}


def measure_http(env: dict[str, str], url: str, mode: str, cookie: str, requests: int) -> dict[str, Any]:
    """Median latency of each path through gunicorn on loopback, the paths interleaved; with persistent
    connections also the CPU each request costs the worker and its PostgreSQL backend together (`cpu`)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Kept open as the project's settings keep them (checked before reuse), for an hour rather than 60 s: the CPU of
    # one request is read off the worker's one backend, which a reconnection would replace mid-batch.
    kept = "?conn_max_age=3600&application_name=bench-server"
    server_url = url + (kept if mode == "persistent" else "?conn_max_age=0")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "project.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        env={**env, "DATABASE_URL": server_url}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {SECRET}"}
    paths: dict[str, Callable[[], bytes]] = {
        "401": lambda: get(f"{base}/api/jobs/recompute-scores", {"Authorization": "Bearer wrong"}, 401),
        "skip": lambda: get(f"{base}/api/jobs/recompute-scores", auth, 200, b'"skipped": true'),
        "health": lambda: get(f"{base}/api/jobs/health", auth, None, b'"checkedAt"'),
        "overview": lambda: get(f"{base}/admin/jobs/", {"Cookie": cookie, **PROXIED}, 200, b"offer-loop"),
        "auth page": lambda: get(f"{base}/admin/auth/", {"Cookie": cookie, **PROXIED}, 200, b"Groups"),
    }
    every = {"401": 1, "skip": 1, "health": 2, "overview": 5, "auth page": 5}  # the slow pages less often
    timings: dict[str, list[float]] = {name: [] for name in paths}
    try:
        wait_for(port)
        with psycopg.connect(url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", [HELD_LOCK])
            for name in paths:  # warm the worker (imports, the first connection)
                paths[name]()
            for i in range(requests):
                for name, call in paths.items():
                    if i % every[name]:
                        continue
                    started = time.perf_counter()
                    call()
                    timings[name].append(time.perf_counter() - started)
            cpu = cpu_per_request(server.pid, holder, paths, every, requests) if mode == "persistent" else {}
    finally:
        server.terminate()
        server.wait(10)
    return {**{name: statistics.median(times) * 1000 for name, times in timings.items()}, "cpu": cpu}


def cpu_per_request(
    master: int, conn: psycopg.Connection, paths: dict[str, Callable[[], bytes]], every: dict[str, int], requests: int
) -> dict[str, float]:
    """The CPU time, in ms, one request of each path costs the gunicorn worker and its database backend together
    (their user and system time from /proc, over a batch of requests of that path). On an idle machine a request
    takes about that long; on a busy one its wall time also holds the time spent waiting for a core, which this
    leaves out. The database's own background work (WAL writer, checkpoints) is not counted."""
    (worker,) = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    backend = scalar(conn, "SELECT pid FROM pg_stat_activity WHERE application_name = 'bench-server'")
    tick = os.sysconf("SC_CLK_TCK")

    def used() -> float:
        fields = [Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split() for pid in (worker, backend)]
        return sum(int(f[11]) + int(f[12]) for f in fields) / tick  # utime and stime, in clock ticks

    cpu = {}
    for name, call in paths.items():
        batch = requests // every[name]
        before = used()
        for _ in range(batch):
            call()
        cpu[name] = (used() - before) / batch * 1000
    return cpu


def get(url: str, headers: dict[str, str], status: int | None, expect: bytes = b"") -> bytes:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            code, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        code, body = error.code, error.read()
    if (status is not None and code != status) or expect not in body:
        sys.exit(f"{url}: unexpected answer {code}: {body[:300]!r}")
    return body


# The report ----------------------------------------------------------------------------------------------------


def render(sizes: list[dict[str, Any]], requests: int) -> str:
    import django
    from django.db import connection

    pg = connection.cursor().connection.info.server_version
    small, large = sizes
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# The framework's all-day paths: skipped runs, health, the overview, a run's fixed cost",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average at the end {load}",
        f"- machine: {cpu()}, {os.cpu_count()} cores; PostgreSQL {pg // 10000}.{pg % 10000}, "
        f"Python {platform.python_version()}, Django {django.get_version()}",
        "- reproduce: `make bench` (or `python -m bench.paths`)",
        "",
        f"Medians of {requests} skipped runs and 401s, {requests // 2} health requests and {requests // 5} pages of "
        "each kind per ledger and connection mode, interleaved, through gunicorn (1 worker) on loopback; `x` is the "
        "ratio to the baseline measured in the same run. The targets are read on the large ledger with the "
        "project's settings (connections kept open and checked before reuse; for an hour here, not 60 s, so that one "
        "backend's CPU can be read); the column after shows the same "
        "path with a new connection per request (`?conn_max_age=0`). CPU is what one request costs the gunicorn "
        "worker and its PostgreSQL backend together (the large ledger, connections kept open): what it takes on an "
        "idle machine, where the wall time also holds the wait for a core.",
        "",
        f"| path | target | round trips | CPU ms | ms, {large['runs']:,} runs (x baseline) | within target | "
        f"ms, a new connection per request | ms, {small['runs']:,} runs | {large['runs']:,} / {small['runs']:,} "
        "runs |",
        "|---|---:|---:|---:|---:|:---:|---:|---:|---:|",
    ]

    def times(size: dict[str, Any], mode: str, name: str, baseline: str | None) -> str:
        took = size["http"][mode][name]
        return f"{took:.1f}" + (f" (x{took / size['http'][mode][baseline]:.1f})" if baseline else "")

    for name, label, baseline in (
        ("401", "401, answered without the database (baseline)", None),
        ("skip", "skipped run, its lock held by another session", "401"),
        ("health", "health endpoint", "401"),
        ("auth page", "an admin page without the ledger (baseline)", None),
        ("overview", "jobs overview", "auth page"),
    ):
        target = TARGETS_MS.get(name)
        kept = large["http"]["persistent"][name]
        lines.append(
            f"| {label} | {f'≤ {target:.0f} ms' if target else '-'} | {large['counts'].get(name, 0)} | "
            f"{large['http']['persistent']['cpu'][name]:.1f} | {times(large, 'persistent', name, baseline)} | "
            f"{('yes' if kept <= target else '**no**') if target else ''} | {times(large, 'new', name, baseline)} | "
            f"{times(small, 'persistent', name, baseline)} | {kept / small['http']['persistent'][name]:.2f} |"
        )
    fixed, floor = large["fixed"]["fixed"], large["fixed"]["floor"]
    lines += [
        f"| a run's fixed cost: `run_job()` of a job with nothing to do, in process | ≤ 20 ms | "
        f"{large['counts']['fixed']} | {large['fixed']['cpu']:.1f} | {fixed:.1f} (x{fixed / floor:.1f} the floor) | "
        f"{'yes' if fixed <= TARGETS_MS['fixed'] else '**no**'} | - | {small['fixed']['fixed']:.1f} | "
        f"{fixed / small['fixed']['fixed']:.2f} |",
        f"| floor of a run: INSERT its row, BEGIN, take the lock, UPDATE the row, COMMIT (bare psycopg) | - | 5 | - | "
        f"{floor:.1f} | | - | {small['fixed']['floor']:.1f} | {floor / small['fixed']['floor']:.2f} |",
        "",
        "Round trips are counted on the large ledger: statements, BEGIN and COMMIT, as Django sends them (with "
        "connections kept open, Django's check before reuse adds a `SELECT 1` per request; a new connection adds its "
        "start-up instead). The run's fixed cost is measured in process, its CPU that of the process and its database "
        "backend; it includes the alert check at the end of the run (every job's verdict, the outbox). The last "
        "column is the large ledger's time over the small one's: 1.00 means no growth.",
        "",
    ]
    return "\n".join(lines)


def cpu() -> str:
    return next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip


if __name__ == "__main__":
    main()
