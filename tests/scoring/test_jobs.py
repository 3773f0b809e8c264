"""Scoring's job declarations as the outside world sees them: vercel.json, the query, the run-now form."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.core.management import call_command
from django.test import Client

from jobs.models import JobRun, Trigger
from jobs.registry import JOBS
from scoring.models import CustomerScore
from tests import factories as make
from tests.helpers import ROOT

SECRET = "s3cret-for-tests-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {SECRET}"}
VERCEL = {**BEARER, "User-Agent": "vercel-cron/1.0"}
URL = "/api/jobs/recompute-scores"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def secrets(settings):
    settings.CRON_SECRET = SECRET


def body(response) -> dict:
    assert response["Content-Type"] == "application/json", response.content[:200]
    return json.loads(response.content)


def test_vercel_json_and_the_declarations_agree_and_each_cron_path_answers_a_vercel_request():
    call_command("vercel_json", "--check", stdout=io.StringIO())  # raises, printing the difference, if they differ
    config = json.loads((ROOT / "vercel.json").read_text())
    entries = config["schedules"].values() if "schedules" in config else config["crons"]  # either form
    crons = {(entry["path"], entry["schedule"]) for entry in entries}
    declared = {cron for job in JOBS.values() for cron in job.crons}
    assert crons == declared
    for path, schedule in sorted(crons):
        response = Client().get(path, headers={**VERCEL, "X-Vercel-Cron-Schedule": schedule})
        assert response.status_code == 200, (path, response.content)
        assert body(response)["status"] == "succeeded"
    assert JobRun.objects.filter(trigger=Trigger.CRON).count() == len(crons)


def test_every_scoring_job_is_declared_with_its_reference_lock_id():
    assert {name: job.lock_id for name, job in JOBS.items()} == {
        "resolve-outcomes": 482173, "expire-offers": 482174, "recompute-scores": 482175, "offer-loop": 482176,
        "prune-job-runs": 482177, "evaluate-scores": 482181,
    }  # fmt: skip


def test_recompute_scores_rejects_a_limit_it_does_not_take():
    response = Client().get(f"{URL}?limit=5", headers=BEARER)
    assert response.status_code == 400
    assert body(response) == {"error": "limit: recompute-scores does not take a limit", "param": "limit"}


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("shopId=abc", 400, "shopId: must be a shop's UUID"),
        ("shopId=", 400, "shopId: must be a shop's UUID"),
        (f"shopId={uuid.UUID(int=1)}", 404, "shopId: no shop has this id"),
        ("shopId=1%27%20OR%201%3D1", 400, "shopId: must be a shop's UUID"),
    ],
)
def test_a_bad_shop_is_named_and_an_unknown_one_is_404(query, status, error):
    response = Client().get(f"{URL}?{query}", headers=BEARER)
    assert response.status_code == status
    assert body(response) == {"error": error, "param": "shopId"}
    assert not JobRun.objects.exists()


def test_a_one_shop_run_scores_only_that_shop_and_records_it():
    shop = make.shop()
    make.customer(shop)
    make.customer()  # another shop's
    data = body(Client().get(f"{URL}?shopId={shop.pk}", headers=BEARER))
    assert data["total"] == 1 and CustomerScore.objects.count() == 1
    assert JobRun.objects.get().params["shop"] == str(shop.pk)


@pytest.mark.parametrize(
    ("job", "query", "limit"),
    [("resolve-outcomes", "", None), ("resolve-outcomes", "limit=1001", 1000), ("expire-offers", "", 200)],
)
def test_resolve_outcomes_has_no_limit_unless_given_a_given_limit_is_capped_at_1000_and_others_default_to_200(
    job, query, limit
):
    response = Client().get(f"/api/jobs/{job}?{query}", headers=BEARER)
    assert response.status_code == 200 and JobRun.objects.get().params.get("limit") == limit


def test_a_dry_run_and_a_one_shop_run_after_a_failure_leave_the_job_failing(monkeypatch):
    from django.utils import timezone

    from jobs.health import health
    from jobs.models import Status

    shop = make.shop()
    make.customer(shop)
    JobRun.objects.create(job="recompute-scores", trigger=Trigger.CRON, status=Status.FAILED, lock_id=482175,
                          started_at=timezone.now(), errors=["ProgrammingError: boom"], error_count=1)  # fmt: skip
    assert Client().get(f"{URL}?dryRun=1", headers=BEARER).status_code == 200
    assert Client().get(f"{URL}?shopId={shop.pk}", headers=BEARER).status_code == 200
    verdict = health(JOBS["recompute-scores"], timezone.now())
    assert verdict.verdict == "failing" and verdict.last_success is None
    assert "ProgrammingError: boom" in verdict.note
