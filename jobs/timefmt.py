"""How a time reads wherever staff see one: `2026-12-02 04:34 UTC`, with its age where useful.

One spelling for the admin's own columns and read-only fields (project/formats gives Django
these formats), the jobs' pages, run parameters, messages and alert texts: plain functions,
importable from anywhere in the framework (they import nothing of it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.utils import timezone

# Django's date-format syntax; `T` is the zone's name, "UTC" once the time is in UTC.
DATETIME_FORMAT = "Y-m-d H:i T"
DATETIME_SECONDS_FORMAT = "Y-m-d H:i:s T"
DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i"


def utc(moment: datetime | None, *, seconds: bool = False) -> str:
    """`2026-12-02 04:34 UTC` (`2026-12-02 04:34:27 UTC` with seconds); "-" for no time."""
    if moment is None:
        return "-"
    # DATETIME_SECONDS_FORMAT / DATETIME_FORMAT as strftime spells them: Django's dateformat took 0.1 ms a time, and
    # the jobs overview shows over a hundred.
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def ago(delta: timedelta) -> str:
    """A short human duration: 45 s, 12 min, 26 h, 3 d."""
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 120 * 60:
        return f"{seconds // 60} min"
    if seconds < 72 * 3600:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def age(moment: datetime, now: datetime | None = None) -> str:
    """How long ago (`3 h ago`) or how soon (`in 12 min`) `moment` is."""
    delta = (now or timezone.now()) - moment
    return f"{ago(delta)} ago" if delta >= timedelta(0) else f"in {ago(-delta)}"


def when(moment: datetime | None, now: datetime | None = None, *, seconds: bool = False) -> str:
    """The time and its age: `2026-12-02 04:34 UTC, 3 h ago`; "-" for no time."""
    if moment is None:
        return "-"
    return f"{utc(moment, seconds=seconds)}, {age(moment, now)}"


def moment_in(value: object) -> datetime | None:
    """The time a JSON value holds, if it is an ISO 8601 text with a zone (`2026-12-02T06:40:20.892438+00:00`)."""
    if not isinstance(value, str) or len(value) < 20 or value[10:11] != "T":
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
