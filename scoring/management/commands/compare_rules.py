"""Evaluate every rule in scoring.rules on each shop's own history, side by side; stores nothing."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone

from jobs.forms import ParamError, clean
from scoring.evaluation import TIERS, default_at, evaluate, percent
from scoring.jobs import EvaluateForm
from scoring.models import Shop
from scoring.rules import RULES


class Command(BaseCommand):
    help = "Print, per shop, what each rule in scoring.rules would have predicted from a past date (default 90 days)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--shop", help="only this shop (UUID)")
        parser.add_argument("--at", help="score as of this day, YYYY-MM-DD")

    def handle(self, *args: Any, **options: Any) -> None:
        given = {name: options[name] for name in ("shop", "at") if options.get(name) is not None}
        try:
            params = clean("compare_rules", EvaluateForm, given)
        except ParamError as error:
            raise CommandError(f"--{error.param}: {error.message}", returncode=2) from None
        now = timezone.now()
        at = params["at"] or default_at(now)
        try:
            by_rule = {name: evaluate(at, now, rule=rule, shop=params["shop"]) for name, rule in RULES.items()}
            names = dict(Shop.objects.values_list("id", "name"))
        except DatabaseError as error:
            raise CommandError(f"database error: {(str(error).strip().splitlines() or ['no answer'])[0]}") from None
        self.stdout.write(f"Rules scored on the history before {at:%d %b %Y} (UTC), outcomes until {now:%d %b %Y}:")
        for name, rule in RULES.items():
            self.stdout.write(f"  {name:<11} {rule.description}")
        self.stdout.write(
            "Per tier on that day: the share of its customers' appointments since that they missed (customers)."
        )
        shops = sorted(set().union(*by_rule.values()), key=lambda shop: (names.get(shop, ""), shop))
        if not shops:
            self.stdout.write("No customer has had an appointment since then: nothing to compare.")
        header = f"{'rule':<11} {'AUC':>5}  " + "  ".join(f"{tier + ' missed':>16}" for tier in TIERS)
        for shop in shops:
            first = next(result[shop] for result in by_rule.values() if shop in result)
            self.stdout.write(f"\n{names.get(shop, shop)} ({shop}): {first.customers} customers, "
                              f"{first.appointments} appointments since")  # fmt: skip
            self.stdout.write(header + "  changed tier")
            for name, results in by_rule.items():
                result = results[shop]
                auc = "-" if result.auc is None else f"{result.auc:.3f}"
                cells = "  ".join(
                    f"{percent(result.tiers[tier].share) + f' ({result.tiers[tier].customers})':>16}" for tier in TIERS
                )
                self.stdout.write(f"{name:<11} {auc:>5}  {cells}  {result.tier_changes:>12}")
