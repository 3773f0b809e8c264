"""Error reports (the technical 500 page, the error e-mails) hide what can hold a credential."""

from __future__ import annotations

import sys

import pytest
from django.test import RequestFactory
from django.views.debug import ExceptionReporter

SECRET = "-".join(["frame", "path", "secret", "3b9d"])  # never written whole: the page quotes this file's lines
WEBHOOK = f"https://hooks.example.com/services/T0/B0/{SECRET}"


def deliver(webhook_url: str, payload: dict[str, str]) -> None:
    raise ConnectionError("the receiver hung up")


@pytest.mark.parametrize("debug", [True, False])
def test_a_traceback_shows_no_local_variable_named_like_a_credential(settings, debug):
    settings.DEBUG = debug  # Django's own frame filtering (sensitive_variables) works only with DEBUG off
    try:
        deliver(WEBHOOK, {"text": "recompute-scores is failing"})
    except ConnectionError:
        report = ExceptionReporter(RequestFactory().get("/admin/"), *sys.exc_info())
        html, text = report.get_traceback_html(), report.get_traceback_text()
    assert "webhook_url" in html and "recompute-scores is failing" in html  # the locals are listed, other values shown
    assert SECRET not in html and SECRET not in text
