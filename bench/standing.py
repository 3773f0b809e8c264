"""Benchmark the standing endpoint and evaluate-scores against PostgreSQL.

    python -m bench.standing [--customers 1000000] [--appointments 1000000] [--requests 2000]

Seeds a database of its own (BENCH_STANDING_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/noshow_standing_bench; created if missing) in set-based SQL: N customers in
N/100 shops, a score for 95 % of them (the rest never scored), booking policies for half the shops, 1 % pinned,
1 % marked dirty and a day's change log (1 % of the customers); and M appointments over the past year for the
first M/10 customers, each customer with a hidden chance of coming (a planted signal). Then, in one run:

1. GET /api/customers/<uuid>/standing through gunicorn (2 workers) on loopback, one request at a time, for
   random customers: with a new connection per request (Django's default, `?conn_max_age=0` in DATABASE_URL),
   and with connections kept open (the project's default, 60 s); the baseline is a 401 (no secret) through the
   same server, which touches no database. p50, p95, p99.
2. The standing query alone, server side (EXPLAIN ANALYZE), for the same kind of customer.
3. evaluate-scores over all shops (`manage.py evaluate_scores`, the runner in a process of its own), against a
   floor: one GROUP BY customer over the same appointments. Median of 3.

Prints a table and writes it to bench/results-standing.md (or --out).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.common import EMPTY, create_database, wait_for
from bench.recompute import run

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/noshow_standing_bench"
SECRET = "bench-internal-secret"
SHOP_SIZE = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--appointments", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2000, help="requests per method")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the evaluation and its floor")
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results-standing.md")
    parser.add_argument("--part", choices=["all", "http", "evaluation"], default="all", help="for a quick look only")
    args = parser.parse_args()

    url = os.environ.get("BENCH_STANDING_DATABASE_URL", DEFAULT_URL)
    env = {**os.environ, "DATABASE_URL": url, "INTERNAL_SECRET": SECRET, "CRON_SECRET": "bench", "DEBUG": "true"}
    create_database(url)
    run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], env)
    n, m = args.customers, args.appointments
    if args.reseed or not seeded(url, n, m):
        print(f"seeding {n:,} customers and {m:,} appointments ...", flush=True)
        started = time.perf_counter()
        seed(url, n, m)
        print(f"  seeded in {time.perf_counter() - started:.1f} s", flush=True)
    else:
        print(f"reusing the seeded {n:,} customers and {m:,} appointments (--reseed to start over)", flush=True)

    rng = random.Random(1)
    ids = [customer_id(rng.randrange(n)) for _ in range(args.requests)]
    if args.part != "all":  # prints, writes nothing
        print(measure_http(env, url, ids) if args.part == "http" else measure_evaluation(env, url, args.repeat))
        return
    http_rows = measure_http(env, url, ids)
    server_ms = measure_query(url, ids[:200])
    print("evaluate-scores ...", flush=True)
    evaluation = measure_evaluation(env, url, args.repeat)
    report = render(n, m, args.requests, http_rows, server_ms, evaluation)
    print(report)
    args.out.write_text(report)
    print(f"written to {args.out}")


def customer_id(i: int) -> uuid.UUID:
    return uuid.UUID(hashlib.md5(f"customer{i}".encode()).hexdigest())


def seeded(url: str, n: int, m: int) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM scoring_customer), (SELECT count(*) FROM scoring_appointment)"
        ).fetchone()
    return row == (n, m)


def seed(url: str, n: int, m: int) -> None:
    shops, scored_customers = max(1, n // SHOP_SIZE), max(1, m // 10)
    with psycopg.connect(url) as conn:
        conn.execute(EMPTY)
        for table in ("scoring_customer", "scoring_appointment", "scoring_customerscore"):
            conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")  # history: the marks are seeded below
        params = {"n": n, "m": m, "shops": shops, "scored": scored_customers}
        for statement in SEED:
            conn.execute(statement, params)
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table in ("scoring_customer", "scoring_appointment", "scoring_customerscore"):
            conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


SEED = [
    "INSERT INTO scoring_shop (id, name, created_at) "
    "SELECT md5('shop' || i)::uuid, 'Shop ' || i, now() FROM generate_series(0, %(shops)s - 1) i",
    # 1 % pinned (a tenth of them to a pin that has ended)
    """INSERT INTO scoring_customer (id, shop_id, name, email, phone, created_at, pinned_tier, pinned_until)
       SELECT md5('customer' || i)::uuid, md5('shop' || (i %% %(shops)s))::uuid, 'Customer ' || i, '', '', now(),
              CASE WHEN i %% 100 = 7 THEN 'reliable' ELSE '' END,
              CASE WHEN i %% 100 = 7 THEN current_date + (CASE WHEN i %% 1000 = 7 THEN -1 ELSE 30 END) END
       FROM generate_series(0, %(n)s - 1) i""",
    """INSERT INTO scoring_adjustment (at, by, action, shop_id, customer_id, tier, until, reason)
       SELECT now(), 'staff', 'pin', shop_id, id, pinned_tier, pinned_until, 'a regular; the no-shows were ours'
       FROM scoring_customer WHERE pinned_tier <> ''""",
    # Half the shops changed two tiers' policy.
    """INSERT INTO scoring_bookingpolicy (shop_id, tier, requirement, deposit_percent)
       SELECT md5('shop' || i)::uuid, 'watch', 'deposit', 20 FROM generate_series(0, %(shops)s - 1, 2) i
       UNION ALL
       SELECT md5('shop' || i)::uuid, 'risky', 'no_online_booking', NULL FROM generate_series(0, %(shops)s - 1, 2) i""",
    # Each appointment's customer, time and outcome come from hashes of its number; each of the first M/10
    # customers has a hidden chance of coming, from 30 to 100 %.
    """INSERT INTO scoring_appointment (id, shop_id, customer_id, starts_at, ends_at, checked_in_at, cancelled_at,
                                        outcome, resolved_at, created_at, forgiven)
       SELECT md5('appointment' || j)::uuid, md5('shop' || (c %% %(shops)s))::uuid, md5('customer' || c)::uuid,
              starts_at, starts_at + interval '45 minutes',
              CASE WHEN outcome = 'attended' THEN starts_at END,
              CASE WHEN outcome = 'late_cancel' THEN starts_at - interval '3 hours'
                   WHEN outcome = 'cancelled' THEN starts_at - interval '3 days' END,
              outcome, CASE WHEN outcome <> 'pending' THEN starts_at + interval '2 hours' END,
              starts_at - interval '7 days', false
       FROM (
           SELECT j, c, starts_at,
                  CASE WHEN starts_at > now() - interval '1 day' THEN 'pending'
                       WHEN roll < chance THEN 'attended'
                       WHEN roll < chance + (100 - chance) / 2 THEN 'no_show'
                       WHEN roll < chance + 4 * (100 - chance) / 5 THEN 'late_cancel'
                       ELSE 'cancelled' END AS outcome
           FROM (
               SELECT j, j %% %(scored)s AS c,
                      30 + (hashtext('chance' || (j %% %(scored)s)) & 2147483647) %% 71 AS chance,
                      date_trunc('hour', now()) - interval '365 days'
                        + ((hashtext('t' || j) & 2147483647) %% (365 * 24 * 4)) * interval '15 minutes' AS starts_at,
                      (hashtext('o' || j) & 2147483647) %% 100 AS roll
               FROM generate_series(0, %(m)s - 1) j
           ) drawn
       ) chosen""",
    # A score for 95 % of the customers: the rule's, on their appointments (none: 50, new).
    """INSERT INTO scoring_customerscore (customer_id, shop_id, score, tier, attended, no_shows, late_cancels,
                                          cancellations, last_appointment_at, window_days, computed_at)
       SELECT cu.id, cu.shop_id, (400 * (a + 1) + 2 * a + 2 * n + l + 4) / (2 * (2 * a + 2 * n + l + 4)),
              CASE WHEN a + n + l < 3 THEN 'new'
                   WHEN (400 * (a + 1) + 2 * a + 2 * n + l + 4) / (2 * (2 * a + 2 * n + l + 4)) >= 80 THEN 'reliable'
                   WHEN (400 * (a + 1) + 2 * a + 2 * n + l + 4) / (2 * (2 * a + 2 * n + l + 4)) >= 50 THEN 'watch'
                   ELSE 'risky' END,
              a, n, l, c, last_at, 180, now() - interval '3 days'
       FROM scoring_customer cu
       LEFT JOIN LATERAL (
           SELECT count(*) FILTER (WHERE outcome = 'attended') AS a, count(*) FILTER (WHERE outcome = 'no_show') AS n,
                  count(*) FILTER (WHERE outcome = 'late_cancel') AS l,
                  count(*) FILTER (WHERE outcome = 'cancelled') AS c, max(starts_at) AS last_at
           FROM scoring_appointment ap
           WHERE ap.customer_id = cu.id AND ap.outcome <> 'pending' AND ap.starts_at >= now() - interval '180 days'
       ) counted ON true
       WHERE (hashtext('unscored' || cu.name) & 2147483647) %% 100 >= 5""",
    "INSERT INTO scoring_scoringstate (last_now, last_full_at, window_days, rule_version) "
    "VALUES (now() - interval '2 hours', now() - interval '3 days', 180, 1)",
    # 1 % marked and not yet rescored; a day's change log, 1 % of the customers (it has no index: it is scanned).
    "INSERT INTO scoring_dirtycustomer (customer_id) "
    "SELECT md5('customer' || i)::uuid FROM generate_series(0, %(n)s - 1, 100) i",
    "INSERT INTO scoring_customerchange (customer_id) "
    "SELECT md5('customer' || i)::uuid FROM generate_series(50, %(n)s - 1, 100) i",
]


def percentile(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p))]


def measure_http(env: dict[str, str], url: str, ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """Three methods through the same kind of server, each with its own server, all in this run."""
    rows = []
    methods = [
        ("baseline: 401 without the secret (no database)", url, {}),
        ("standing, a new database connection per request (`?conn_max_age=0`, Django's default)",
         url + "?conn_max_age=0", {"X-Internal-Secret": SECRET}),
        ("standing, connections kept open (the default here: 60 s)", url, {"X-Internal-Secret": SECRET}),
    ]  # fmt: skip
    for name, database_url, headers in methods:
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "project.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            env={**env, "DATABASE_URL": database_url}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(port)
            expected = 401 if not headers else 200
            for customer in ids[:100]:  # warm up: imports, the first connections
                get(port, customer, headers, expected)
            timings = sorted(get(port, customer, headers, expected) for customer in ids)
        finally:
            server.terminate()
            server.wait(10)
        rows.append({"name": name, "p50": statistics.median(timings), "p95": percentile(timings, 0.95),
                     "p99": percentile(timings, 0.99), "requests": len(timings)})  # fmt: skip
        print(f"  {name}: p50 {rows[-1]['p50']:.1f} ms, p95 {rows[-1]['p95']:.1f} ms", flush=True)
    return rows


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, customer: uuid.UUID, headers: dict[str, str], expected: int) -> float:
    """One request on a new connection (gunicorn's sync workers close each), in milliseconds."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", f"/api/customers/{customer}/standing", headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != expected:
        sys.exit(f"expected {expected}, got {response.status}: {body[:300]!r}")
    return elapsed


def measure_query(url: str, ids: list[uuid.UUID]) -> float:
    """The standing query's execution time in PostgreSQL (EXPLAIN ANALYZE), median over these customers, ms."""
    os.environ.update({"DATABASE_URL": url, "DEBUG": "true", "INTERNAL_SECRET": SECRET})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from scoring.standing import standing

    now = datetime.now(UTC)
    with CaptureQueriesContext(connection) as captured:
        standing(ids[0], now)
    if len(captured.captured_queries) != 1:
        sys.exit(f"the standing took {len(captured.captured_queries)} queries, not 1")
    times = []
    with psycopg.connect(url) as conn:
        for customer in ids:
            with CaptureQueriesContext(connection) as captured:
                standing(customer, now)
            sql = captured.captured_queries[0]["sql"]
            plan = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}").fetchone()[0][0]  # type: ignore[index]
            times.append(plan["Planning Time"] + plan["Execution Time"])
    return statistics.median(times)


