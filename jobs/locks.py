"""One lock per job, taken without waiting; two backends behind one interface.

PostgreSQL: `pg_try_advisory_xact_lock(lock_id)` inside a transaction that
spans the job's writes. A transaction lock is released by COMMIT or ROLLBACK,
so it cannot leak through a transaction-mode pooler (PgBouncer, Supabase
6543, Neon -pooler), unlike a session lock, and it shares its key space with
session locks: anyone holding `pg_advisory_lock(lock_id)` makes the job skip.

Other databases (SQLite): a lease row with an owner token and a short expiry
(JOBS_LEASE_SECONDS), renewed while the run works, so that a killed holder
blocks its job for one lease at most. A late release deletes only its own lease.
Lease writes retry while SQLite says "database is locked".

A run can also hold named locks (Lock.also, Context.hold) for what runs share whatever their
lock ids: a two-key advisory lock in the run's transaction on PostgreSQL, a lease on other
databases, each keyed by a hash of the name, taken without waiting and let go with the run's.

A killed client's backend runs its current statement to the end, and holds its locks that
long, unless it checks its socket meanwhile: on PostgreSQL 14+ the run's transaction sets
`client_connection_check_interval` (older servers: the lock outlives a killed run by as long
as its last statement runs).
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from jobs.context import Held
from jobs.models import JobLease

T = TypeVar("T")
NAMED = 0x6A6F6273  # "jobs": the first key of named locks on PostgreSQL, apart from the jobs' one-key ids
DEAD_CLIENT_CHECK = "1s"  # how often a run's backend looks whether its client is still there


class LeaseLost(RuntimeError):
    """The lease expired and another run took it over: this run no longer excludes others."""


@dataclass
class Lock:
    """A lock attempt. `held`: whether it is ours; `holder`: the lease's owner when it is not (SQLite)."""

    lock_id: int
    held: bool
    holder: str | None = None
    owner: str | None = None  # our lease token (SQLite)
    renewed_at: datetime = field(default_factory=timezone.now)
    named: list[int] = field(default_factory=list)  # the lease ids of the named locks also held (SQLite)

    def renew(self) -> None:
        """Keep a lease alive while the run works: called between items and batches. No-op on PostgreSQL."""
        if self.owner is None:
            return
        ttl = timedelta(seconds=settings.JOBS_LEASE_SECONDS)
        now = timezone.now()
        if now - self.renewed_at < ttl / 4:
            return
        mine = JobLease.objects.filter(lock_id__in=[self.lock_id, *self.named], owner=self.owner)
        if retrying(lambda: mine.update(expires_at=now + ttl)) < 1 + len(self.named):
            raise LeaseLost(f"the lease on lock {self.lock_id} (or a named one) expired and was taken over")
        self.renewed_at = now

    def also(self, name: str) -> None:
        """Hold the lock named `name` as well, until this one goes, without waiting; raise Held if it is taken."""
        key = zlib.crc32(name.encode()) & 0x7FFFFFFF
        if self.owner is None:  # PostgreSQL: in the run's transaction, released with it
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [NAMED, key])
                if not cursor.fetchone()[0]:
                    raise Held(name, _holder(cursor, NAMED, key, 2))
            return
        lock_id, owner = NAMED << 32 | key, self.owner
        if lock_id in self.named:
            return
        if not retrying(lambda: take_lease(lock_id, owner, timedelta(seconds=settings.JOBS_LEASE_SECONDS))):
            raise Held(name, JobLease.objects.filter(lock_id=lock_id).values_list("owner", flat=True).first())
        self.named.append(lock_id)


@contextmanager
def hold(lock_id: int, owner: str = "") -> Iterator[Lock]:
    """Try to take the lock for the duration of the block, without waiting.

    On PostgreSQL the block runs inside the lock's transaction. `owner` names the
    taker in the lease (SQLite), so that a run that finds it taken can say by whom.
    """
    if connection.vendor == "postgresql":
        with transaction.atomic(durable=True), connection.cursor() as cursor:
            held, holder = _try_xact_lock(cursor, lock_id, owner)
            yield Lock(lock_id, held=held, holder=holder)
    else:
        with lease(lock_id, owner) as taken:
            yield taken


