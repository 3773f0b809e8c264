from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from jobs import alerts


class Command(BaseCommand):
    help = "Check every job as GET /api/jobs/health does (sending the alerts that are due). Exit 1 when failing."

    def handle(self, *args: Any, **options: Any) -> None:
        healths = alerts.check(timezone.now())
        bad = [h for h in healths if h.verdict == "failing" or h.late]
        width = max(len(h.job.name) for h in healths)
        for h in healths:
            late = " (late)" if h.late and h.verdict != "late" else ""
            self.stdout.write(f"  {h.job.name:<{width}}  {h.verdict}{late}{f'  {h.note}' if h.note else ''}")
        code = 503 if bad else 200
        self.stdout.write(f"health: {'failing' if bad else 'ok'} (GET /api/jobs/health answers {code})")
        self.stdout.write(f"alerts: {alerts.destinations()}")
        if bad:
            sys.exit(1)