FLOOR = """
    SELECT count(*) FROM (
        SELECT customer_id, count(*) FILTER (WHERE starts_at >= now() - interval '90 days')
        FROM scoring_appointment
        WHERE starts_at >= now() - interval '270 days' AND starts_at < now()
          AND outcome IN ('attended', 'no_show', 'late_cancel') AND NOT forgiven
        GROUP BY customer_id
    ) counted
"""


def measure_evaluation(env: dict[str, str], url: str, repeat: int) -> dict[str, Any]:
    """The job through the runner in a process of its own, alternating with the floor; the job's time is the run's
    duration as the runner records it (the work under the lock: the statement, and storing a row per shop)."""
    jobs, walls, floors, output = [], [], [], ""
    for _ in range(repeat):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM scoring_evaluation")
        started = time.perf_counter()
        output = run([sys.executable, "manage.py", "evaluate_scores"], env).stdout
        walls.append(time.perf_counter() - started)
        with psycopg.connect(url) as conn:
            (duration_ms,) = conn.execute(
                "SELECT duration_ms FROM jobs_jobrun WHERE job = 'evaluate-scores' ORDER BY id DESC LIMIT 1"
            ).fetchone() or (0,)
            jobs.append(duration_ms / 1000)
            started = time.perf_counter()
            conn.execute(FLOOR).fetchone()
            floors.append(time.perf_counter() - started)
    with psycopg.connect(url) as conn:
        shops, auc = conn.execute(
            "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY auc) FROM scoring_evaluation"
        ).fetchone() or (0, None)
    return {"job": statistics.median(jobs), "wall": statistics.median(walls), "floor": statistics.median(floors),
            "output": output.strip(), "shops": shops, "auc": auc}  # fmt: skip


