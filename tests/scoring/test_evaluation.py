"""evaluate-scores and compare_rules: what each tier at a past date predicted, held to an independent computation
on seeded data with a planted signal (each customer has a hidden chance of coming)."""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from jobs.models import JobRun
from scoring.evaluation import ShopEvaluation, TierRow, evaluate, sentence
from scoring.models import Appointment, Customer, Evaluation, Outcome, Shop
from scoring.rules import RECENT_DAYS, RULES, Counts, Rule, tier_for
from tests import factories as make
from tests.factories import NOW

pytestmark = pytest.mark.django_db
T = date(2026, 3, 3)  # 90 days before NOW
T_START = datetime.combine(T, time(), tzinfo=UTC)
WINDOW = timedelta(days=180)
SCORED = (Outcome.ATTENDED, Outcome.NO_SHOW, Outcome.LATE_CANCEL)
CRON = {"Authorization": "Bearer cron-secret-for-the-evaluation-tests"}


def plant(seed: int = 7, shops: int = 2, customers: int = 70) -> dict[uuid.UUID, float]:
    """Customers with a hidden chance of coming (0.3 to 1), appointments over the year before NOW drawn from it:
    some forgiven, some pending, some of those before T resolved only after T, some cancelled in time."""
    rng = random.Random(seed)
    hidden: dict[uuid.UUID, float] = {}
    rows = []
    for s in range(shops):
        shop = make.shop(f"Shop {s}")
        for c in range(customers):
            customer = Customer.objects.create(shop=shop, name=f"Customer {s}.{c}")
            hidden[customer.pk] = chance = rng.uniform(0.3, 1.0)
            for _ in range(rng.randrange(0, 12)):
                starts_at = NOW - timedelta(days=rng.uniform(0, 365))
                rows.append(_appointment(rng, customer, starts_at, chance))
    Appointment.objects.bulk_create(rows)
    return hidden


def _appointment(rng: random.Random, customer: Customer, starts_at: datetime, chance: float) -> Appointment:
    ends_at = starts_at + timedelta(minutes=45)
    roll = rng.random()
    if roll < chance:
        outcome, fields = Outcome.ATTENDED, {"checked_in_at": starts_at}
    elif roll < chance + (1 - chance) / 2:
        outcome, fields = Outcome.NO_SHOW, {}
    elif roll < chance + 0.8 * (1 - chance):
        outcome, fields = Outcome.LATE_CANCEL, {"cancelled_at": starts_at - timedelta(hours=3)}
    else:
        outcome, fields = Outcome.CANCELLED, {"cancelled_at": starts_at - timedelta(days=3)}
    resolved_at = ends_at + timedelta(hours=1) if rng.random() < 0.9 else ends_at + timedelta(days=rng.uniform(1, 9))
    if T_START - timedelta(days=10) <= starts_at < T_START and rng.random() < 0.5:
        resolved_at = T_START + timedelta(days=rng.uniform(0, 5))  # unknown at T: the replay must not count it
    if ends_at > NOW - timedelta(days=1) and rng.random() < 0.5:
        outcome, resolved_at = Outcome.PENDING, None
        fields.pop("cancelled_at", None)
    return Appointment(
        shop_id=customer.shop_id, customer=customer, starts_at=starts_at, ends_at=ends_at, outcome=outcome,
        resolved_at=resolved_at, forgiven=outcome in (Outcome.NO_SHOW, Outcome.LATE_CANCEL) and rng.random() < 0.1,
        **fields,
    )  # fmt: skip


