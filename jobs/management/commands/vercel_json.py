from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs import vercel


class Command(BaseCommand):
    help = (
        "Write vercel.json from the job declarations, as Cron Jobs (--crons) or Vercel Schedules (--schedules); "
        "without either, in the form the file has (crons if neither). Every other key is kept. With --check, "
        "write nothing: print the difference and exit 1 if the file does not match."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        form = parser.add_mutually_exclusive_group()
        form.add_argument("--crons", dest="form", action="store_const", const="crons", help="Cron Jobs (UTC)")
        form.add_argument("--schedules", dest="form", action="store_const", const="schedules", help="Vercel Schedules")
        parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
        parser.add_argument("--file", default=str(Path(settings.BASE_DIR) / "vercel.json"), help="default: vercel.json")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        current = self.read(path, must_exist=options["check"])
        form = options["form"] or vercel.form_of(current)
        try:
            expected = vercel.generated(current, form)
        except vercel.NotExpressible as error:
            raise CommandError(str(error)) from None
        if options["check"]:
            if diff := vercel.difference(current, expected, path.name):
                self.stdout.write(diff)
                raise CommandError(
                    f"{path.name} does not match the job declarations ({form}): run manage.py vercel_json"
                )
            self.stdout.write(f"{path.name} matches the job declarations ({form}).")
            return
        path.write_text(vercel.render(expected), encoding="utf-8")
        self.stdout.write(f"wrote {path.name} ({form}): {len(expected[form])} entries")

    def read(self, path: Path, *, must_exist: bool) -> dict[str, Any]:
        if not path.exists():
            if must_exist:
                raise CommandError(f"{path} does not exist")
            return {}
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CommandError(f"{path.name} is not valid JSON: {error}") from None
        if not isinstance(config, dict):
            raise CommandError(f"{path.name} must hold a JSON object")
        return config