def taken(lock_id: int) -> tuple[bool, str | None]:
    """Whether the lock is held by another session or run at this moment, and by whom if it says: one statement that
    keeps nothing (on PostgreSQL it tries the lock in a transaction of its own; elsewhere it reads the lease).
    A call that finds it held is recorded skipped at once, in one more statement; one that finds it free still
    takes it with hold(), which decides (it may have been taken in between)."""
    if connection.vendor != "postgresql":
        lease = JobLease.objects.filter(lock_id=lock_id, expires_at__gt=timezone.now()).values("owner").first()
        return lease is not None, lease and lease["owner"]
    with connection.cursor() as cursor:  # autocommit: the statement's own transaction lets go of what it took
        free, holder = _try_xact_lock(cursor, lock_id)
    return not free, holder


@contextmanager
def lease(lock_id: int, owner: str = "") -> Iterator[Lock]:
    """The lease backend; usable on any database."""
    token = f"{owner} {uuid.uuid4().hex}".strip()
    ttl = timedelta(seconds=settings.JOBS_LEASE_SECONDS)
    if not retrying(lambda: take_lease(lock_id, token, ttl)):
        holder = JobLease.objects.filter(lock_id=lock_id).values_list("owner", flat=True).first()
        yield Lock(lock_id, held=False, holder=holder)
        return
    taken = Lock(lock_id, held=True, owner=token)
    try:
        yield taken
    finally:
        retrying(lambda: JobLease.objects.filter(lock_id__in=[lock_id, *taken.named], owner=token).delete())


# The application name of the session holding an advisory lock (as pg_locks shows its key), if still held.
HOLDER = (
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = %s"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"  # keys are per database
)


def _holder(cursor: Any, classid: int, objid: int, objsubid: int) -> str | None:
    cursor.execute(HOLDER, [classid, objid, objsubid])
    row = cursor.fetchone()
    return row[0] if row else None


def _try_xact_lock(cursor: Any, lock_id: int, owner: str | None = None) -> tuple[bool, str | None]:
    """Try the job's lock in the current transaction, in one round trip; whether it is ours, and if not, who holds it.

    Taken, with an `owner`: the session is named after its owner for as long as it holds the lock, so that a run that
    finds it taken can say by whom, and (PostgreSQL 14+) a killed client's backend notices within DEAD_CLIENT_CHECK,
    even mid-statement. Not taken: the holder's name is read. (OFFSET 0 keeps the lock attempt in a subquery of its
    own, evaluated once, before the CASEs that read it; a CASE evaluates only the branch it takes.)
    """
    key = lock_id & 0xFFFFFFFFFFFFFFFF  # a bigint key shows in pg_locks as two unsigned halves
    named: list[tuple[str, str]] = []
    if owner is not None:
        named.append(("application_name", owner[:63]))
        if connection.pg_version >= 140000:  # type: ignore[attr-defined]
            named.append(("client_connection_check_interval", DEAD_CLIENT_CHECK))
    cursor.execute(
        f"SELECT t.held, CASE WHEN NOT t.held THEN ({HOLDER}) END"
        + "".join(f", CASE WHEN t.held THEN set_config('{name}', %s, true) END" for name, _ in named)
        + " FROM (SELECT pg_try_advisory_xact_lock(%s) AS held OFFSET 0) AS t",
        [key >> 32, key & 0xFFFFFFFF, 1, *(value for _, value in named), lock_id],
    )
    held, holder = cursor.fetchone()[:2]
    return bool(held), None if held else holder


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


def retrying(action: Callable[[], T], attempts: int = 4) -> T:
    """Run a short write, again while SQLite answers "database is locked" (each try already waits its timeout)."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except OperationalError as error:
            if "database is locked" not in str(error) or attempt == attempts or connection.in_atomic_block:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")
