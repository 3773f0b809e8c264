"""Benchmark resolve-outcomes against PostgreSQL: the job without a limit, against one plain UPDATE.

    python -m bench.outcomes [--appointments N] [--repeat R]

Seeds a database of its own (BENCH_OUTCOMES_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/noshow_outcomes_bench; created if missing) with N due, pending
appointments (a quarter of each outcome, 1,000 customers), then measures in one run, R times,
alternating, each from all N pending after a VACUUM and a CHECKPOINT:

1. the job as the daily cron calls it (no limit), through the runner, in a process of its own
   (`run_job()`: ledger rows, lock, batches, commit), so that its peak RSS is the job's;
2. the baseline: one plain UPDATE of every due row with the same outcome rule, in one transaction
   with the runner's constraint setting.

Both must leave the same outcome on every row. Prints a table and writes it to
bench/results-outcomes.md (or --out), one section per N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.common import EMPTY, create_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/noshow_outcomes_bench"
CUSTOMERS = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appointments", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the job and the baseline; the median counts")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results-outcomes.md")
    args = parser.parse_args()

    url = os.environ.get("BENCH_OUTCOMES_DATABASE_URL", DEFAULT_URL)
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "true", "DJANGO_SETTINGS_MODULE": "project.settings"}
    create_database(url)
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
    os.environ.update(env)
    import django

    django.setup()

    n = args.appointments
    print(f"seeding {n:,} due appointments ...", flush=True)
    started = time.perf_counter()
    seed(url, n)
    print(f"  seeded in {time.perf_counter() - started:.1f} s", flush=True)

    jobs, baselines = [], []
    for attempt in range(args.repeat):
        print(f"run {attempt + 1} of {args.repeat}: job, then baseline", flush=True)
        reset(url)
        jobs.append(measure_job(env, n))
        done_by_job = fingerprint(url)
        reset(url)
        baselines.append(measure_baseline(url, jobs[-1]["now"]))
        if fingerprint(url) != done_by_job:
            sys.exit("the job and the plain UPDATE disagree on the outcomes")
    job = {**median_of(jobs), "rss_mb": max(run["rss_mb"] for run in jobs)}
    report = render(n, job, median_of(baselines), args.repeat)
    print(report)
    save(args.out, n, report)
    print(f"written to {args.out}")


def seed(url: str, n: int) -> None:
    """N appointments that ended 2 hours to N/5 minutes ago, five ending each minute, all pending; set-based SQL."""
    with psycopg.connect(url) as conn:
        conn.execute(EMPTY)
        conn.execute("INSERT INTO scoring_shop (id, name, created_at) VALUES (md5('shop')::uuid, 'Shop', now())")
        conn.execute(
            "INSERT INTO scoring_customer (id, shop_id, name, email, phone, created_at) "
            "SELECT md5('customer' || c)::uuid, md5('shop')::uuid, 'Customer ' || c, '', '', now() "
            "FROM generate_series(0, %s - 1) c",
            [CUSTOMERS],
        )
        conn.execute(
            """
            INSERT INTO scoring_appointment (id, shop_id, customer_id, starts_at, ends_at, checked_in_at,
                                             cancelled_at, outcome, created_at)
            SELECT md5('appointment' || i)::uuid, md5('shop')::uuid, md5('customer' || (i %% %(customers)s))::uuid,
                   e - interval '30 minutes', e,
                   CASE WHEN i %% 4 = 2 THEN e - interval '25 minutes' END,
                   CASE i %% 4 WHEN 0 THEN e - interval '2 hours' WHEN 1 THEN e - interval '3 days' END,
                   'pending', now()
            FROM generate_series(0, %(n)s - 1) i,
                 LATERAL (SELECT date_trunc('minute', now()) - interval '2 hours' - (i / 5) * interval '1 minute') t(e)
            """,
            {"customers": CUSTOMERS, "n": n},
        )


def reset(url: str) -> None:
    """Every appointment pending again, nothing left of the last method's writes to vacuum or flush."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE scoring_appointment SET outcome = 'pending', resolved_at = NULL")
        conn.execute("TRUNCATE scoring_customerchange, jobs_jobrun, jobs_joblease")
        conn.execute("VACUUM ANALYZE scoring_appointment")
        conn.execute("CHECKPOINT")


