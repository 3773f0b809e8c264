"""Benchmark the offer loop against PostgreSQL: 10,000 open slots, 50,000 waiting customers.

    python -m bench.offers [--slots 10000] [--waiting 50000]

Seeds a database of its own (BENCH_OFFERS_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/noshow_offers_bench; created if missing), then measures in one run,
each inside a transaction that is rolled back so every measurement starts from the same data:

1. offer-loop's work (`limit` 1000) over all the open slots, and over the slots of a tenth of the shops:
   the number of queries must not grow with the number of slots;
2. the baseline: a slot-by-slot loop (rank the waitlist for the slot, insert its offer), on the
   same 1000 slots, as the loop worked before it was set-based.

Prints a table and writes it to bench/results-offers.md (or --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/noshow_offers_bench"
LIMIT = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=10_000)
    parser.add_argument("--waiting", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results-offers.md")
    args = parser.parse_args()

    url = os.environ.get("BENCH_OFFERS_DATABASE_URL", DEFAULT_URL)
    os.environ.update({"DATABASE_URL": url, "DEBUG": "true"})
    create_database(url)
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, check=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    now = datetime.now(UTC).replace(microsecond=0)
    seed(url, args.slots, args.waiting, now)

    full = measure(now, open_fraction=1)
    tenth = measure(now, open_fraction=10)
    baseline = measure_baseline(now)
    report = render(args.slots, args.waiting, full, tenth, baseline)
    print(report)
    args.out.write_text(report)


def create_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


STATEMENTS = [
    """
    INSERT INTO scoring_shop (id, name, created_at)
        SELECT md5('shop' || s)::uuid, 'Shop ' || s, %(now)s FROM generate_series(0, %(shops)s - 1) s
    """,
    """
    INSERT INTO scoring_customer (id, shop_id, name, email, phone, created_at)
        SELECT md5('waiting' || c)::uuid, md5('shop' || (c %% %(shops)s))::uuid, 'Waiting ' || c, '', '', %(now)s
        FROM generate_series(0, %(waiting)s - 1) c
        UNION ALL
        SELECT md5('owner' || c)::uuid, md5('shop' || (c %% %(shops)s))::uuid, 'Owner ' || c, '', '', %(now)s
        FROM generate_series(0, %(slots)s - 1) c
    """,
    """
    INSERT INTO scoring_waitlistentry (id, shop_id, customer_id, created_at)
        SELECT md5('entry' || c)::uuid, md5('shop' || (c %% %(shops)s))::uuid, md5('waiting' || c)::uuid,
        %(now)s - (c %% 1000) * interval '1 minute'
        FROM generate_series(0, %(waiting)s - 1) c
    """,
    """
    INSERT INTO scoring_appointment (id, shop_id, customer_id, starts_at, ends_at, cancelled_at, outcome,
        created_at)
        SELECT md5('slot' || c)::uuid, md5('shop' || (c %% %(shops)s))::uuid, md5('owner' || c)::uuid,
        %(start)s + (c %% 720) * interval '1 hour', %(start)s + (c %% 720 + 1) * interval '1 hour',
        %(now)s, 'pending', %(now)s
        FROM generate_series(0, %(slots)s - 1) c
        UNION ALL
        SELECT md5('booked' || c)::uuid, md5('shop' || (c %% %(shops)s))::uuid, md5('waiting' || c)::uuid,
        %(start)s + (c * 7 %% 720) * interval '1 hour',
        %(start)s + (c * 7 %% 720 + 1) * interval '1 hour', NULL, 'pending', %(now)s
        FROM generate_series(0, %(waiting)s - 1, 3) c
    """,
    """
    INSERT INTO scoring_customerscore (customer_id, shop_id, score, tier, attended, no_shows, late_cancels,
        cancellations, last_appointment_at, window_days, computed_at)
        SELECT md5('waiting' || c)::uuid, md5('shop' || (c %% %(shops)s))::uuid, c %% 101,
        CASE WHEN c %% 101 >= 80 THEN 'reliable' WHEN c %% 101 >= 50 THEN 'watch' ELSE 'risky' END,
        3, 0, 0, 0, NULL, 180, %(now)s
        FROM generate_series(0, %(waiting)s - 1, 2) c
    """,
]


def seed(url: str, slots: int, waiting: int, now: datetime) -> None:
    """Shops of 500 waiting customers; slots spread over them and over 30 days; a third of the waiting
    customers already booked at some time in those days; half of them scored. Set-based SQL."""
    shops = max(waiting // 500, 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE scoring_shop CASCADE")
        params = {"now": now, "start": now + timedelta(days=1), "shops": shops, "slots": slots, "waiting": waiting}
        for statement in STATEMENTS:
            conn.execute(statement, params)
        conn.execute("VACUUM ANALYZE")


def measure(now: datetime, open_fraction: int) -> dict[str, Any]:
    """offer_open_slots over the open slots of one shop in `open_fraction`, rolled back afterwards."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from scoring.models import Shop
    from scoring.offers import _open_slots, offer_open_slots

    shops = list(Shop.objects.order_by("id").values_list("id", flat=True))[::open_fraction]
    slots = _open_slots(now).filter(shop_id__in=shops)
    with transaction.atomic():
        open_slots = slots.count()
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            counters = offer_open_slots(now, limit=LIMIT, slots=slots)
            seconds = time.perf_counter() - started
        transaction.set_rollback(True)
    return {"open": open_slots, "queries": len(queries), "seconds": seconds, **counters}


