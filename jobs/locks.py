"""One lock per job, taken without waiting; two backends behind one interface.

PostgreSQL: `pg_try_advisory_xact_lock(lock_id)` inside a transaction that
spans the job's writes. A transaction lock is released by COMMIT or ROLLBACK,
so it cannot leak through a transaction-mode pooler (PgBouncer, Supabase
6543, Neon -pooler), unlike a session lock, and it shares its key space with
session locks: anyone holding `pg_advisory_lock(lock_id)` makes the job skip.

Other databases (SQLite): a lease row with an owner token and an expiry longer
than any run may last (JOBS_LEASE_SECONDS > JOBS_TIME_BUDGET_SECONDS). A dead
holder's lease expires; a late release deletes only its own lease.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from jobs.models import JobLease


@contextmanager
def hold(lock_id: int) -> Iterator[bool]:
    """Try to take the lock for the duration of the block; yield whether we hold it.

    On PostgreSQL the block runs inside the lock's transaction.
    """
    if connection.vendor == "postgresql":
        with transaction.atomic(durable=True), connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [lock_id])
            yield bool(cursor.fetchone()[0])
    else:
        with lease(lock_id) as held:
            yield held


@contextmanager
def lease(lock_id: int) -> Iterator[bool]:
    """The lease backend; usable on any database."""
    owner = uuid.uuid4().hex
    held = take_lease(lock_id, owner, timedelta(seconds=settings.JOBS_LEASE_SECONDS))
    try:
        yield held
    finally:
        if held:
            release_lease(lock_id, owner)


def take_lease(lock_id: int, owner: str, ttl: timedelta) -> bool:
    """Insert the lease, or take it over if it has expired; True if it is now ours."""
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    table = JobLease._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (lock_id, owner, expires_at) VALUES (%s, %s, %s)
            ON CONFLICT (lock_id) DO UPDATE
                SET owner = excluded.owner, expires_at = excluded.expires_at
                WHERE {table}.expires_at < %s
            """,
            [lock_id, owner, adapt(now + ttl), adapt(now)],
        )
        return cursor.rowcount == 1


def release_lease(lock_id: int, owner: str) -> bool:
    """Delete the lease if it is still ours (a late release frees nobody else's)."""
    deleted, _ = JobLease.objects.filter(lock_id=lock_id, owner=owner).delete()
    return deleted == 1
