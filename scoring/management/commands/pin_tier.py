from __future__ import annotations

import uuid
from argparse import ArgumentParser
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from scoring.adjustments import AdjustmentError, pin_tier, unpin_tier
from scoring.models import Tier


class Command(BaseCommand):
    help = "Pin a customer's tier until a date (inclusive, UTC), or end the pin (--clear); the score stays."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("customer", metavar="CUSTOMER_ID", help="the customer's UUID")
        parser.add_argument("tier", metavar="TIER", nargs="?", help=f"one of {', '.join(Tier.values)}")
        parser.add_argument("--until", metavar="YYYY-MM-DD", help="the pin's last day (UTC)")
        parser.add_argument("--reason", required=True, help="why (kept in the adjustment log)")
        parser.add_argument("--clear", action="store_true", help="end the pin instead")
        parser.add_argument("--by", default="shell", help="who, for the log (default: shell)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            customer = uuid.UUID(options["customer"])
        except ValueError:
            raise CommandError(f"Not a customer id (a UUID): {options['customer']!r}", returncode=2) from None
        try:
            if options["clear"]:
                if options["tier"] or options["until"]:
                    raise CommandError("--clear takes no tier and no --until", returncode=2)
                now = unpin_tier(customer, by=options["by"], reason=options["reason"])
            else:
                tier, until = options["tier"], options["until"]
                if tier is None or until is None:
                    raise CommandError("give a TIER and --until YYYY-MM-DD (or --clear)", returncode=2)
                if tier not in Tier.values:
                    raise CommandError(f"Unknown tier {tier!r}: one of {', '.join(Tier.values)}", returncode=2)
                try:
                    last_day = date.fromisoformat(until)
                except ValueError:
                    raise CommandError(f"--until: not a date (YYYY-MM-DD): {until!r}", returncode=2) from None
                now = pin_tier(customer, tier, until=last_day, by=options["by"], reason=options["reason"])
        except AdjustmentError as error:
            raise CommandError(str(error)) from None
        except DatabaseError as error:  # unreachable, locked, not migrated: say so, without a traceback
            raise CommandError(f"database error: {(str(error).strip().splitlines() or ['no answer'])[0]}") from None
        self.stdout.write(f"{'Pin ended' if options['clear'] else 'Tier pinned'}. {now}")
