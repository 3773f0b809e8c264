"""The lease backend (SQLite's lock; runs on any database, so it is checked on both)."""

from __future__ import annotations

from datetime import timedelta

import pytest
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


def test_a_lease_lasts_longer_than_a_run_may(settings):
    with locks.lease(7):
        expires_at = JobLease.objects.get().expires_at
    assert expires_at - timezone.now() > timedelta(seconds=settings.JOBS_TIME_BUDGET_SECONDS)
