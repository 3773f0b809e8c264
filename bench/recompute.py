"""Benchmark recompute-scores against PostgreSQL: the job, the SQL floor, a naive ORM loop.

    python -m bench.recompute [--customers N] [--naive-sample K]

Seeds a database of its own (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/noshow_bench; created if missing) with N
customers and 10N appointments in set-based SQL, then measures in one run:

1. the job, through the runner, in its own process (`manage.py recompute_scores`),
   so that its peak RSS is the job's;
2. the floor: one hand-written INSERT ... SELECT ... GROUP BY ... ON CONFLICT;
3. a naive per-customer ORM loop, on a sample, extrapolated to N;
4. the HTTP path: a skipped run (lock held) over loopback, median and p99.

All three use the job's own `now`, and their scores must agree row for row.
Prints a table and writes it to bench/results.md (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench.common import EMPTY, create_database, wait_for

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/noshow_bench"
SHOP_SIZE = 100  # customers per shop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--naive-sample", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=300, help="skipped HTTP runs to time")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md")
    parser.add_argument("--reseed", action="store_true", help="seed again even if the data is there")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the job and the floor; the median counts")
    parser.add_argument("--history-only", action="store_true", help="measure only the score history's cost")
    parser.add_argument(
        "--targets-only", action="store_true", help="measure only the full pass, the floor and the incremental run"
    )
    args = parser.parse_args()

    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "CRON_SECRET": "bench-secret",
        "DEBUG": "false",
        "SECRET_KEY": "bench",
        "ALLOWED_HOSTS": "127.0.0.1",
    }  # fmt: skip  (as in production: no debug cursor keeping every statement)
    create_database(url)
    run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], env)

    import django

    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()

    n = args.customers
    if args.reseed or not seeded(url, n):
        print(f"seeding {n:,} customers, {10 * n:,} appointments ...", flush=True)
        started = time.perf_counter()
        seed(url, n)
        print(f"  seeded in {time.perf_counter() - started:.1f} s", flush=True)
    else:
        print(f"reusing the seeded {n:,} customers, {10 * n:,} appointments (--reseed to start over)", flush=True)

    if args.history_only:
        print(render_history(measure_history(url, env, max(args.repeat, 7))))
        return
    jobs, floors = [], []
    for attempt in range(args.repeat):  # alternating, each from no scores at all; the median counts
        print(f"run {attempt + 1} of {args.repeat}: job, then floor", flush=True)
        clear_scores(url)
        jobs.append(measure_job(env))
        job_rows = fingerprint(url)
        clear_scores(url)
        floors.append(measure_floor(url, jobs[-1]["now"]))
        if fingerprint(url) != job_rows:
            sys.exit("the floor statement and the job disagree on the scores")
    job = {**median_of(jobs), "rss_mb": max(run["rss_mb"] for run in jobs)}
    floor = median_of(floors)
    now = jobs[-1]["now"]
    if not args.targets_only:  # on the scores of the last full pass, at its `now`
        naive = measure_naive(url, now, args.naive_sample, n)
        http = measure_http(env, args.requests)
    print("a day of activity, then an incremental run", flush=True)
    incremental = measure_incremental(url, env, args.repeat)
    if args.targets_only:
        print(render_targets(job, floor, incremental))
        return
    # 10 resolved appointments per customer, 1, and 1 booking (pending: it counts in no score)
    shapes = [(min(10_000, n), "no_show"), (min(100_000, n), "no_show"), (min(100_000, n), "pending")]
    triggers = [measure_triggers(url, max(args.repeat, 7), customers, outcome) for customers, outcome in shapes]

    print("the score history: full passes with and without its triggers", flush=True)
    history = measure_history(url, env, max(args.repeat, 7))
    report = (
        render(n, job, floor, naive, http, args.repeat)
        + render_targets(job, floor, incremental)
        + render_incremental(job, incremental, triggers)
    )
    report += render_history(history)
    print(report)
    save(args.out, n, report)
    print(f"written to {args.out}")


def clear_scores(url: str) -> None:
    """No scores, and nothing of the last method's writes left to flush."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE scoring_customerscore, scoring_scorechange")
        conn.execute("CHECKPOINT")


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]


def save(path: Path, n: int, report: str) -> None:
    """Keep one section per size in the results file, largest last; replace this size's section."""
    sections = {}
    if path.exists():
        for part in path.read_text().split("<!-- customers=")[1:]:
            size, _, text = part.partition(" -->\n")
            sections[int(size)] = text
    sections[n] = report
    path.write_text("".join(f"<!-- customers={size} -->\n{sections[size]}" for size in sorted(sections)))


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr}")
    return result