def measure_baseline(now: datetime) -> dict[str, Any]:
    """The loop as it was: for each slot, rank its shop's waitlist and insert one offer (rolled back)."""
    from django.db import connection, transaction
    from django.db.models import Case, IntegerField, Value, When
    from django.db.models.functions import Coalesce
    from django.test.utils import CaptureQueriesContext

    from scoring.models import SlotOffer, Tier, WaitlistEntry
    from scoring.offers import _open_slots

    offered = 0
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        for slot in _open_slots(now).order_by("starts_at", "id")[:LIMIT]:
            entry = (
                WaitlistEntry.objects.filter(shop_id=slot.shop_id, closed_at__isnull=True)
                .exclude(customer_id=slot.customer_id)
                .annotate(
                    risky=Case(
                        When(customer__score__tier=Tier.RISKY, then=Value(1)),
                        default=Value(0),
                        output_field=IntegerField(),
                    ),
                    rank=Coalesce("customer__score__score", Value(50)),
                )
                .order_by("risky", "-rank", "created_at", "id")
                .first()
            )
            if entry is not None:
                SlotOffer.objects.create(slot=slot, entry=entry, customer_id=entry.customer_id, offered_at=now,
                                         expires_at=now + timedelta(minutes=15), status="declined")  # fmt: skip
                offered += 1
        seconds = time.perf_counter() - started
        transaction.set_rollback(True)
    return {"queries": len(queries), "seconds": seconds, "offered": offered}


def render(slots: int, waiting: int, full: dict, tenth: dict, baseline: dict) -> str:
    from django import get_version

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        version = conn.info.parameter_status("server_version")
    rows = [
        (f"offer loop, {full['open']:,} open slots", full),
        (f"offer loop, {tenth['open']:,} open slots", tenth),
        ("baseline: slot by slot (the loop before)", baseline),
    ]
    lines = [
        f"# offer-loop benchmark: {slots:,} open slots, {waiting:,} waiting customers",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores",
        f"- PostgreSQL {version}, Python {platform.python_version()}, Django {get_version()}",
        "- reproduce: `make bench` (this part: `python -m bench.offers`)",
        "",
        f"One run with `limit` {LIMIT}, inside a transaction rolled back afterwards.",
        "",
        "| method | queries | wall s | offers made | exhausted | time / loop at all slots |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows:
        lines.append(
            f"| {name} | {row['queries']} | {row['seconds']:.2f} | {row['offered']:,} | "
            f"{row.get('exhausted', '-')} | {row['seconds'] / full['seconds']:.2f} |"
        )
    lines += [
        "",
        f"The loop's queries do not depend on the number of slots ({full['queries']} with {full['open']:,} open, "
        f"{tenth['queries']} with {tenth['open']:,}); the slot-by-slot baseline makes "
        f"{baseline['queries'] / max(baseline['offered'], 1):.1f} queries per offer, and ignores what the loop now "
        "enforces (one pending offer per customer, no double booking).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
