"""The cron endpoints through Django's test client: methods x auth x parameters."""

from __future__ import annotations

import json
import logging

import pytest
from django.contrib.auth.models import Group
from django.db import OperationalError
from django.test import Client

from jobs.models import JobRun, Status, Trigger
from tests.framework.testjobs import TEST_LOCK_ID
from tests.helpers import lock_held_elsewhere

SECRET = "s3cret-for-tests-0123456789abcdef"
INTERNAL = "internal-secret-for-tests-0123456789"
URL = "/api/jobs/nightly"
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
    response = client.get(URL + "?size=2", headers=VERCEL)
    data = body(response)
    run = JobRun.objects.get()
    assert response.status_code == 200
    assert data == {"job": "nightly", "runId": run.pk, "status": "succeeded", "total": 2, "written": 2, "errors": []}
    assert list(data) == ["job", "runId", "status", "total", "written", "errors"]  # the declared order
    assert Group.objects.count() == 2
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
    with lock_held_elsewhere(TEST_LOCK_ID):
        response = Client().get(URL, headers=BEARER)
    data = body(response)
    assert response.status_code == 200
    assert data["skipped"] is True and data["reason"] == "locked" and data["status"] == "skipped"
    assert JobRun.objects.get().status == Status.SKIPPED


def test_a_parameter_of_another_job_is_refused_by_name(client):
    response = client.get("/api/jobs/frequent?size=5", headers=BEARER)
    assert response.status_code == 400
    assert body(response) == {"error": "size: frequent does not take a size", "param": "size"}


@pytest.mark.parametrize(
    ("query", "error", "param"),
    [
        ("size=abc", "size: must be a whole number", "size"),
        ("size=", "size: must be a whole number", "size"),
        ("size=0", "size: must be >= 1", "size"),
        ("size=-1", "size: must be >= 1", "size"),
        ("size=1e3", "size: must be a whole number", "size"),
        ("size=%2B5", "size: must be a whole number", "size"),
        ("size=%205", "size: must be a whole number", "size"),
        ("size=%D9%A5", "size: must be a whole number", "size"),  # an Arabic-Indic 5
        ("size=5_0", "size: must be a whole number", "size"),
        ("lockId=x", "lockId: must be a whole number", "lockId"),
        ("lockId=1.5", "lockId: must be a whole number", "lockId"),
        ("lockId=", "lockId: must be a whole number", "lockId"),
        (f"lockId={2**63}", f"lockId: must be from {-(2**63)} to {2**63 - 1}", "lockId"),
        (f"lockId={-(2**63) - 1}", f"lockId: must be from {-(2**63)} to {2**63 - 1}", "lockId"),
        ("lockId=" + "9" * 500, f"lockId: must be from {-(2**63)} to {2**63 - 1}", "lockId"),
        ("lockId=--1", "lockId: must be a whole number", "lockId"),
        ("dryRun=maybe", "dryRun: must be true or false", "dryRun"),
        ("prefix=" + "x" * 21, "prefix: Ensure this value has at most 20 characters (it has 21).", "prefix"),
    ],
)
def test_malformed_parameters_get_a_400_naming_them_and_run_nothing(client, query, error, param):
    response = client.get(f"{URL}?{query}", headers=BEARER)
    assert response.status_code == 400
    assert body(response) == {"error": error, "param": param}
    assert not JobRun.objects.exists()


@pytest.mark.parametrize(
    ("query", "size"),
    [("", 200), ("size=1", 1), ("size=1000", 1000), ("size=1001", 1000), ("size=" + "9" * 400, 1000)],
)
def test_a_default_and_a_cap_come_from_the_form(client, query, size):
    response = client.get(f"{URL}?{query}", headers=BEARER)
    assert response.status_code == 200
    assert body(response)["written"] == size and JobRun.objects.get().params["size"] == size


def test_valid_parameters_are_used_and_unknown_ones_ignored(client):
    response = client.get(f"{URL}?size=2&prefix=p&lockId=123456&dryRun=1&utm=x", headers=BEARER)
    data = body(response)
    run = JobRun.objects.get()
    assert response.status_code == 200
    assert data["written"] == 2 and data["dryRun"] is True
    assert run.lock_id == 123456 and run.params["prefix"] == "p" and run.params["dry_run"] is True
    assert not Group.objects.exists()


def test_in_production_the_query_lock_id_is_ignored_and_the_variable_wins(client, settings):
    settings.PRODUCTION = True
    settings.JOBS_LOCK_IDS = {"NIGHTLY_LOCK_ID": 777}
    client.get(f"{URL}?lockId=123456", headers=BEARER)
    assert JobRun.objects.get().lock_id == 777


def test_a_failed_job_is_500_json_with_the_run_id_and_no_traceback(client):
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


def test_an_internal_job_takes_only_the_internal_secret(client):
    assert client.post("/api/jobs/on-demand", headers={"X-Cron-Secret": SECRET}).status_code == 401
    assert client.get("/api/jobs/on-demand", headers=BEARER).status_code == 401
    response = client.post("/api/jobs/on-demand", headers={"X-Internal-Secret": INTERNAL})
    assert response.status_code == 200
    assert JobRun.objects.get().trigger == Trigger.INTERNAL


def test_a_huge_body_is_never_read_and_runs_nothing(client):
    response = client.generic("POST", URL, data=b"x" * 5_000_000, content_type="application/octet-stream")
    assert response.status_code == 401 and body(response) == {"error": "Unauthorized"}
    assert not JobRun.objects.exists()