def seeded(url: str, n: int) -> bool:
    """The data is deterministic: the same counts mean the same data."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM scoring_customer), (SELECT count(*) FROM scoring_appointment)"
        ).fetchone()
    return row == (n, 10 * n)


def seed(url: str, n: int) -> None:
    """N customers in N/100 shops, 10N appointments over the past year and next 3 weeks, all in SQL."""
    shops = max(1, n // SHOP_SIZE)
    with psycopg.connect(url) as conn:
        conn.execute(EMPTY)
        conn.execute(
            "INSERT INTO scoring_shop (id, name, created_at) "
            "SELECT md5('shop' || i)::uuid, 'Shop ' || i, now() FROM generate_series(0, %s - 1) i",
            [shops],
        )
        conn.execute(
            "INSERT INTO scoring_customer (id, shop_id, name, email, phone, created_at) "
            "SELECT md5('customer' || i)::uuid, md5('shop' || (i %% %s))::uuid, 'Customer ' || i, '', '', now() "
            "FROM generate_series(0, %s - 1) i",
            [shops, n],
        )
        # Each appointment's customer, time and outcome come from hashes of its number: the same data every run.
        # History, not the day's changes: the first run is a full pass, so the triggers need not log it; and
        # valid by construction, so neither are its foreign keys checked (replica: no triggers fire at all).
        # The table's indexes are built after it is filled, as pg_dump's restore does: 10M rows inserted into
        # its eight indexes at once did not finish in 27 minutes. All in one transaction: a seed stopped midway
        # leaves the table as it was, indexes included.
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'scoring_appointment' AND indexname "
            "NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'scoring_appointment'::regclass)"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute(
            """
            INSERT INTO scoring_appointment (id, shop_id, customer_id, starts_at, ends_at, checked_in_at,
                                             cancelled_at, outcome, resolved_at, created_at)
            SELECT md5('appointment' || j)::uuid, md5('shop' || (c %% %(shops)s))::uuid,
                   md5('customer' || c)::uuid, starts_at, starts_at + interval '45 minutes',
                   CASE WHEN outcome = 'attended' THEN starts_at END,
                   CASE WHEN outcome = 'late_cancel' THEN starts_at - interval '3 hours'
                        WHEN outcome = 'cancelled' THEN starts_at - interval '3 days' END,
                   outcome,
                   CASE WHEN outcome <> 'pending' THEN starts_at + interval '2 hours' END,
                   starts_at - interval '7 days'
            FROM (
                SELECT j, c, starts_at,
                       CASE WHEN starts_at > now() - interval '1 day' THEN 'pending'
                            WHEN roll < 65 THEN 'attended' WHEN roll < 80 THEN 'no_show'
                            WHEN roll < 88 THEN 'late_cancel' WHEN roll < 96 THEN 'cancelled'
                            ELSE 'pending' END AS outcome
                FROM (
                    SELECT j, j %% %(n)s AS c,
                           date_trunc('hour', now()) - interval '365 days'
                             + ((hashtext('t' || j) & 2147483647) %% (386 * 24 * 4)) * interval '15 minutes'
                             AS starts_at,
                           (hashtext('o' || j) & 2147483647) %% 100 AS roll
                    FROM generate_series(0, 10 * %(n)s - 1) j
                ) drawn
            ) chosen
            """,
            {"shops": shops, "n": n},
        )
        for _, definition in indexes:
            conn.execute(definition)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


JOB = """
import json, resource, time, django
django.setup()
def cpu_seconds():  # this process's and its database backend's (same machine): steadier than the wall time
    from django.db import connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        stat = open(f"/proc/{cursor.fetchone()[0]}/stat").read().rsplit(")", 1)[1].split()
    own = resource.getrusage(resource.RUSAGE_SELF)
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK") + own.ru_utime + own.ru_stime
from jobs.models import Trigger
from jobs.runner import run_job
import os
from datetime import timedelta
import time_machine
from django.utils import timezone
ahead, params = float(os.environ.get("BENCH_DAYS_AHEAD", "0")), json.loads(os.environ.get("BENCH_PARAMS", "{}"))
cpu = cpu_seconds()  # (and the connection is open: as in a worker, where it stays open between requests)
with time_machine.travel(timezone.now() + timedelta(days=ahead), tick=True):
    started = time.perf_counter()
    run = run_job("recompute-scores", params, trigger=Trigger.CLI, origin="bench")
