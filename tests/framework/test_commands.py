"""`run_job NAME`: its options come from the jobs' forms; the command only parses, runs and prints."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from jobs.models import JobRun, Trigger

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("run_job", *args, stdout=out)
    except SystemExit as exit:
        return int(exit.code), out.getvalue()
    return 0, out.getvalue()


def test_options_come_from_the_form_and_the_json_is_the_http_body():
    code, out = run("nightly", "--size", "3", "--prefix", "cli", "--json")
    run_row = JobRun.objects.get()
    assert code == 0
    assert json.loads(out) == {
        "job": "nightly", "runId": run_row.pk, "status": "succeeded", "total": 3, "written": 3, "errors": []
    }  # fmt: skip
    assert (run_row.trigger, run_row.params["size"], run_row.params["prefix"]) == (Trigger.CLI, 3, "cli")


def test_the_summary_lists_counters_in_their_declared_order():
    code, out = run("nightly", "--size", "1")
    assert code == 0 and out.startswith("nightly: succeeded in ")
    assert "\n  total 1  written 1\n  errors: none" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nightly", "--size", "+5"], "--size: must be a whole number"),
        (["nightly", "--size", "0"], "--size: must be >= 1"),
        (["frequent", "--size", "5"], "--size: frequent does not take a size"),
        (["nightly", "--lock-id", "1_000"], "--lock-id: must be a whole number"),
    ],
)
def test_a_bad_option_exits_2_naming_it_and_runs_nothing(args, message):
    with pytest.raises(CommandError, match=message) as raised:
        call_command("run_job", *args, stdout=StringIO())
    assert raised.value.returncode == 2
    assert not JobRun.objects.exists()


def test_exit_codes_say_how_the_run_ended():
    assert run("failing-item")[0] == 1  # partial
    code, out = run("crashing")
    assert code == 1  # failed
    assert "RuntimeError: the job itself broke" in out and "the full traceback is stored on run" in out


def test_at_default_verbosity_each_item_error_is_one_line_and_no_traceback_is_printed(capsys):
    code, out = run("failing-item")
    printed = out + capsys.readouterr().err
    assert code == 1
    assert printed.count("item 2:") == 1 and "Traceback" not in printed
    run_row = JobRun.objects.get()
    assert "Traceback" in run_row.traceback and run_row.traceback.startswith("item 2:")  # kept on the run


def test_with_verbosity_2_the_tracebacks_are_printed(capsys):
    run("failing-item", "-v", "2")
    assert "Traceback" in capsys.readouterr().err
