"""HTTP entry: /api/jobs/<name>, for Vercel Cron (GET + Bearer) and manual runs (POST + x-cron-secret)."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from jobs import alerts, report
from jobs.forms import ParamError, clean
from jobs.health import JobHealth, worst
from jobs.models import Status, Trigger
from jobs.registry import JOBS
from jobs.runner import run_job

logger = logging.getLogger("jobs")


def answer(body: Mapping[str, object], status: int = 200) -> JsonResponse:
    response = JsonResponse(body, status=status)
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt  # the caller proves itself with a secret, not a cookie
def run(request: HttpRequest, name: str) -> JsonResponse:
    job = JOBS.get(name)
    internal = job is not None and job.auth == "internal"
    if denied := authenticate(request, internal=internal):  # before anything else
        return denied
    if request.method not in ("GET", "POST"):
        response = answer({"error": "Method not allowed"}, 405)
        response["Allow"] = "GET, POST"
        return response
    if job is None:
        return answer({"error": "Unknown job"}, 404)
    query = query_names()
    given = {name: request.GET[query[name]] for name in query if query[name] in request.GET}
    if settings.PRODUCTION:
        given.pop("lock_id", None)  # as the reference's parseLockId: only the variable counts there
    try:
        params = clean(job.name, job.form, given)
        run = run_job(job, params, trigger=Trigger.INTERNAL if internal else Trigger.CRON, origin=caller(request))
    except ParamError as error:
        param = query.get(error.param, error.param)
        return answer({"error": f"{param}: {error.message}", "param": param}, error.status)
    except (OperationalError, InterfaceError):
        logger.exception("database unavailable for job %s", job.name)
        return answer({"error": "Database unavailable"}, 503)
    except Exception:  # JSON even with DEBUG on; the traceback goes to the log only
        logger.exception("job %s: request failed", job.name)
        return answer({"error": "Server error"}, 500)
    return answer(report.body(run), 500 if run.status == Status.FAILED else 200)


@csrf_exempt
def health(request: HttpRequest) -> JsonResponse:
    """Every job's verdict, for an uptime monitor: 200 when none is late, behind, blocked or failing, else 503
    with the worst of those as the status.

    Each request also checks lateness and queues the alerts that are due, so a job that stops
    arriving is noticed even when nothing else runs; it delivers what waits for at most 2 s in all.
    """
    if denied := authenticate(request, internal=False):
        return denied
    if request.method not in ("GET", "HEAD"):
        response = answer({"error": "Method not allowed"}, 405)
        response["Allow"] = "GET, HEAD"
        return response
    now = timezone.now()
    try:
        healths = alerts.check(now)
    except (OperationalError, InterfaceError):
        logger.exception("database unavailable for the health check")
        return answer({"error": "Database unavailable"}, 503)
    status = worst(healths)
    body = {"status": status, "checkedAt": iso(now), "jobs": {h.job.name: _health_entry(h) for h in healths}}
    return answer(body, 200 if status == "ok" else 503)


def _health_entry(h: JobHealth) -> dict[str, object]:
    return {
        "verdict": h.verdict,
        "late": h.late,
        "note": h.note,
        "lastRunId": h.last_run.pk if h.last_run else None,
        "lastRunStatus": h.last_run.status if h.last_run else None,
        "lastSuccessAt": iso(h.last_success.started_at) if h.last_success else None,
        "nextRunAt": iso(h.next_run) if h.next_run else None,
    }


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def query_names() -> dict[str, str]:
    """Each parameter any job takes (by field name) and its name in the query: shop -> shopId.

    A parameter of another job is refused by name (`limit: recompute-scores does not take a limit`);
    one that no job takes is ignored, as a tracking parameter should be.
    """
    return {name: job.form.query_name(name) for job in JOBS.values() for name in job.form.parameters()}


def authenticate(request: HttpRequest, *, internal: bool) -> JsonResponse | None:
    """None if the request carries the right secret, else the error to send.

    Cron jobs take `Authorization: Bearer <CRON_SECRET>` (Vercel) or
    `x-cron-secret: <CRON_SECRET>` (the reference pattern); internal jobs take
    only `x-internal-secret: <INTERNAL_SECRET>`. Compared in constant time, on
    digests so that not even the length shows.
    """
    setting = "INTERNAL_SECRET" if internal else "CRON_SECRET"
    secret: str = getattr(settings, setting)
    if not secret:
        logger.error("%s is not configured", setting)
        return answer({"error": f"{setting} not configured"}, 500)
    if internal:
        offered = [(request.headers.get("X-Internal-Secret"), secret)]
    else:
        offered = [
            (request.headers.get("Authorization"), f"Bearer {secret}"),
            (request.headers.get("X-Cron-Secret"), secret),
        ]
    if any(value is not None and _same(value, expected) for value, expected in offered):
        return None
    logger.warning("unauthorized job request: %s %s from %s", request.method, request.path[:100], caller(request))
    return answer({"error": "Unauthorized"}, 401)


def _same(given: str, expected: str) -> bool:
    digest = hashlib.sha256
    return hmac.compare_digest(
        digest(given.encode("utf-8", "surrogateescape")).digest(), digest(expected.encode()).digest()
    )


def caller(request: HttpRequest) -> str:
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
    agent = request.headers.get("User-Agent", "")[:80]
    return f"{agent or 'unknown agent'} from {forwarded or request.META.get('REMOTE_ADDR', '?')}"[:255]


# Errors outside the view (bad host, unknown path, crash) answer JSON under /api/.
def bad_request(request: HttpRequest, exception: Exception) -> object:
    if request.path.startswith("/api/"):
        return answer({"error": "Bad request"}, 400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> object:
    if request.path.startswith("/api/"):
        return answer({"error": "Forbidden"}, 403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> object:
    if request.path.startswith("/api/"):
        return answer({"error": "Not found"}, 404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> object:
    if request.path.startswith("/api/"):
        return answer({"error": "Server error"}, 500)
    return defaults.server_error(request)