def render(n: int, m: int, requests: int, rows: list[dict[str, Any]], server_ms: float, ev: dict[str, Any]) -> str:
    import django

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        version = (conn.execute("SELECT version()").fetchone() or ("?",))[0].split(",")[0]
    base = rows[0]["p95"]
    lines = [
        f"# Standing endpoint and evaluate-scores: {n:,} customers, {m:,} appointments",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores",
        f"- {version}, Python {platform.python_version()}, Django {django.get_version()}",
        "- reproduce: `make bench` (this part: `python -m bench.standing`)",
        "",
        f"`GET /api/customers/<uuid>/standing`, {requests:,} random customers one at a time, gunicorn with 2 sync "
        "workers on loopback, a new TCP connection per request (target: p95 under 20 ms, one query):",
        "",
        "| method | p50 ms | p95 ms | p99 ms | p95 / baseline |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {row['name']} | {row['p50']:.1f} | {row['p95']:.1f} | {row['p99']:.1f} | {row['p95'] / base:.2f} |"
            for row in rows
        ),
        "",
        f"The one query (checked: 1 per standing) takes {server_ms:.2f} ms in PostgreSQL (planning and execution, "
        "median of 200 customers, EXPLAIN ANALYZE).",
        "",
        f"evaluate-scores over every shop ({ev['shops']:,} shops, {m:,} appointments), median of 3:",
        "",
        "| method | wall s | time / floor |",
        "|---|---:|---:|",
        f"| evaluate-scores run (the runner's duration: one statement, {ev['shops']:,} rows stored) | "
        f"{ev['job']:.2f} | {ev['job'] / ev['floor']:.2f} |",
        f"| floor: one GROUP BY customer over the same appointments | {ev['floor']:.2f} | 1.00 |",
        f"| `manage.py evaluate_scores`, the whole process (Python and Django start-up included) | {ev['wall']:.2f} | "
        f"{ev['wall'] / ev['floor']:.2f} |",
        "",
        f"Median AUC over the shops: {ev['auc']:.3f} (the planted signal: each customer's chance of coming is "
        "30-100 %, about 10 appointments a year).",
        "",
        "```",
        ev["output"],
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
