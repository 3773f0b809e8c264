"""Benchmark the offer loop against PostgreSQL: 10,000 open slots, 50,000 waiting customers; and idle runs.

    python -m bench.offers [--slots 10000] [--waiting 50000] [--idle-customers 20000] [--idle-slots 1000]

Seeds a database of its own (BENCH_OFFERS_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/noshow_offers_bench; created if missing), then measures in one run,
each inside a transaction that is rolled back so every measurement starts from the same data:

1. offer-loop's work (`limit` 1000) over all the open slots, and over the slots of a tenth of the shops:
   the number of queries must not grow with the number of slots;
2. the baseline: a slot-by-slot loop (rank the waitlist for the slot, insert its offer), on the
   same 1000 slots, as the loop worked before it was set-based;
3. idle runs: expire-offers and offer-loop with nothing to offer (20,000 customers with a year of
   history, 1,000 open slots nobody can take), their database time against the same runs on an empty
   database (a run with nothing to do), then with 5 times the history, twice the waitlist, and with
   slots that someone can take; each after a first run that remembered the slots it found exhausted
   (committed), and that first look's cost beside them.

Prints a table and writes it to bench/results-offers.md (or --out).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.numeric import Int8

from bench.common import create_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/noshow_offers_bench"
LIMIT = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=10_000)
    parser.add_argument("--waiting", type=int, default=50_000)
    parser.add_argument("--idle-customers", type=int, default=20_000)
    parser.add_argument("--idle-slots", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=9, help="idle runs of each kind; the median counts")
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
    idle = measure_idle_runs(url, args.idle_customers, args.idle_slots, args.repeat)
    report = render(args.slots, args.waiting, full, tenth, baseline) + render_idle(idle, args.repeat)
    print(report)
    args.out.write_text(report)


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


IDLE = [
    # shops of 1,000 customers; every customer a history of `history` resolved appointments over the past year
    """
    INSERT INTO scoring_shop (id, name, created_at)
        SELECT md5('shop' || s)::uuid, 'Shop ' || s, %(now)s FROM generate_series(0, %(shops)s - 1) s
    """,
    """
    INSERT INTO scoring_customer (id, shop_id, name, email, phone, created_at)
        SELECT md5('customer' || i)::uuid, md5('shop' || (i %% %(shops)s))::uuid, 'Customer ' || i, '', '', %(now)s
        FROM generate_series(0, %(customers)s - 1) i
    """,
    """
    INSERT INTO scoring_appointment (id, shop_id, customer_id, starts_at, ends_at, checked_in_at, cancelled_at,
                                     outcome, resolved_at, created_at)
        SELECT md5('past' || j)::uuid, md5('shop' || (j %% %(customers)s %% %(shops)s))::uuid,
               md5('customer' || (j %% %(customers)s))::uuid, t, t + interval '1 hour',
               CASE WHEN roll < 70 THEN t END,
               CASE WHEN roll >= 85 THEN t - interval '2 days' WHEN roll >= 80 THEN t - interval '3 hours' END,
               CASE WHEN roll < 70 THEN 'attended' WHEN roll < 80 THEN 'no_show' WHEN roll < 85 THEN 'late_cancel'
                    ELSE 'cancelled' END,
               t + interval '2 hours', t - interval '7 days'
        FROM (
            SELECT j,
                   %(hour)s - interval '366 days'
                     + ((hashtext('t' || j) & 2147483647) %% (365 * 24)) * interval '1 hour' AS t,
                   (hashtext('o' || j) & 2147483647) %% 100 AS roll
            FROM generate_series(0, %(customers)s * %(history)s - 1) j
        ) drawn
    """,
    # the first `waiting` customers wait at their shop
    """
    INSERT INTO scoring_waitlistentry (id, shop_id, customer_id, created_at)
        SELECT md5('entry' || i)::uuid, md5('shop' || (i %% %(shops)s))::uuid, md5('customer' || i)::uuid,
               %(now)s - (i %% 1000) * interval '1 minute'
        FROM generate_series(0, %(waiting)s - 1) i
    """,
    # past offers: each waiting customer was offered `history` past appointments of their shop, and let them go
    """
    INSERT INTO scoring_slotoffer (id, slot_id, entry_id, customer_id, status, offered_at, expires_at)
        SELECT md5('past offer' || i || '/' || m)::uuid, md5('past' || (i + %(shops)s * m))::uuid,
               md5('entry' || i)::uuid, md5('customer' || i)::uuid, 'expired', p.starts_at - interval '1 day',
               p.starts_at - interval '1 day' + interval '15 minutes'
        FROM generate_series(0, %(waiting)s - 1) i, generate_series(1, %(history)s) m,
             LATERAL (SELECT starts_at FROM scoring_appointment WHERE id = md5('past' || (i + %(shops)s * m))::uuid) p
    """,
    # the open slots: cancelled, at a distinct hour from tomorrow in each shop, their customers not waiting
    """
    INSERT INTO scoring_appointment (id, shop_id, customer_id, starts_at, ends_at, cancelled_at, outcome, created_at)
        SELECT md5('open' || k)::uuid, md5('shop' || (k %% %(shops)s))::uuid,
               md5('customer' || (%(waiting)s + k))::uuid,
               %(hour)s + interval '1 day' + (k / %(shops)s) * interval '1 hour',
               %(hour)s + interval '1 day' + (k / %(shops)s + 1) * interval '1 hour', %(now)s - interval '1 day',
               'pending', %(now)s - interval '10 days'
        FROM generate_series(0, %(slots)s - 1) k
    """,
    # the first `holders` waiting customers each hold a pending offer for another freed slot of their shop
    """
    INSERT INTO scoring_appointment (id, shop_id, customer_id, starts_at, ends_at, cancelled_at, outcome, created_at)
        SELECT md5('held' || i)::uuid, md5('shop' || (i %% %(shops)s))::uuid,
               md5('customer' || (%(waiting)s + %(slots)s + i))::uuid,
               %(hour)s + interval '4 days' + (i / %(shops)s) * interval '1 hour',
               %(hour)s + interval '4 days' + (i / %(shops)s + 1) * interval '1 hour', %(now)s - interval '1 day',
               'pending', %(now)s - interval '10 days'
        FROM generate_series(0, %(holders)s - 1) i
    """,
    """
    INSERT INTO scoring_slotoffer (id, slot_id, entry_id, customer_id, status, offered_at, expires_at)
        SELECT md5('pending' || i)::uuid, md5('held' || i)::uuid, md5('entry' || i)::uuid, md5('customer' || i)::uuid,
               'pending', %(now)s - interval '5 minutes', %(now)s + interval '10 minutes'
        FROM generate_series(0, %(holders)s - 1) i
    """,
    # the others were offered every open slot of their shop, and declined or let it expire; except the last
    # `busy` ones, booked at the time of two of those slots (and offered the rest)
    """
    INSERT INTO scoring_slotoffer (id, slot_id, entry_id, customer_id, status, offered_at, expires_at, responded_at)
        SELECT md5('gone' || i || '/' || k)::uuid, md5('open' || k)::uuid, md5('entry' || i)::uuid,
               md5('customer' || i)::uuid, CASE WHEN k / %(shops)s %% 2 = 0 THEN 'declined' ELSE 'expired' END,
               %(now)s - interval '1 day', %(now)s - interval '1 day' + interval '15 minutes',
               %(now)s - interval '1 day' + interval '10 minutes'
        FROM generate_series(%(holders)s, %(waiting)s - 1) i
        JOIN generate_series(0, %(slots)s - 1) k ON k %% %(shops)s = i %% %(shops)s
        WHERE i < %(waiting)s - %(busy)s OR k / %(shops)s %% 25 <> i / %(shops)s %% 25
    """,
    """
    INSERT INTO scoring_appointment (id, shop_id, customer_id, starts_at, ends_at, outcome, created_at)
        SELECT md5('busy' || i || '/' || k)::uuid, md5('shop' || (i %% %(shops)s))::uuid, md5('customer' || i)::uuid,
               %(hour)s + interval '1 day' + (k / %(shops)s) * interval '1 hour',
               %(hour)s + interval '1 day' + (k / %(shops)s + 1) * interval '1 hour', 'pending', %(now)s
        FROM generate_series(%(waiting)s - %(busy)s, %(waiting)s - 1) i
        JOIN generate_series(0, %(slots)s - 1) k ON k %% %(shops)s = i %% %(shops)s
        WHERE k / %(shops)s %% 25 = i / %(shops)s %% 25
    """,
    # half the customers scored
    """
    INSERT INTO scoring_customerscore (customer_id, shop_id, score, tier, attended, no_shows, late_cancels,
        cancellations, last_appointment_at, window_days, computed_at)
        SELECT md5('customer' || c)::uuid, md5('shop' || (c %% %(shops)s))::uuid, c %% 101,
        CASE WHEN c %% 101 >= 80 THEN 'reliable' WHEN c %% 101 >= 50 THEN 'watch' ELSE 'risky' END,
        3, 0, 0, 0, NULL, 180, %(now)s
        FROM generate_series(0, %(customers)s - 1, 2) c
    """,
]


NEWCOMERS = """
    INSERT INTO scoring_waitlistentry (id, shop_id, customer_id, created_at)
        SELECT md5('newcomer' || s)::uuid, md5('shop' || s)::uuid,
               md5('customer' || (%(customers)s - %(shops)s + s))::uuid, %(now)s
        FROM generate_series(0, %(newcomers)s - 1) s
