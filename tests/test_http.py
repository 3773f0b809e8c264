"""The cron endpoints through Django's test client: methods x auth x parameters."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest
from django.db import OperationalError
from django.test import Client

from jobs.models import JobRun, Status, Trigger
from jobs.registry import JOBS
from scoring.models import CustomerScore
from tests import factories as make
from tests.helpers import lock_held_elsewhere

SECRET = "s3cret-for-tests-0123456789abcdef"
INTERNAL = "internal-secret-for-tests-0123456789"
URL = "/api/jobs/recompute-scores"
BEARER = {"Authorization": f"Bearer {SECRET}"}
VERCEL = {**BEARER, "User-Agent": "vercel-cron/1.0", "X-Vercel-Cron-Schedule": "0 2 * * *"}

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def secrets(settings):
    settings.CRON_SECRET = SECRET
    settings.INTERNAL_SECRET = INTERNAL


@pytest.fixture
def client() -> Client:
    return Client(enforce_csrf_checks=True)


def body(response) -> dict:
    assert response["Content-Type"] == "application/json", response.content[:200]
    assert response["Cache-Control"] == "no-store"
    return json.loads(response.content)


def test_a_vercel_cron_request_runs_the_job_and_records_one_cron_run(client):
    customer = make.customer()
    response = client.get(URL, headers=VERCEL)
    data = body(response)
    run = JobRun.objects.get()
    assert response.status_code == 200
    assert data == {"job": "recompute-scores", "runId": run.pk, "status": "succeeded", **run.counters, "errors": []}
    assert data["total"] == 1 and CustomerScore.objects.filter(customer=customer).exists()
    assert (run.trigger, run.status) == (Trigger.CRON, Status.SUCCEEDED)
    assert run.origin.startswith("vercel-cron/1.0 from ")


def test_a_manual_post_with_the_reference_header_runs_the_job(client):
    response = client.post(URL, headers={"X-Cron-Secret": SECRET})
    assert response.status_code == 200 and body(response)["status"] == "succeeded"
    assert JobRun.objects.count() == 1


@pytest.mark.parametrize("path", [URL, URL + "/"])
def test_the_path_answers_directly_with_or_without_a_trailing_slash(client, path):
    response = client.get(path, headers=BEARER)
    assert response.status_code == 200


@pytest.mark.parametrize("method", ["put", "delete"])
def test_auth_comes_before_the_method_check(client, method):
    response = getattr(client, method)(URL)
    assert response.status_code == 401 and body(response) == {"error": "Unauthorized"}


@pytest.mark.parametrize("method", ["put", "patch", "delete", "options", "head"])
def test_other_methods_get_405_json_with_allow_and_run_nothing(client, method):
    response = getattr(client, method)(URL, headers=BEARER)
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"
    if method != "head":
        assert body(response) == {"error": "Method not allowed"}
    assert not JobRun.objects.exists()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"bearer {SECRET}"},
        {"Authorization": f"Basic {SECRET}"},
        {"Authorization": f"Bearer  {SECRET}"},
        {"Authorization": f"Bearer {SECRET} "},
        {"Authorization": SECRET},
        {"X-Cron-Secret": SECRET[:-1]},
        {"X-Cron-Secret": SECRET + "x"},
        {"X-Cron-Secret": f" {SECRET}"},
        {"X-Cron-Secret": ""},
        {"X-Internal-Secret": INTERNAL},
        {"X-Cron-Secret": INTERNAL},
    ],
    ids=lambda h: repr(h)[:40],
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_anything_but_the_exact_secret_gets_401_and_runs_nothing(client, method, headers, caplog):
    with caplog.at_level(logging.WARNING, logger="jobs"):
        response = getattr(client, method)(URL, headers=headers)
    assert response.status_code == 401
    assert body(response) == {"error": "Unauthorized"}
    assert not JobRun.objects.exists()
    assert "unauthorized job request" in caplog.text
    assert SECRET not in caplog.text and INTERNAL not in caplog.text


@pytest.mark.parametrize("setting", ["", None])
def test_without_cron_secret_every_call_gets_500_not_configured(client, settings, setting):
    settings.CRON_SECRET = setting or ""
    response = client.get(URL, headers={"Authorization": "Bearer "})
    assert response.status_code == 500
    assert body(response) == {"error": "CRON_SECRET not configured"}
    assert not JobRun.objects.exists()


def test_an_unknown_job_is_404_json_but_only_after_auth(client):
    assert client.get("/api/jobs/no-such-job").status_code == 401
    response = client.get("/api/jobs/no-such-job", headers=BEARER)
    assert response.status_code == 404 and body(response) == {"error": "Unknown job"}
    assert body(client.get("/api/jobs/a/b", headers=BEARER)) == {"error": "Not found"}


@pytest.mark.django_db(transaction=True)
def test_a_lock_held_elsewhere_gives_200_skipped():
    with lock_held_elsewhere(482175):
        response = Client().get(URL, headers=BEARER)
    data = body(response)
    assert response.status_code == 200
    assert data["skipped"] is True and data["reason"] == "locked" and data["status"] == "skipped"
    assert JobRun.objects.get().status == Status.SKIPPED


def test_recompute_scores_rejects_a_limit_it_does_not_take(client):
    response = client.get(f"{URL}?limit=5", headers=BEARER)
    assert response.status_code == 400
    assert body(response) == {"error": "limit: recompute-scores does not take a limit", "param": "limit"}


@pytest.mark.parametrize(
    ("query", "status", "error", "param"),
    [
        ("shopId=abc", 400, "shopId: must be a shop's UUID", "shopId"),
        ("shopId=", 400, "shopId: must be a shop's UUID", "shopId"),
        (f"shopId={uuid.UUID(int=1)}", 404, "shopId: no shop has this id", "shopId"),
        ("shopId=1%27%20OR%201%3D1", 400, "shopId: must be a shop's UUID", "shopId"),
        ("lockId=x", 400, "lockId: must be a whole number", "lockId"),
        ("lockId=1.5", 400, "lockId: must be a whole number", "lockId"),
        ("lockId=", 400, "lockId: must be a whole number", "lockId"),
        (f"lockId={2**63}", 400, f"lockId: must be from {-(2**63)} to {2**63 - 1}", "lockId"),
        (f"lockId={-(2**63) - 1}", 400, f"lockId: must be from {-(2**63)} to {2**63 - 1}", "lockId"),
        ("lockId=" + "9" * 500, 400, f"lockId: must be from {-(2**63)} to {2**63 - 1}", "lockId"),
        ("lockId=--1", 400, "lockId: must be a whole number", "lockId"),
        ("dryRun=maybe", 400, "dryRun: must be true or false", "dryRun"),
    ],
)
def test_malformed_parameters_get_a_4xx_naming_them_and_run_nothing(client, query, status, error, param):
    response = client.get(f"{URL}?{query}", headers=BEARER)
    assert response.status_code == status
    assert body(response) == {"error": error, "param": param}
    assert not JobRun.objects.exists()


@pytest.mark.parametrize(
    ("query", "limit"),
    [("", 200), ("limit=1", 1), ("limit=1000", 1000), ("limit=1001", 1000), ("limit=" + "9" * 400, 1000)],
)
def test_limit_defaults_to_200_and_is_capped_at_1000(client, monkeypatch, query, limit):
    from tests.helpers import make_job

    seen = {}

    def limited(*, now, limit):
        seen["limit"] = limit
        return {"total": 0, "errors": []}

    monkeypatch.setitem(JOBS, "limited", make_job("limited", limited))
    response = client.get(f"/api/jobs/limited?{query}", headers=BEARER)
    assert response.status_code == 200
    assert seen["limit"] == limit and JobRun.objects.get().params["limit"] == limit


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=abc", "limit=", "limit=1e3"])
def test_a_bad_limit_is_400(client, monkeypatch, query):
    from tests.helpers import make_job

    monkeypatch.setitem(JOBS, "limited", make_job("limited", lambda *, now, limit: {"errors": []}))
    response = client.get(f"/api/jobs/limited?{query}", headers=BEARER)
    assert response.status_code == 400 and body(response)["param"] == "limit"


def test_valid_parameters_are_used_and_unknown_ones_ignored(client):
    shop = make.shop()
    make.customer(shop)
    make.customer()  # another shop's
    response = client.get(f"{URL}?shopId={shop.pk}&lockId=123456&dryRun=1&utm=x", headers=BEARER)
    data = body(response)
    run = JobRun.objects.get()
    assert response.status_code == 200
    assert data["total"] == 1 and data["dryRun"] is True
    assert run.lock_id == 123456 and run.params["shop"] == str(shop.pk)
    assert not CustomerScore.objects.exists()


def test_in_production_the_query_lock_id_is_ignored_and_the_env_var_wins(client, settings):
    settings.PRODUCTION = True
    settings.RECOMPUTE_SCORES_LOCK_ID = 777
    client.get(f"{URL}?lockId=123456", headers=BEARER)
    assert JobRun.objects.get().lock_id == 777


def test_a_failed_job_is_500_json_with_the_run_id_and_no_traceback(client, monkeypatch):
    from tests.helpers import crashing, make_job

    monkeypatch.setitem(JOBS, "crashing", make_job("crashing", crashing))
    response = client.post("/api/jobs/crashing", headers={"X-Cron-Secret": SECRET})
    data = body(response)
    run = JobRun.objects.get()
    assert response.status_code == 500
    assert data == {"job": "crashing", "runId": run.pk, "status": "failed", "error": data["error"]}
    assert "Traceback" not in response.content.decode() and "RuntimeError" in run.traceback


def test_a_database_outage_is_503_json(client, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("jobs.views.run_job", unreachable)
    response = client.get(URL, headers=BEARER)
    assert response.status_code == 503 and body(response) == {"error": "Database unavailable"}


def test_the_internal_job_takes_only_the_internal_secret(client, monkeypatch):
    from tests.helpers import make_job

    job = make_job("internal-job", lambda *, now: {"errors": []})
    monkeypatch.setitem(JOBS, "internal-job", type(job)(**{**job.__dict__, "auth": "internal"}))
    assert client.post("/api/jobs/internal-job", headers={"X-Cron-Secret": SECRET}).status_code == 401
    assert client.get("/api/jobs/internal-job", headers=BEARER).status_code == 401
    response = client.post("/api/jobs/internal-job", headers={"X-Internal-Secret": INTERNAL})
    assert response.status_code == 200
    assert JobRun.objects.get().trigger == Trigger.INTERNAL


def test_vercel_json_and_the_registry_agree_and_each_cron_path_answers_a_vercel_request(client):
    config = json.loads((Path(__file__).resolve().parent.parent / "vercel.json").read_text())
    crons = {(cron["path"], cron["schedule"]) for cron in config["crons"]}
    registered = {(job.path, job.schedule) for job in JOBS.values() if job.schedule and job.auth == "cron"}
    assert crons == registered
    for path, schedule in sorted(crons):
        response = client.get(path, headers={**VERCEL, "X-Vercel-Cron-Schedule": schedule})
        assert response.status_code == 200, (path, response.content)
        assert body(response)["status"] == "succeeded"
    assert JobRun.objects.filter(trigger=Trigger.CRON).count() == len(crons)


def test_a_huge_body_is_never_read_and_runs_nothing(client):
    response = client.generic("POST", URL, data=b"x" * 5_000_000, content_type="application/octet-stream")
    assert response.status_code == 401 and body(response) == {"error": "Unauthorized"}
    assert not JobRun.objects.exists()
