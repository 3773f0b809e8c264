"""The check-in protocols of outside cron monitors, told apart by their URLs (see jobs/checkins.py)."""

from __future__ import annotations

import re
import urllib.parse
import uuid
from typing import Literal

from django.conf import settings

from jobs.registry import JOBS

Signal = Literal["start", "success", "fail"]
Protocol = Literal["healthchecks", "sentry", "cronitor"]
WORDS: dict[str, dict[str, str]] = {  # each protocol's words for each signal
    "sentry": {"start": "in_progress", "success": "ok", "fail": "error"},
    "cronitor": {"start": "run", "success": "complete", "fail": "fail"},
    "healthchecks": {"start": "/start", "success": "", "fail": "/fail"},
}
PAIRING = uuid.UUID("4f9b8a52-2d0e-4c1b-9a57-6c0de1c4c9a1")  # the namespace of the runs' pairing ids


def url_of(job_name: str) -> str:
    """The job's check-in URL ("" when it has none)."""
    job = JOBS.get(job_name)
    return settings.JOBS_CHECKIN_URLS.get(job.variable("CHECKIN_URL"), "") if job else ""


def protocol(url: str) -> Protocol:
    parts = urllib.parse.urlsplit(url)
    if re.fullmatch(r"/api/[^/]+/cron/[^/]+/[^/]+/?", parts.path):
        return "sentry"
    host = parts.hostname or ""
    if host == "cronitor.link" or host.endswith(".cronitor.link") or re.fullmatch(r"/ping/[^/]+/[^/]+/?", parts.path):
        return "cronitor"
    return "healthchecks"


def pairing_id(run_id: int) -> str:
    """The id that pairs a run's start and end signals: a UUID (healthchecks' rid must be one), the same for both."""
    return str(uuid.uuid5(PAIRING, f"run {run_id}"))


def ping_url(url: str, signal: str, run_id: int) -> str:
    """The request that gives `signal` for run `run_id` in the protocol the URL shows."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    pair = pairing_id(run_id)
    kind = protocol(url)
    path = parts.path
    if kind == "sentry":
        path = path.rstrip("/") + "/"
        query += [("status", WORDS[kind][signal]), ("check_in_id", pair)]
    elif kind == "cronitor":
        query += [("state", WORDS[kind][signal]), ("series", pair)]
    else:
        path = path.rstrip("/") + WORDS[kind][signal]
        query += [("rid", pair)]
    return urllib.parse.urlunsplit(parts._replace(path=path or "/", query=urllib.parse.urlencode(query)))
