from __future__ import annotations

import pytest

from jobs.registry import JOBS
from tests.framework.testjobs import JOBS_FOR_TESTS


@pytest.fixture(autouse=True)
def only_test_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The framework's tests see the jobs declared for them and the framework's own, not the domain's."""
    for name in list(JOBS):
        if name != "prune-job-runs":
            monkeypatch.delitem(JOBS, name)
    for job in JOBS_FOR_TESTS:
        monkeypatch.setitem(JOBS, job.name, job)