JOB = """
import json, resource, time, django
django.setup()
from jobs.models import Trigger
from jobs.runner import run_job
started = time.perf_counter()
run = run_job("resolve-outcomes", trigger=Trigger.CLI, origin="bench")
print(json.dumps({"seconds": time.perf_counter() - started, "status": run.status, "now": run.params["now"],
                  "counters": run.counters, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def measure_job(env: dict[str, str], n: int) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-c", JOB], env=env, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"the job failed to run:\n{result.stderr}")
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    done = outcome["counters"]["resolved"] + outcome["counters"]["backfilled"]
    if outcome["status"] != "succeeded" or done != n or outcome["counters"]["remaining"]:
        sys.exit(f"the job did not resolve all {n:,}: {outcome}")
    return {
        "seconds": outcome["seconds"],
        "rss_mb": outcome["rss_kb"] / 1024,
        "now": datetime.fromisoformat(outcome["now"]),
        "counters": outcome["counters"],
    }


def measure_baseline(url: str, now: datetime) -> dict[str, Any]:
    """One UPDATE of every due row, the outcome rule written out (scoring.rules), committed."""
    from django.conf import settings

    grace = settings.RESOLVE_OUTCOMES_GRACE_MINUTES
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor = conn.execute(
            """
            UPDATE scoring_appointment SET resolved_at = %(now)s, outcome = CASE
                WHEN cancelled_at > starts_at - interval '24 hours' THEN 'late_cancel'
                WHEN cancelled_at IS NOT NULL THEN 'cancelled'
                WHEN checked_in_at IS NOT NULL THEN 'attended' ELSE 'no_show' END
            WHERE outcome = 'pending' AND ends_at < %(now)s - %(grace)s * interval '1 minute'
            """,
            {"now": now, "grace": grace},
        )
        rows = cursor.rowcount
        conn.commit()
        return {"seconds": time.perf_counter() - started, "rows": rows}


def fingerprint(url: str) -> str:
    """An md5 of every appointment's id and outcome."""
    with psycopg.connect(url) as conn:
        query = "SELECT md5(string_agg(id::text || outcome, ',' ORDER BY id)) FROM scoring_appointment"
        return str((conn.execute(query).fetchone() or [""])[0])


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]


def render(n: int, job: dict[str, Any], baseline: dict[str, Any], repeat: int) -> str:
    import django
    from django.conf import settings

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        version = conn.info.parameter_status("server_version")
    batch = settings.RESOLVE_OUTCOMES_BATCH_SIZE
    rows = [
        (f"resolve-outcomes job, no limit (runner; batches of {batch:,})", job["seconds"], f"{job['rss_mb']:.0f}"),
        ("baseline: one plain UPDATE of every due row", baseline["seconds"], "-"),
    ]
    lines = [
        f"# resolve-outcomes benchmark: {n:,} due appointments",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores",
        f"- PostgreSQL {version}, Python {platform.python_version()}, Django {django.get_version()}, "
        f"psycopg {psycopg.__version__}",
        "- reproduce: `make bench` (this part: `python -m bench.outcomes`, or `make bench OUTCOMES_N=1000000`)",
        "",
        "| method | wall s | appointments/s | time / baseline | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, seconds, rss in rows:
        lines.append(f"| {name} | {seconds:.2f} | {n / seconds:,.0f} | {seconds / baseline['seconds']:.2f} | {rss} |")
    lines += [
        "",
        f"Wall times are the median of {repeat} alternating runs, each from all {n:,} pending after a VACUUM and a "
        "CHECKPOINT. The job's is `run_job()` end to end in a process of its own (ledger rows, lock, "
        f"{-(-n // batch)} batches of a key-range read and two UPDATEs, commit); peak RSS is that process's "
        "maximum resident set, Python and Django included. Both left the same outcome on every row "
        f"(counters: {job['counters']}).",
        "",
    ]
    return "\n".join(lines)


def save(path: Path, n: int, report: str) -> None:
    """One section per size in the results file, smallest first; this size's section replaced."""
    sections = {}
    if path.exists():
        for part in path.read_text().split("<!-- appointments=")[1:]:
            size, _, text = part.partition(" -->\n")
            sections[int(size)] = text
    sections[n] = report
    path.write_text("".join(f"<!-- appointments={size} -->\n{sections[size]}" for size in sorted(sections)))


if __name__ == "__main__":
    main()