def independent(rule: Rule, at: date = T, now: datetime = NOW) -> dict[uuid.UUID, dict]:
    """The evaluation computed in plain Python from the rows, customer by customer, with a pairwise AUC."""
    t = datetime.combine(at, time(), tzinfo=UTC)
    history: dict[uuid.UUID, list[Appointment]] = defaultdict(list)
    for appointment in Appointment.objects.filter(forgiven=False, outcome__in=SCORED):
        history[appointment.customer_id].append(appointment)
    shop_of = dict(Customer.objects.values_list("id", "shop_id"))

    def counts(appointments: list[Appointment], end: datetime, known: bool) -> list[int]:
        inside = [a for a in appointments if end - WINDOW <= a.starts_at < end and (not known or a.resolved_at <= end)]
        recent = [a for a in inside if a.starts_at >= end - timedelta(days=RECENT_DAYS)]
        return [sum(a.outcome == o for a in part) for part in (inside, recent) for o in SCORED]

    at_t = {c: counts(a, t, known=True) for c, a in history.items()}
    at_now = {c: counts(a, now, known=False) for c, a in history.items()}

    def shop_totals(table: dict[uuid.UUID, list[int]], shop: uuid.UUID) -> list[int]:
        return [sum(table[c][i] for c in table if shop_of[c] == shop) for i in range(3)]

    shops: dict[uuid.UUID, dict] = {}
    for customer, appointments in history.items():
        since = [a for a in appointments if t <= a.starts_at < now]
        if not since:
            continue
        shop = shop_of[customer]
        result = shops.setdefault(shop, {"tiers": defaultdict(lambda: [0, 0, 0, 0]), "people": [], "changes": 0})
        then = rule.score(Counts(*at_t[customer], *shop_totals(at_t, shop)))
        later = rule.score(Counts(*at_now[customer], *shop_totals(at_now, shop)))
        tier_then, tier_now = tier_for(then, sum(at_t[customer][:3])), tier_for(later, sum(at_now[customer][:3]))
        missed = sum(a.outcome != Outcome.ATTENDED for a in since)
        row = result["tiers"][tier_then.value]
        row[0], row[1], row[2], row[3] = row[0] + 1, row[1] + len(since), row[2] + missed, row[3] + (missed > 0)
        result["people"].append((then, missed > 0))
        result["changes"] += tier_then != tier_now
    for result in shops.values():
        kept = [score for score, missed in result["people"] if not missed]
        lost = [score for score, missed in result["people"] if missed]
        pairs = [(k > m) + 0.5 * (k == m) for k in kept for m in lost]
        result["auc"] = sum(pairs) / len(pairs) if pairs else None
    return shops


@pytest.mark.parametrize("rule", list(RULES))
def test_the_evaluation_equals_an_independent_computation_on_planted_data(rule):
    plant()
    expected = independent(RULES[rule])
    got = evaluate(T, NOW, rule=RULES[rule])
    assert set(got) == set(expected) and len(got) == 2
    for shop, result in got.items():
        tiers = {tier: [row.customers, row.appointments, row.missed, row.missed_any]
                 for tier, row in result.tiers.items() if row.customers}  # fmt: skip
        assert tiers == dict(expected[shop]["tiers"])
        assert result.tier_changes == expected[shop]["changes"]
        assert result.auc == pytest.approx(expected[shop]["auc"], abs=1e-12)


def test_the_planted_signal_shows_risky_customers_miss_more_and_the_auc_is_well_above_a_coin_toss():
    plant(seed=11, shops=1, customers=400)
    (result,) = evaluate(T, NOW).values()
    shares = {tier: result.tiers[tier].share for tier in ("reliable", "watch", "risky")}
    assert shares["reliable"] < shares["watch"] < shares["risky"], shares
    assert result.auc is not None and result.auc > 0.6  # 0.64 with this seed: about 5 appointments a customer


def test_one_shop_is_evaluated_alone():
    plant()
    shop = Shop.objects.order_by("name").first()
    assert shop is not None
    assert list(evaluate(T, NOW, shop=shop.pk)) == [shop.pk]
    assert evaluate(T, NOW, shop=shop.pk)[shop.pk].tiers == evaluate(T, NOW)[shop.pk].tiers