"""


def idle_shops(customers: int) -> int:
    """The shops of the idle runs' data: 1,000 customers each, at least one."""
    return max(customers // 1000, 1)


def seed_idle(
    url: str,
    now: datetime,
    *,
    customers: int,
    history: int,
    slots: int,
    holders: int,
    gone: int,
    busy: int,
) -> dict[str, int]:
    """Open slots nobody can take: of the customers waiting at their shop, `holders` hold a pending offer for
    another slot, `gone` were offered every open slot there and let it go, and `busy` are booked at the time
    of two of them (and were offered the rest). With no customers, an empty database. Returns the tables' sizes."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE scoring_shop CASCADE")
        if customers:
            params = {
                "now": now, "hour": now.replace(minute=0, second=0), "shops": idle_shops(customers),
                "customers": customers, "history": history, "slots": slots, "waiting": holders + gone + busy,
                "holders": holders, "busy": busy,
            }  # fmt: skip
            # psycopg sends a small int as a smallint, whose products overflow: bigints
            params = {name: Int8(value) if isinstance(value, int) else value for name, value in params.items()}
            conn.execute("ALTER TABLE scoring_appointment DISABLE TRIGGER USER")  # history: no score to mark
            conn.execute("ALTER TABLE scoring_customer DISABLE TRIGGER USER")
            try:
                for statement in IDLE:
                    conn.execute(statement, params)
            finally:
                conn.execute("ALTER TABLE scoring_appointment ENABLE TRIGGER USER")
                conn.execute("ALTER TABLE scoring_customer ENABLE TRIGGER USER")
        conn.execute("VACUUM ANALYZE")
        sizes = conn.execute(
            "SELECT (SELECT count(*) FROM scoring_appointment), (SELECT count(*) FROM scoring_slotoffer)"
        ).fetchone()
    return {"appointments": sizes[0], "offers": sizes[1]} if sizes else {}


def add_newcomers(url: str, now: datetime, customers: int, newcomers: int) -> None:
    """In `newcomers` shops, one customer starts waiting, who can take any of its slots (committed: the triggers
    count it)."""
    with psycopg.connect(url, autocommit=True) as conn:
        params = {"now": now, "customers": customers, "shops": idle_shops(customers), "newcomers": newcomers}
        conn.execute(
            NEWCOMERS, {name: Int8(value) if isinstance(value, int) else value for name, value in params.items()}
        )
        conn.execute("VACUUM ANALYZE scoring_waitlistentry")


def database_time(work: Any, keep: bool = False) -> tuple[float, int, dict[str, int]]:
    """Run `work()` in a transaction rolled back afterwards (committed if `keep`); the seconds its queries took
    (each from the call to its last row, on loopback), how many there were, and its counters."""
    from django.db import connection, transaction

    spent: list[float] = []

    def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            spent.append(time.perf_counter() - started)

    with transaction.atomic(), connection.execute_wrapper(timed):
        counters = work()
        transaction.set_rollback(not keep)
    return sum(spent), len(spent), counters


def measure_idle(now: datetime, repeat: int, newcomers: int, url: str, customers: int) -> dict[str, dict[str, Any]]:
    """offer-loop (`limit` 1000) before any run remembered what it found (the first look), `repeat` times, each
    rolled back; then one run committed, which remembers the slots it found exhausted; then (after `newcomers`
    start waiting) expire-offers and offer-loop, alternating, `repeat` times each, each rolled back: medians."""
    from django.db import connection

    from jobs.context import Context
    from scoring.offers import expire_offers, offer_loop

    def loop() -> dict[str, int]:
        return dict(offer_loop(Context(now=now), limit=LIMIT).counters)

    def expire() -> dict[str, int]:
        return dict(expire_offers(Context(now=now), limit=LIMIT).counters)

    runs: dict[str, list[tuple[float, int, dict[str, int]]]] = {"first look": [], "expire-offers": [], "offer-loop": []}
    for _ in range(repeat):
        runs["first look"].append(database_time(loop))
    database_time(loop, keep=True)
    if newcomers:
        add_newcomers(url, now, customers, newcomers)
        connection.close()
    for _ in range(repeat):
        runs["expire-offers"].append(database_time(expire))
        runs["offer-loop"].append(database_time(loop))
    return {
        name: {"seconds": statistics.median(r[0] for r in got), "queries": got[0][1], "counters": got[0][2]}
        for name, got in runs.items()
    }


def measure_idle_runs(url: str, customers: int, slots: int, repeat: int) -> list[dict[str, Any]]:
    """The idle runs on an empty database (the baseline), then at `customers` and `slots` open slots nobody
    can take, then with 5 times the history, twice the waiting customers (the new ones holding offers, or
    let every slot go), and with a tenth of the slots taken by someone (a new waiting customer in 2 of the 20
    shops; in as many as there are, if fewer)."""
    from django.db import connection

    now = datetime.now(UTC).replace(microsecond=0)
    waiting = customers // 10
    newcomers = min(2, idle_shops(customers))  # a shop each
    base = {"customers": customers, "history": 10, "slots": slots, "holders": waiting // 2,
            "gone": waiting * 9 // 20, "busy": waiting // 20}  # fmt: skip
    # name, data, newcomers, the target (ms) where the issue sets one
    shapes: list[tuple[str, dict[str, int], int, int | None]] = [
        ("nothing to do: an empty database (baseline)", {**base, "customers": 0}, 0, None),
        (f"{customers:,} customers, {slots:,} open slots nobody can take", base, 0, 50),
        ("the same, 5 times the history (appointments, past offers)", {**base, "history": 50}, 0, 50),
        (
            "the same, twice the waitlist (the new half holding offers)",
            {**base, "holders": base["holders"] + waiting}, 0, 50,
        ),
        (
            "the same, twice the waitlist (the new half let every slot go)",
            {**base, "gone": base["gone"] + waiting}, 0, 50,
        ),
        (
            f"the same, and then a new waiting customer in {newcomers} shop{'s' * (newcomers > 1)}: "
            f"{newcomers * slots // idle_shops(customers):,} slots someone can take",
            base, newcomers, None,
        ),
    ]  # fmt: skip
    results = []
    for name, shape, newcomers, target in shapes:
        print(f"idle runs: {name}", flush=True)
        sizes = seed_idle(url, now, **shape)
        connection.close()  # fresh statistics, no cached plans
        measured = measure_idle(now, repeat, newcomers, url, shape["customers"])
        results.append({"name": name, "target": target, **sizes, **measured})
    return results


def render_idle(idle: list[dict[str, Any]], repeat: int) -> str:
    floor = idle[0]
    lines = [
        "",
        "## Idle runs: nothing to offer",
        "",
        f"Database time of the job's own queries (the call to the last row, on loopback), median of {repeat} runs "
        "each, each in a transaction rolled back; `limit` 1000. *First look*: offer-loop before any run remembered "
        "the slots it found exhausted (what every run cost before). Then one run is committed, which remembers "
        "them; *expire-offers* and *offer-loop* are the runs after it (alternating), which examine again only the "
        "slots whose shop had a write since that could give them a candidate (in the last row: 2 shops where a "
        "customer starts waiting, after that run). The target (issue 24): at most 50 ms at 20,000 customers and "
        "1,000 exhausted slots, not growing with the waitlist or the history; the ratios are against the same "
        "runs on an empty database (nothing to do), measured in the same run.",
        "",
        "| data | appointments | offers | first look ms | queries | expire-offers ms | queries | offer-loop ms | "
        "queries | target ms | expire-offers / nothing to do | offer-loop / nothing to do |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in idle:
        first, expire, loop = row["first look"], row["expire-offers"], row["offer-loop"]
        target = f"at most {row['target']}" if row["target"] else "-"
        lines.append(
            f"| {row['name']} | {row['appointments']:,} | {row['offers']:,} | {first['seconds'] * 1000:.1f} | "
            f"{first['queries']} | {expire['seconds'] * 1000:.1f} | {expire['queries']} | "
            f"{loop['seconds'] * 1000:.1f} | {loop['queries']} | {target} | "
            f"{expire['seconds'] / floor['expire-offers']['seconds']:.1f} | "
            f"{loop['seconds'] / floor['offer-loop']['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
