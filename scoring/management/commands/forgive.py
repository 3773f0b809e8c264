from __future__ import annotations

import uuid
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from scoring.adjustments import AdjustmentError, forgive


class Command(BaseCommand):
    help = "Forgive a no-show or late cancel (it counts in no score), or undo that; the customer is rescored at once."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("appointment", metavar="APPOINTMENT_ID", help="the appointment's UUID")
        parser.add_argument("--reason", required=True, help="why (kept in the adjustment log)")
        parser.add_argument("--undo", action="store_true", help="take a forgiveness back (a new log entry)")
        parser.add_argument("--by", default="shell", help="who, for the log (default: shell)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            appointment = uuid.UUID(options["appointment"])
        except ValueError:
            raise CommandError(f"Not an appointment id (a UUID): {options['appointment']!r}", returncode=2) from None
        try:
            now = forgive(appointment, by=options["by"], reason=options["reason"], undo=options["undo"])
        except AdjustmentError as error:
            raise CommandError(str(error)) from None
        except DatabaseError as error:  # unreachable, locked, not migrated: say so, without a traceback
            raise CommandError(f"database error: {(str(error).strip().splitlines() or ['no answer'])[0]}") from None
        self.stdout.write(f"{'Forgiveness undone' if options['undo'] else 'Forgiven'}. {now}")
