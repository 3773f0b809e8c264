"""A declaration is data: the system checks refuse duplicate names and lock ids, and reserved names."""

from __future__ import annotations

import pytest

from jobs import checks, registry
from jobs.registry import Job, job
from tests.framework.testjobs import write


@pytest.fixture
def declared(monkeypatch):
    monkeypatch.setattr(registry, "DECLARED", [])
    monkeypatch.setattr(checks, "DECLARED", registry.DECLARED)
    return registry.DECLARED


def ids(declared) -> list[str]:
    return [message.id for message in checks.declarations_are_consistent(None)]


def test_the_decorator_declares_the_function_and_returns_it_unchanged(declared, monkeypatch):
    monkeypatch.setattr(registry, "JOBS", {})
    decorated = job(name="tidy", lock_id=1, description="Tidies.", counters=("tidied",))(write)
    assert decorated is write
    assert declared == [Job("tidy", 1, write, "Tidies.", counters=("tidied",))]
    assert registry.JOBS["tidy"].path == "/api/jobs/tidy" and registry.JOBS["tidy"].lock_setting == "TIDY_LOCK_ID"


def test_duplicate_names_and_lock_ids_and_reserved_names_are_errors(declared, monkeypatch):
    monkeypatch.setattr(registry, "JOBS", {})
    for name, lock_id in [("a", 1), ("a", 2), ("b", 2), ("health", 3), ("c", 4)]:
        registry.register(Job(name, lock_id, write, "test"))
    assert ids(declared) == ["jobs.E001", "jobs.E002", "jobs.E004"]


def test_a_lock_id_variable_for_no_job_is_a_warning(declared, settings):
    settings.JOBS_LOCK_IDS = {"NIGHTLY_LOCK_ID": 5, "NIGHTLEY_LOCK_ID": 6}
    assert ids(declared) == ["jobs.W003"]


def test_the_project_declarations_pass_the_checks():
    from django.core.management import call_command

    call_command("check", fail_level="WARNING")