def test_the_sentence_names_the_worst_and_best_tier_with_their_shares():
    result = ShopEvaluation(uuid.uuid4(), date(2026, 9, 3), "default")
    result.tiers["risky"] = TierRow(customers=10, appointments=50, missed=19)
    result.tiers["reliable"] = TierRow(customers=40, appointments=200, missed=8)
    assert (
        sentence(result) == "Customers rated risky on 3 Sep missed 38 % of their appointments since; reliable ones 4 %."
    )
    result.tiers["risky"] = TierRow()
    result.tiers["watch"] = TierRow(customers=5, appointments=10, missed=3)
    assert (
        sentence(result) == "Customers rated watch on 3 Sep missed 30 % of their appointments since; reliable ones 4 %."
    )
    assert sentence(ShopEvaluation(uuid.uuid4(), date(2026, 9, 3), "default")) == (
        "No customer rated on 3 Sep has had an appointment since."
    )


@pytest.fixture
def cron(settings):
    settings.CRON_SECRET = CRON["Authorization"].removeprefix("Bearer ")


def test_the_job_stores_one_evaluation_per_shop_and_run(cron):
    plant()
    with time_machine.travel(NOW, tick=False):
        response = Client().get("/api/jobs/evaluate-scores", headers=CRON)
    body = json.loads(response.content)
    assert response.status_code == 200, body
    expected = evaluate(T, NOW)
    assert body["shops"] == 2
    assert body["customers"] == sum(result.customers for result in expected.values())
    stored = {row.shop_id: row for row in Evaluation.objects.all()}
    assert set(stored) == set(expected)
    for shop, row in stored.items():
        assert (row.at, row.computed_at, row.rule, row.window_days) == (T, NOW, "default", 180)  # T: 90 days ago
        assert row.auc == pytest.approx(expected[shop].auc)
        assert row.tiers["risky"] == vars(expected[shop].tiers["risky"])
        assert (row.customers, row.tier_changes) == (expected[shop].customers, expected[shop].tier_changes)


def test_a_dry_run_stores_nothing_and_a_date_can_be_given(cron):
    plant()
    with time_machine.travel(NOW, tick=False):
        assert Client().get("/api/jobs/evaluate-scores?dryRun=1&at=2026-01-10", headers=CRON).status_code == 200
        assert not Evaluation.objects.exists()
        assert Client().get("/api/jobs/evaluate-scores?at=2026-01-10", headers=CRON).status_code == 200
    assert set(Evaluation.objects.values_list("at", flat=True)) == {date(2026, 1, 10)}


@pytest.mark.parametrize(
    ("query", "error"),
    [("at=03-09-2026", "at: must be a date, YYYY-MM-DD"), ("at=2026-06-01", "at: must be a day before today (UTC)"),
     ("at=2027-01-01", "at: must be a day before today (UTC)"), ("shopId=nope", "shopId: must be a shop's UUID")],
)  # fmt: skip
def test_a_bad_parameter_is_a_400_naming_it(cron, query, error):
    with time_machine.travel(NOW, tick=False):
        response = Client().get(f"/api/jobs/evaluate-scores?{query}", headers=CRON)
    assert response.status_code == 400
    assert json.loads(response.content)["error"] == error
    assert not JobRun.objects.exists()


def test_compare_rules_prints_every_rule_side_by_side_for_each_shop():
    plant()
    out = StringIO()
    with time_machine.travel(NOW, tick=False):
        call_command("compare_rules", stdout=out)
    text = out.getvalue()
    assert "Rules scored on the history before 03 Mar 2026 (UTC), outcomes until 01 Jun 2026:" in text
    expected = {name: evaluate(T, NOW, rule=rule) for name, rule in RULES.items()}
    for shop in Shop.objects.all():
        block = text.split(f"{shop.name} ({shop.pk})")[1].split("\n\n")[0]
        for name, results in expected.items():
            line = next(line for line in block.splitlines() if line.startswith(name + " "))
            assert f"{results[shop.pk].auc:.3f}" in line
    assert not Evaluation.objects.exists()  # it only prints


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--shop", "nope"], "--shop: must be a shop's UUID"),
     (["--shop", str(uuid.UUID(int=3))], "--shop: no shop has this id"),
     (["--at", "yesterday"], "--at: must be a date, YYYY-MM-DD")],
)  # fmt: skip
def test_compare_rules_refuses_bad_arguments_by_name(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("compare_rules", *args, stdout=StringIO())
