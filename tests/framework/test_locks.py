"""The lease backend (SQLite's lock; runs on any database, so it is checked on both)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from jobs import locks
from jobs.models import JobLease

pytestmark = pytest.mark.django_db
TTL = timedelta(minutes=15)


def test_a_free_lease_is_taken_and_a_held_one_is_not():
    assert locks.take_lease(1, "first", TTL)
    assert not locks.take_lease(1, "second", TTL)
    assert JobLease.objects.get(lock_id=1).owner == "first"


def test_leases_on_different_lock_ids_are_independent():
    assert locks.take_lease(1, "first", TTL)
    assert locks.take_lease(2, "second", TTL)


def test_an_expired_lease_is_taken_over():
    assert locks.take_lease(1, "crashed", TTL)
    JobLease.objects.filter(lock_id=1).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert locks.take_lease(1, "next", TTL)
    assert JobLease.objects.get(lock_id=1).owner == "next"


def test_a_late_release_never_frees_a_lease_someone_else_took_over():
    locks.take_lease(1, "crashed", TTL)
    JobLease.objects.filter(lock_id=1).update(expires_at=timezone.now() - timedelta(seconds=1))
    locks.take_lease(1, "next", TTL)
    assert not locks.release_lease(1, "crashed")
    assert not locks.take_lease(1, "third", TTL)
    assert locks.release_lease(1, "next")
    assert locks.take_lease(1, "third", TTL)


def test_the_lease_context_releases_on_exceptions():
    with pytest.raises(RuntimeError), locks.lease(7) as held:
        assert held
        raise RuntimeError
    assert not JobLease.objects.exists()


def test_a_lease_is_renewed_while_its_run_works_and_a_killed_runs_lease_expires_within_two_minutes(settings):
    settings.JOBS_LEASE_SECONDS = 60
    with time_machine.travel(timezone.now(), tick=False) as clock, locks.lease(7, "run #1") as lock:
        for _ in range(4):  # 4 x 40 s of work: far past one lease, renewed as the run goes
            clock.shift(timedelta(seconds=40))
            lock.renew()
            assert not locks.take_lease(7, "another", TTL)
        clock.shift(timedelta(seconds=61))  # the run stopped renewing: killed
        assert locks.take_lease(7, "another", TTL)
        with pytest.raises(locks.LeaseLost):
            lock.renew()  # the killed run, had it survived, would learn it lost its lease


def test_without_renewal_the_lease_would_have_been_taken_over(settings):
    settings.JOBS_LEASE_SECONDS = 60
    with time_machine.travel(timezone.now(), tick=False) as clock, locks.lease(7, "run #1"):
        clock.shift(timedelta(seconds=80))
        assert locks.take_lease(7, "another", TTL)


def test_a_taken_lease_names_its_holder():
    with locks.lease(7, "run #41") as first, locks.lease(7, "run #42") as second:
        assert first.held and not second.held
        assert second.holder.startswith("run #41 ")
