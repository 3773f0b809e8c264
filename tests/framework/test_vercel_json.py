"""manage.py vercel_json: vercel.json from the declarations, as Cron Jobs or as Vercel Schedules, and --check."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command

from jobs.registry import JOBS
from tests.framework.testjobs import PASSES
from tests.helpers import ROOT


@pytest.fixture(autouse=True)
def passes(monkeypatch):
    monkeypatch.setitem(JOBS, "passes", PASSES)  # a job with a second, weekly call


def vercel_json(*args: str) -> str:
    out = io.StringIO()
    call_command("vercel_json", *args, stdout=out)
    return out.getvalue()


def test_crons_are_written_from_the_declarations_and_every_other_key_is_kept(tmp_path):
    path = tmp_path / "vercel.json"
    path.write_text(json.dumps({"$schema": "x", "crons": [], "functions": {"api/x.py": {"maxDuration": 300}}}))
    vercel_json("--file", str(path))
    config = json.loads(path.read_text())
    assert list(config) == ["$schema", "crons", "functions"]
    assert config["functions"] == {"api/x.py": {"maxDuration": 300}}
    assert {(c["path"], c["schedule"]) for c in config["crons"]} == {
        ("/api/jobs/nightly", "0 2 * * *"), ("/api/jobs/frequent", "*/5 * * * *"),
        ("/api/jobs/prune-job-runs", "30 4 * * *"), ("/api/jobs/passes", "0 2 * * *"),
        ("/api/jobs/passes?full=1", "0 3 * * 0"),
    }  # fmt: skip


def test_schedules_carry_path_expression_and_time_zone_and_replace_the_crons(tmp_path, monkeypatch):
    monkeypatch.setitem(JOBS, "nightly", dataclasses.replace(JOBS["nightly"], timezone="Europe/Berlin",
                                                             jitter=timedelta(minutes=5)))  # fmt: skip
    path = tmp_path / "vercel.json"
    path.write_text(json.dumps({"$schema": "x", "crons": [{"path": "/old", "schedule": "* * * * *"}]}))
    vercel_json("--schedules", "--file", str(path))
    config = json.loads(path.read_text())
    assert list(config) == ["$schema", "schedules"]
    assert config["schedules"]["nightly"] == {
        "path": "/api/jobs/nightly", "schedule": "0 2 * * *", "timezone": "Europe/Berlin", "jitter": 5,
    }  # fmt: skip
    assert config["schedules"]["passes-full-1"] == {
        "path": "/api/jobs/passes?full=1", "schedule": "0 3 * * 0", "timezone": "UTC",
    }  # fmt: skip
    assert "on-demand" not in config["schedules"]  # an internal job is not Vercel's to call


@pytest.mark.parametrize("form", ["--crons", "--schedules"])
def test_check_passes_on_either_form_and_fails_naming_the_difference_once_a_declaration_changes(
    tmp_path, monkeypatch, form
):
    path = tmp_path / "vercel.json"
    vercel_json(form, "--file", str(path))
    assert "matches the job declarations" in vercel_json("--check", "--file", str(path))  # the form the file has
    entries = json.loads(path.read_text())[form.strip("-")]
    if form == "--crons":  # the order of the crons, and the file's formatting, do not matter
        path.write_text(json.dumps({"crons": entries[::-1], "$schema": "https://openapi.vercel.sh/vercel.json"}))
        vercel_json("--check", "--file", str(path))

    monkeypatch.setitem(JOBS, "nightly", dataclasses.replace(JOBS["nightly"], schedule="0 1 * * *"))
    before = path.read_text()
    out = io.StringIO()
    with pytest.raises(CommandError, match="does not match the job declarations"):
        call_command("vercel_json", "--check", "--file", str(path), stdout=out)
    assert '-      "schedule": "0 2 * * *"' in out.getvalue() and '+      "schedule": "0 1 * * *"' in out.getvalue()
    assert path.read_text() == before  # --check writes nothing


def test_cron_jobs_cannot_say_a_time_zone(tmp_path, monkeypatch):
    monkeypatch.setitem(JOBS, "nightly", dataclasses.replace(JOBS["nightly"], timezone="Europe/Berlin"))
    with pytest.raises(CommandError, match=r"Cron Jobs run in UTC, and nightly \(Europe/Berlin\).*--schedules"):
        vercel_json("--crons", "--file", str(tmp_path / "vercel.json"))


def test_a_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "vercel.json"
    path.write_text("{crons: []}")
    with pytest.raises(CommandError, match=r"vercel\.json is not valid JSON"):
        vercel_json("--check", "--file", str(path))


def test_the_command_exits_non_zero_and_prints_the_difference(tmp_path):
    path = tmp_path / "vercel.json"
    path.write_text(json.dumps({"crons": [{"path": "/api/jobs/resolve-outcomes", "schedule": "0 1 * * *"}]}))
    done = subprocess.run(
        [sys.executable, "manage.py", "vercel_json", "--check", "--file", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={"DEBUG": "true", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert '-      "schedule": "0 1 * * *"' in done.stdout and "does not match" in done.stderr