print(json.dumps({"seconds": time.perf_counter() - started, "status": run.status, "work_ms": run.duration_ms,
                  "now": run.params["now"], "total": run.counters.get("total"), "counters": run.counters,
                  "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "cpu": cpu_seconds() - cpu}))
"""


def measure_job(env: dict[str, str], *, full: bool = True, days_ahead: int = 0) -> dict[str, Any]:
    """The job through the runner, timed end to end (ledger writes and commit included), in a process
    of its own so that its peak RSS is the job's. A full pass, unless `full` is False; its clock moved
    `days_ahead` days on (time-machine), so that the window really slides."""
    extra = {"BENCH_PARAMS": json.dumps({"full": full}), "BENCH_DAYS_AHEAD": str(days_ahead)}
    command = [sys.executable, "-c", JOB]
    result = json.loads(run(command, {**env, "DJANGO_SETTINGS_MODULE": "project.settings", **extra}).stdout)
    if result["status"] != "succeeded":
        sys.exit(f"the job did not succeed: {result}")
    return {
        "seconds": result["seconds"],
        "work": result["work_ms"] / 1000,  # under the lock: the job's own work, without the ledger, commit, alerts
        "cpu": result["cpu"],
        "rss_mb": result["rss_kb"] / 1024,
        "now": datetime.fromisoformat(result["now"]),
        "rows": result["total"],
        "counters": result["counters"],
    }


def fingerprint(url: str, *, with_time: bool = True, conn: psycopg.Connection | None = None) -> str:
    """An md5 of every score row (as `conn` sees them, if given); `computed_at` (the run that last changed the row)
    left out on request."""
    computed_at = ", computed_at" if with_time else ""
    with psycopg.connect(url) if conn is None else nullcontext(conn) as connection:
        row = connection.execute(
            "SELECT md5(string_agg(concat_ws(',', customer_id, shop_id, score, tier, attended, no_shows, "
            f"late_cancels, cancellations, last_appointment_at, window_days{computed_at}), ';' "
            "ORDER BY customer_id)) FROM scoring_customerscore"
        ).fetchone()
    return str(row[0] if row else "")


ACTIVITY = [
    # a third of the day's customers booked, came and were resolved yesterday
    """
    INSERT INTO scoring_appointment (id, shop_id, customer_id, starts_at, ends_at, checked_in_at, outcome,
                                     resolved_at, created_at)
    SELECT gen_random_uuid(), shop_id, id, %(yesterday)s, %(yesterday)s + interval '1 hour', %(yesterday)s,
           'attended', %(yesterday)s + interval '2 hours', %(yesterday)s
    FROM scoring_customer TABLESAMPLE BERNOULLI (%(third)s) REPEATABLE (1)
    RETURNING id
    """,
    # two thirds had an outcome corrected (attended <-> no-show)
    """
    UPDATE scoring_appointment SET outcome = CASE outcome WHEN 'attended' THEN 'no_show' ELSE 'attended' END
    WHERE id IN (
        SELECT DISTINCT ON (a.customer_id) a.id
        FROM scoring_appointment a
        JOIN (SELECT id FROM scoring_customer TABLESAMPLE BERNOULLI (%(two_thirds)s) REPEATABLE (2)) c
          ON c.id = a.customer_id
        WHERE a.outcome IN ('attended', 'no_show') AND a.starts_at >= %(start)s
        ORDER BY a.customer_id, a.starts_at DESC
    )
    RETURNING id
    """,
]
# The day undone, so that the seeded data is the same for the next bench (the triggers mark the customers: the
# next full pass rescores them anyway).
UNDO_ACTIVITY = [
    "DELETE FROM scoring_appointment WHERE id = ANY(%(ids)s)",
    "UPDATE scoring_appointment SET outcome = CASE outcome WHEN 'attended' THEN 'no_show' ELSE 'attended' END "
    "WHERE id = ANY(%(ids)s)",
]


# A score history as 90 such days leave it (about 3,300 changes a day: the run below writes as many): three changes
# per customer over the retention, all before the full pass's `now`, in the order they were appended. The next
# day's run prunes the oldest day's.
HISTORY = """
INSERT INTO scoring_scorechange (customer_id, at, score, tier, previous_score, previous_tier)
SELECT customer_id, at, 50, 'watch', 40, 'risky'
FROM (SELECT customer_id, %(now)s - %(kept)s * random() AS at FROM scoring_customerscore, generate_series(1, 3)) changes
ORDER BY at
"""


def measure_incremental(url: str, env: dict[str, str], repeat: int) -> dict[str, Any]:
    """A day of activity on 1% of the customers, and the window moving a day, then an incremental run;
    `repeat` times, each after a full pass from no scores and with a score history (HISTORY): the median counts.

    The incremental run's clock is a day after the full pass's (time-machine), so the window really
    slides a day and every customer with an appointment that crossed an edge that day is rescored.
    Autovacuum would have run during the day: the tables are vacuumed before the run. Its scores
    must equal, row for row, a full pass from nothing at the same `now` (the floor statement, rolled back).
    Before it, its own floor: the scores it will change, written in one statement (measure_changes).
    The day is undone after each run; after the last, three runs with nothing to do.
    """
    from django.conf import settings

    days = settings.RECOMPUTE_SCORES_WINDOW_DAYS
    runs, floors = [], []
    for attempt in range(repeat):
        clear_scores(url)
        full = measure_job(env)  # the full pass of the night before
        now = datetime.now(UTC)
        with psycopg.connect(url, autocommit=True) as conn:
            retention = timedelta(days=settings.JOB_RUNS_RETENTION_DAYS)
            history = conn.execute(HISTORY, {"now": full["now"], "kept": retention}).rowcount
            params = {"yesterday": now, "third": 1 / 3, "two_thirds": 2 / 3, "start": now - timedelta(days=days)}
            changed = [[row[0] for row in conn.execute(statement, params)] for statement in ACTIVITY]
            marked = conn.execute("SELECT count(DISTINCT customer_id) FROM scoring_customerchange").fetchone()
            conn.execute("VACUUM ANALYZE")
        floors.append(measure_changes(url, datetime.now(UTC) + timedelta(days=1)))
        runs.append(
            {**measure_job(env, full=False, days_ahead=1), "marked": marked[0] if marked else 0, "history": history}
        )
        kept = fingerprint(url, with_time=False)
        with psycopg.connect(url) as conn:
            at = runs[-1]["now"]
            conn.execute("TRUNCATE scoring_customerscore, scoring_scorechange")
            conn.execute(FLOOR, {"days": days, "now": at, "start": at - timedelta(days=days)})
            fresh = fingerprint(url, with_time=False, conn=conn)
            conn.rollback()  # the run's scores stay: the next run has nothing to do
        if fresh != kept:
            sys.exit("the incremental run's scores differ from a full recompute at the same now")
        if attempt == repeat - 1:
            idle = [measure_job(env, full=False, days_ahead=1) for _ in range(3)]
            if any(run["counters"]["full_pass"] for run in idle):
                sys.exit("a run with nothing to do was a full pass")
        with psycopg.connect(url, autocommit=True) as conn:
            for statement, ids in zip(UNDO_ACTIVITY, changed, strict=True):
                conn.execute(statement, {"ids": ids})
    return {**median_of(runs), "idle": median_of(idle), "runs": len(runs), "floor": median_of(floors)}


def measure_changes(url: str, at: datetime) -> dict[str, Any]:
    """The floor of an incremental run at `at`: the scores that will differ from the stored ones, computed
    beforehand, written in one statement (the score history's trigger included), after a checkpoint as the run
    is; rolled back. Leaves the tables vacuumed and checkpointed, as the run expects them."""
    from django.conf import settings

    days = settings.RECOMPUTE_SCORES_WINDOW_DAYS
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(CHANGES, {"days": days, "now": at, "start": at - timedelta(days=days)})
        conn.execute("ANALYZE changes")
        conn.execute("CHECKPOINT")
        backend = conn.info.backend_pid
        cpu = backend_cpu(backend)
        with conn.transaction(force_rollback=True):
            started = time.perf_counter()
            rows = conn.execute(WRITE_CHANGES).rowcount
            seconds = time.perf_counter() - started
        cpu = backend_cpu(backend) - cpu
        conn.execute("VACUUM scoring_customerscore, scoring_scorechange")  # what the rollback left behind
        conn.execute("CHECKPOINT")
    return {"seconds": seconds, "cpu": cpu, "rows": rows}


BULK_INSERT = """
INSERT INTO scoring_appointment (id, shop_id, customer_id, starts_at, ends_at, outcome, resolved_at, created_at)
SELECT gen_random_uuid(), shop_id, id, %(when)s + k * %(step)s, %(when)s + k * %(step)s + interval '1 hour',
       %(outcome)s::varchar, CASE WHEN %(outcome)s::varchar <> 'pending' THEN %(when)s + interval '30 days' END,
       %(when)s
FROM (SELECT id, shop_id FROM scoring_customer ORDER BY id LIMIT %(customers)s) c,
     generate_series(1, 100000 / %(customers)s) k
"""


def measure_triggers(url: str, repeat: int, customers: int, outcome: str) -> dict[str, Any]:
    """A bulk insert of 100,000 appointments for `customers` customers, with the triggers and without
    them, `repeat` pairs, alternating, each rolled back: the overhead is the median of the pairs' ratios
    (their range shows the noise of the machine). Then the time of the trigger's own statement in one more
    insert, as EXPLAIN ANALYZE reports it. Resolved appointments over the past days, or bookings
    (pending) over the coming ones."""
    ahead = outcome == "pending"
    when = datetime.now(UTC) + (timedelta(days=1) if ahead else -timedelta(days=30))
    params = {"when": when, "step": timedelta(days=1 if ahead else -1), "customers": customers, "outcome": outcome}
    pairs = []
    with psycopg.connect(url) as conn:
        for _ in range(repeat):
            pair = []
            for disabled in (False, True):
                if disabled:
                    conn.execute("ALTER TABLE scoring_appointment DISABLE TRIGGER USER")
                started = time.perf_counter()
                rows = conn.execute(BULK_INSERT, params).rowcount
                pair.append(time.perf_counter() - started)
                conn.rollback()
            pairs.append(pair)
        explained = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {BULK_INSERT}", params).fetchone()
        conn.rollback()
    plan = explained[0][0] if explained else {}
    ratios = sorted(with_ / without - 1 for with_, without in pairs)
    return {
        "with": statistics.median(pair[0] for pair in pairs), "without": statistics.median(pair[1] for pair in pairs),
        "overhead": statistics.median(ratios), "low": ratios[0], "high": ratios[-1], "pairs": repeat,
        "trigger_s": sum(trigger["Time"] for trigger in plan.get("Triggers", [])) / 1000,
        "customers": customers, "rows": rows, "outcome": outcome,
    }  # fmt: skip


COLUMNS = (
    "customer_id, shop_id, score, tier, attended, no_shows, late_cancels, cancellations, last_appointment_at, "
    "window_days, computed_at"
)
# Every customer's score at %(now)s, by hand, in one statement.
SCORED = """
SELECT id, shop_id, score,
       CASE WHEN a + n + l < 3 THEN 'new' WHEN score >= 80 THEN 'reliable'
            WHEN score >= 50 THEN 'watch' ELSE 'risky' END AS tier,
       a, n, l, c, last_at, %(days)s, %(now)s
FROM (
    SELECT id, shop_id, a, n, l, c, last_at,
           (400 * (a + 1) + 2 * a + 2 * n + l + 4) / (2 * (2 * a + 2 * n + l + 4)) AS score
    FROM (
        SELECT cu.id, cu.shop_id, coalesce(a, 0) AS a, coalesce(n, 0) AS n, coalesce(l, 0) AS l,
               coalesce(c, 0) AS c, last_at
        FROM scoring_customer cu
        LEFT JOIN (
            SELECT customer_id,
                   count(*) FILTER (WHERE outcome = 'attended') AS a,
                   count(*) FILTER (WHERE outcome = 'no_show') AS n,
                   count(*) FILTER (WHERE outcome = 'late_cancel') AS l,
                   count(*) FILTER (WHERE outcome = 'cancelled') AS c,
                   max(starts_at) AS last_at
            FROM scoring_appointment
            WHERE outcome <> 'pending' AND NOT forgiven AND starts_at >= %(start)s AND starts_at < %(now)s
            GROUP BY customer_id
        ) counts ON counts.customer_id = cu.id
    ) counted
) scored
"""
FLOOR = f"""
INSERT INTO scoring_customerscore ({COLUMNS}) {SCORED}
ON CONFLICT (customer_id) DO UPDATE SET
    shop_id = excluded.shop_id, score = excluded.score, tier = excluded.tier, attended = excluded.attended,
    no_shows = excluded.no_shows, late_cancels = excluded.late_cancels, cancellations = excluded.cancellations,
    last_appointment_at = excluded.last_appointment_at, window_days = excluded.window_days,
    computed_at = excluded.computed_at
"""
# The incremental run's floor: the scores that differ from the stored ones, computed beforehand (CHANGES, not timed),
# written in one statement (WRITE_CHANGES, timed), the score history's trigger included.
CHANGES = f"""
CREATE TEMPORARY TABLE changes ({COLUMNS}) AS
SELECT scored.* FROM ({SCORED}) scored JOIN scoring_customerscore stored ON stored.customer_id = scored.id
WHERE (stored.shop_id, stored.score, stored.tier, stored.attended, stored.no_shows, stored.late_cancels,
       stored.cancellations, stored.last_appointment_at)
      IS DISTINCT FROM
      (scored.shop_id, scored.score, scored.tier, scored.a, scored.n, scored.l, scored.c, scored.last_at)
"""
WRITE_CHANGES = f"""
UPDATE scoring_customerscore SET {", ".join(f"{column} = changes.{column}" for column in COLUMNS.split(", ")[1:])}
FROM changes WHERE scoring_customerscore.customer_id = changes.customer_id
"""


def measure_floor(url: str, now: datetime) -> dict[str, Any]:
    from django.conf import settings

    days = settings.RECOMPUTE_SCORES_WINDOW_DAYS
    with psycopg.connect(url) as conn:
        backend = conn.info.backend_pid
        cpu = backend_cpu(backend)
        started = time.perf_counter()
        cursor = conn.execute(FLOOR, {"days": days, "now": now, "start": now - timedelta(days=days)})
        conn.commit()
        seconds = time.perf_counter() - started
        cpu = backend_cpu(backend) - cpu
    return {"seconds": seconds, "rows": cursor.rowcount, "cpu": cpu}


def backend_cpu(pid: int) -> float:
    """CPU seconds a database backend (on this machine) has used."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def measure_naive(url: str, now: datetime, sample: int, n: int) -> dict[str, Any]:
    """What a typical first version does: per customer, load the window, count in Python, save."""
    from django.conf import settings
    from django.db import connection

    from scoring.models import Appointment, Customer, CustomerScore, Outcome
    from scoring.rules import score_for

    days = settings.RECOMPUTE_SCORES_WINDOW_DAYS
    start = now - timedelta(days=days)
    ids = list(Customer.objects.order_by("id").values_list("id", flat=True))
    chosen = random.Random(7).sample(ids, min(sample, len(ids)))
    expected = {
        row[0]: row[1:]
        for row in CustomerScore.objects.filter(customer_id__in=chosen).values_list(
            "customer_id", "score", "tier", "attended", "no_shows", "late_cancels", "cancellations"
        )
    }
    CustomerScore.objects.filter(customer_id__in=chosen).delete()
    started = time.perf_counter()
    for customer in Customer.objects.filter(id__in=chosen):
        appointments = Appointment.objects.filter(
            customer=customer, starts_at__gte=start, starts_at__lt=now, forgiven=False
        ).exclude(outcome=Outcome.PENDING)
        counts = Counter(a.outcome for a in appointments)
        last = max((a.starts_at for a in appointments), default=None)
        score, tier = score_for(counts[Outcome.ATTENDED], counts[Outcome.NO_SHOW], counts[Outcome.LATE_CANCEL])
        CustomerScore.objects.update_or_create(
            customer=customer,
            defaults={
                "shop_id": customer.shop_id, "score": score, "tier": tier, "attended": counts[Outcome.ATTENDED],
                "no_shows": counts[Outcome.NO_SHOW], "late_cancels": counts[Outcome.LATE_CANCEL],
                "cancellations": counts[Outcome.CANCELLED], "last_appointment_at": last, "window_days": days,
                "computed_at": now,
            },
        )  # fmt: skip
    seconds = time.perf_counter() - started
    connection.close()
    got = {
        row[0]: row[1:]
        for row in CustomerScore.objects.filter(customer_id__in=chosen).values_list(
            "customer_id", "score", "tier", "attended", "no_shows", "late_cancels", "cancellations"
        )
    }
    if got != expected:
        sys.exit("the naive loop and the job disagree on the scores")
    return {"seconds": seconds * n / len(chosen), "sample": len(chosen), "sample_seconds": seconds}


def measure_http(env: dict[str, str], requests: int) -> dict[str, float]:
    """Latency of a skipped run (the lock held by another session) through a real server on loopback."""
    from django.conf import settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "project.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = settings.DATABASES["default"]
    dsn = f"postgres://{url['USER']}@{url['HOST']}:{url['PORT'] or 5432}/{url['NAME']}"
    try:
        wait_for(port)
        timings = []
        with psycopg.connect(dsn, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(482175)")
            for _ in range(requests):
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/api/jobs/recompute-scores",
                    headers={"Authorization": "Bearer bench-secret"},
                )
                started = time.perf_counter()
                with urllib.request.urlopen(request, timeout=10) as response:
                    body = response.read()
                timings.append(time.perf_counter() - started)
                if b'"skipped": true' not in body:
                    sys.exit(f"expected a skipped run, got {body[:200]!r}")
    finally:
        server.terminate()
        server.wait(10)
    timings.sort()
    return {
        "median_ms": statistics.median(timings) * 1000,
        "p99_ms": timings[min(len(timings) - 1, int(len(timings) * 0.99))] * 1000,
        "requests": requests,
    }


def render(n: int, job: dict, floor: dict, naive: dict, http: dict, repeat: int) -> str:
    import django
    from django.db import connection

    pg = connection.cursor().connection.info.server_version
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    appointments = 10 * n
    rows = [
        ("recompute-scores job (runner)", job["seconds"], job["rss_mb"]),
        ("floor: one INSERT ... SELECT ... GROUP BY", floor["seconds"], None),
        (f"naive ORM loop (sample of {naive['sample']:,}, extrapolated)", naive["seconds"], None),
    ]
    lines = [
        f"# recompute-scores benchmark: {n:,} customers, {appointments:,} appointments",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        f"- PostgreSQL {pg // 10000}.{pg % 10000}, Python {platform.python_version()}, Django {django.get_version()}, "
        f"psycopg {psycopg.__version__}",
        "- reproduce: `make bench` (or `make bench N=10000`, `make bench N=1000000`)",
        "",
        "| method | wall s | appointments/s | time / floor | naive time / this | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, seconds, rss in rows:
        lines.append(
            f"| {name} | {seconds:.2f} | {appointments / seconds:,.0f} | {seconds / floor['seconds']:.2f} "
            f"| {naive['seconds'] / seconds:,.1f} | {f'{rss:.0f}' if rss else '-'} |"
        )
    lines += [
        "",
        f"Wall times are the median of {repeat} alternating runs of the job and the floor, each from an empty "
        "scores table after a CHECKPOINT. The job's is `run_job()` end to end: ledger rows, lock, batches and "
        "commit, in a process of its own; peak RSS is that process's maximum resident set, Python and Django "
        "included. "
        f"The naive loop ran on {naive['sample']:,} random customers in {naive['sample_seconds']:.2f} s and is "
        f"extrapolated linearly to {n:,}. All three produced the same scores (the floor and the job byte for "
        f"byte over every row, the naive loop on its sample), using the job's own `now`.",
        "",
        f"Skipped run over HTTP (lock held by another session), {http['requests']} sequential requests to "
        f"gunicorn (1 worker) on loopback: median {http['median_ms']:.1f} ms, p99 {http['p99_ms']:.1f} ms, "
        f"that is {http['median_ms'] / 1000 / job['seconds'] * 100:.2f} % of the job's wall time.",
        "",
    ]
    return "\n".join(lines)


def render_targets(job: dict, floor: dict, incremental: dict) -> str:
    """The figures issue 24 sets targets for, each against its baseline measured in the same run: the full pass
    against the floor statement (at most 1.15), the incremental run after a day against the full pass (at most
    1/20 = 0.05); end to end (the runner's ledger rows, lock, commit and alert check included) and under the lock
    (the job's own work)."""
    idle, changes = incremental["idle"], incremental["floor"]

    def row(figure: str, measured: float, baseline: str, base: float, target: float | None) -> str:
        ratio = measured / base
        verdict = "-" if target is None else f"at most {target:g}: {'met' if ratio <= target else 'NOT met'}"
        return f"| {figure} | {measured:.3f} | {baseline} | {base:.3f} | {ratio:.3f} | {verdict} |"

    return "\n".join(
        [
            "",
            "## Against the targets",
            "",
            "| figure | measured s | baseline (same run) | baseline s | ratio | target |",
            "|---|---:|---|---:|---:|---|",
            row("full pass from empty, end to end", job["seconds"], "the floor statement", floor["seconds"], 1.15),
            row("full pass from empty, the job's own work", job["work"], "the floor statement", floor["seconds"], 1.15),
            row("incremental run after a day, end to end", incremental["seconds"], "the full pass, end to end",
                job["seconds"], 0.05),
            row("incremental run after a day, the job's own work", incremental["work"], "the full pass, its own work",
                job["work"], 0.05),
            row("full pass from empty, CPU (the job's process and its backend)", job["cpu"],
                "the floor statement, CPU (its backend)", floor["cpu"], 1.15),
            row("incremental run after a day, CPU (the job's process and its backend)", incremental["cpu"],
                "the full pass, CPU", job["cpu"], 0.05),
            row("incremental run after a day, the job's own work", incremental["work"],
                f"its floor: the {changes['rows']:,} changed scores written in one statement", changes["seconds"],
                None),
            row("the incremental run's floor", changes["seconds"], "the full pass, its own work", job["work"], None),
            row("a run with nothing to do, end to end", idle["seconds"], "the full pass, end to end", job["seconds"],
                None),
            row("a run with nothing to do, the job's own work", idle["work"], "the full pass, its own work",
                job["work"], None),
            "",
            "End to end is `run_job()` in a process of its own, its connection already open (as in a worker), from "
            "the call to its return: the ledger rows, the lock, the commit and the alert check at the end included "
            "(the job framework's fixed cost; a process's first run also pays for its cold caches). The job's own "
            "work is the run's recorded duration, under the lock. CPU is the whole run's (the runner's part too), "
            "steadier than the wall time when other work shares the cores (at 10 ms ticks: coarse for the "
            "incremental run). The incremental run's floor is what any incremental method must write: the scores "
            "that differ from the stored ones, computed beforehand (not timed) and written in one UPDATE, the score "
            "history's trigger included, after a checkpoint as the run is (the first write of each page after a "
            "checkpoint logs the whole page); rolled back. The run finds a score history of "
            f"{incremental['history']:,} changes (see Incremental recompute). The run with nothing to do (median of 3) "
            "follows the "
            "incremental one a few seconds later: it shows the fixed cost, the framework's and the job's. The full "
            f"pass and the floor are the median of {incremental['runs']} alternating runs, the incremental run the "
            f"median of {incremental['runs']}, each after a full pass of its own.",
            "",
        ]
    )  # fmt: skip


def render_incremental(job: dict, incremental: dict, triggers: list[dict]) -> str:
    from django.conf import settings

    counters = incremental["counters"]
    return "\n".join(
        [
            "",
            "## Incremental recompute",
            "",
            "| method | wall s | time / full pass |",
            "|---|---:|---:|",
            f"| full pass from empty (the job above) | {job['seconds']:.2f} | 1.00 |",
            f"| incremental run after a day of activity | {incremental['seconds']:.2f} | "
            f"{incremental['seconds'] / job['seconds']:.3f} (1/{job['seconds'] / incremental['seconds']:.0f}) |",
            f"| then a run with nothing to do | {incremental['idle']['seconds']:.2f} | "
            f"{incremental['idle']['seconds'] / job['seconds']:.3f} |",
            "",
            f"The day: a new resolved appointment for a third of 1 % of the customers and a corrected outcome for "
            f"two thirds of 1 %, marking {incremental['marked']:,} customers, and the window moved one day. The run "
            f"rescored the {incremental['marked']:,} marked customers and slid the window of every other score "
            f"in one statement, changing {counters['changed']:,} scores in all (`dirty` {counters['dirty']:,}); "
            "its scores equal, row for row, a full recompute from nothing at the same `now`. The score history held "
            f"{incremental['history']:,} changes (three per customer over the {settings.JOB_RUNS_RETENTION_DAYS} days "
            "kept, about what as many days like this one leave); the run appended its own and pruned the oldest "
            "day's.",
            "",
            "| bulk insert | without the triggers, s | with them, s | trigger overhead (range) | "
            "the trigger's statement, s |",
            "|---|---:|---:|---:|---:|",
            *(
                f"| {t['rows']:,} {'bookings' if t['outcome'] == 'pending' else 'resolved appointments'} of "
                f"{t['customers']:,} customers | {t['without']:.3f} | {t['with']:.3f} | "
                f"{t['overhead']:+.1%} ({t['low']:+.1%} to {t['high']:+.1%}) | {t['trigger_s']:.3f} |"
                for t in triggers
            ),
            "",
            f"{triggers[0]['pairs']} pairs of inserts, with and without the triggers, alternating, each rolled "
            "back: medians, and the overhead is the median of the pairs' ratios (the range is the machine's "
            "noise). The trigger's statement is timed by EXPLAIN ANALYZE on one more insert; the rest of the "
            "cost is PostgreSQL keeping the inserted rows for it. The triggers are statement-level: one extra "
            "INSERT ... SELECT DISTINCT per statement, whatever its number of rows, which appends one row to "
            "`scoring_customerchange` (no key, no index) per customer with a resolved appointment in it; "
            "bookings (pending appointments) count in no score and append nothing.",
            "",
        ]
    )


HISTORY_TRIGGERS = ("scoring_score_changed",)


def history_triggers(url: str, *, enabled: bool) -> None:
    """Switch the trigger that writes the score history (migration scoring 0014) on or off."""
    with psycopg.connect(url, autocommit=True) as conn:
        for name in HISTORY_TRIGGERS:
            conn.execute(f"ALTER TABLE scoring_customerscore {'ENABLE' if enabled else 'DISABLE'} TRIGGER {name}")


def measure_history(url: str, env: dict[str, str], repeat: int) -> dict[str, Any]:
    """What the score history costs a full pass: `repeat` pairs, with its trigger and without it, alternating.
    Each pair from no scores at all (first scores: no history), then a full pass a day later (the weekly one: a
    row for each score that changed). The overhead is the median of the pairs' ratios of CPU time (the job's
    process and its database backend), and of wall time."""
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"new": [], "later": []}
    rows = {"new": 0, "later": 0}
    try:
        for attempt in range(repeat):
            pair: dict[str, dict[str, dict[str, float]]] = {"new": {}, "later": {}}
            for enabled in (True, False) if attempt % 2 == 0 else (False, True):  # each first in every other pair
                key = "with" if enabled else "without"
                history_triggers(url, enabled=enabled)
                clear_scores(url)
                pair["new"][key] = measure_job(env)
                written = history_rows(url)
                pair["later"][key] = measure_job(env, days_ahead=1)
                if enabled:
                    rows = {"new": written, "later": history_rows(url) - written}
            for shape in runs:
                runs[shape].append(pair[shape])
    finally:
        history_triggers(url, enabled=True)
    result: dict[str, Any] = {"pairs": repeat}
    for shape, measured in runs.items():
        result[shape] = {"rows": rows[shape]}
        for measure in ("cpu", "seconds"):
            ratios = sorted(run["with"][measure] / run["without"][measure] - 1 for run in measured)
            result[shape][measure] = {
                "with": statistics.median(run["with"][measure] for run in measured),
                "without": statistics.median(run["without"][measure] for run in measured),
                "overhead": statistics.median(ratios), "low": ratios[0], "high": ratios[-1],
            }  # fmt: skip
    return result


def history_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM scoring_scorechange").fetchone()
    return int(row[0]) if row else 0


def render_history(history: dict[str, Any]) -> str:
    shapes = [("new", "full pass from no scores (first scores are no change)"),
              ("later", "full pass a day later (the weekly one: a row per changed score)")]  # fmt: skip

    def cells(figures: dict[str, float]) -> str:
        return (
            f"{figures['without']:.2f} | {figures['with']:.2f} | "
            f"{figures['overhead']:+.1%} ({figures['low']:+.1%} to {figures['high']:+.1%})"
        )

    return "\n".join(
        [
            "",
            "## Score history",
            "",
            "| run | CPU s without the history | with it | overhead (range) | wall s without | with | "
            "overhead (range) | history rows written |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *(
                f"| {name} | {cells(history[shape]['cpu'])} | {cells(history[shape]['seconds'])} "
                f"| {history[shape]['rows']:,} |"
                for shape, name in shapes
            ),
            "",
            f"{history['pairs']} pairs of runs through the runner, with the history's trigger and without it, "
            "alternating (each first in every other pair): medians, and each overhead is the median of the pairs' "
            "ratios (the range is the machine's noise; the target is at most +10 %). CPU is the run's own, in the "
            "job's process and its database backend together: steadier than the wall time when other work shares "
            "the cores. The trigger is statement-level on PostgreSQL: one extra INSERT ... SELECT per statement "
            "that updates scores, appending a row for each score whose value or tier changed; the runs' pruning "
            "of the history is in both columns.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
