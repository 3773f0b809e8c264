from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from jobs import alerts, outbox
from jobs.health import worst


class Command(BaseCommand):
    help = (
        "Check every job as GET /api/jobs/health does, and deliver the alerts that wait (up to 30 s), saying what "
        "became of each. Exit 1 unless ok."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        healths = alerts.check(now, send_for=0)  # decided here; delivered below, with more patience than a request
        reports = outbox.send_due(now, max(outbox.COMMAND_SECONDS, outbox.send_seconds()))
        status = worst(healths)
        width = max(len(h.job.name) for h in healths)
        for h in healths:
            late = " (late)" if h.late and h.verdict != "late" else ""
            self.stdout.write(f"  {h.job.name:<{width}}  {h.verdict}{late}{f'  {h.note}' if h.note else ''}")
        self.stdout.write(f"health: {status} (GET /api/jobs/health answers {200 if status == 'ok' else 503})")
        self.stdout.write(f"alerts: {alerts.destinations()}")
        for report in reports:
            self.stdout.write(f"  {report.line()}")
        if not reports:
            self.stdout.write("  none waiting")
        if status != "ok":
            sys.exit(1)
