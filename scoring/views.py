"""HTTP entry: GET /api/customers/<uuid>/standing, for the booking app (x-internal-secret).

The same contract as the job endpoints (jobs/views.py): the secret is checked first, in constant time; every
answer is JSON with `Cache-Control: no-store`; 400 names the problem, 401 and 404 say what, and a database that
cannot be reached is a 503, never an HTML page or a traceback.
"""

from __future__ import annotations

import logging
import uuid

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from jobs.views import answer, authenticate
from scoring.standing import standing

logger = logging.getLogger("jobs")


@csrf_exempt  # the caller proves itself with a secret, not a cookie
def customer_standing(request: HttpRequest, customer: str) -> JsonResponse:
    if denied := authenticate(request, internal=True):  # before anything else
        return denied
    if request.method not in ("GET", "HEAD"):
        response = answer({"error": "Method not allowed"}, 405)
        response["Allow"] = "GET, HEAD"
        return response
    try:
        customer_id = uuid.UUID(customer)
    except ValueError:
        return answer({"error": "customer: must be a customer's UUID", "param": "customer"}, 400)
    try:
        body = standing(customer_id, timezone.now())
    except (OperationalError, InterfaceError):
        logger.exception("database unavailable for a customer's standing")
        return answer({"error": "Database unavailable"}, 503)
    except Exception:  # JSON even with DEBUG on; the traceback goes to the log only
        logger.exception("a customer's standing: request failed")
        return answer({"error": "Server error"}, 500)
    if body is None:
        return answer({"error": "customer: no customer has this id", "param": "customer"}, 404)
    return answer(body)
