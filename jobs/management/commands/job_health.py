from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from jobs import alerts
from jobs.health import worst


class Command(BaseCommand):
    help = "Check every job as GET /api/jobs/health does (sending the alerts that are due). Exit 1 unless ok."

    def handle(self, *args: Any, **options: Any) -> None:
        healths = alerts.check(timezone.now())
        status = worst(healths)
        width = max(len(h.job.name) for h in healths)
        for h in healths:
            late = " (late)" if h.late and h.verdict != "late" else ""
            self.stdout.write(f"  {h.job.name:<{width}}  {h.verdict}{late}{f'  {h.note}' if h.note else ''}")
        self.stdout.write(f"health: {status} (GET /api/jobs/health answers {200 if status == 'ok' else 503})")
        self.stdout.write(f"alerts: {alerts.destinations()}")
        if status != "ok":
            sys.exit(1)
