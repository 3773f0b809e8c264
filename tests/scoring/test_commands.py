from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from jobs.models import JobRun, Status, Trigger
from scoring.models import Appointment, Customer, CustomerScore, Outcome, Shop
from scoring.rules import score_for
from tests import factories as make
from tests.helpers import lock_held_elsewhere, manage

db = pytest.mark.django_db
real_db = pytest.mark.django_db(transaction=True)


def run(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command(*args, stdout=out)
    except SystemExit as exit:
        return int(exit.code), out.getvalue()
    return 0, out.getvalue()


def snapshot() -> tuple[list, list]:
    customers = list(Customer.objects.order_by("pk").values_list("pk", "shop_id", "name", "email"))
    appointments = list(
        Appointment.objects.order_by("pk").values_list("pk", "customer_id", "outcome", "checked_in_at", "cancelled_at")
    )
    return customers, appointments


@db
def test_seed_demo_is_deterministic_for_a_seed_and_runs_once():
    call_command(
        "seed_demo", "--shops", "2", "--customers", "20", "--appointments", "300", "--seed", "7", stdout=StringIO()
    )
    first = snapshot()
    out = StringIO()
    call_command("seed_demo", stdout=out)
    assert "already present" in out.getvalue()
    assert snapshot() == first
    call_command("seed_demo", "--shops", "2", "--customers", "20", "--appointments", "300", "--seed", "7", "--reset",
                 stdout=StringIO())  # fmt: skip
    ids = lambda rows: [row[0] for row in rows]  # noqa: E731
    assert ids(snapshot()[0]) == ids(first[0]) and ids(snapshot()[1]) == ids(first[1])
    assert (Shop.objects.count(), Customer.objects.count(), Appointment.objects.count()) == (2, 20, 300)


@db
def test_seed_demo_covers_every_outcome_and_the_work_of_every_job():
    call_command("seed_demo", "--appointments", "2000", stdout=StringIO())
    now = timezone.now()
    outcomes = Counter(Appointment.objects.values_list("outcome", flat=True))
    assert set(outcomes) == set(Outcome.values)
    past_pending = Appointment.objects.filter(outcome=Outcome.PENDING, ends_at__lt=now)
    assert past_pending.exists()  # for resolve-outcomes
    assert Appointment.objects.filter(starts_at__gt=now, cancelled_at__isnull=False).exists()  # freed slots
    assert not Appointment.objects.exclude(shop=F("customer__shop")).exists()


@db
def test_seed_demo_rejects_more_shops_than_customers():
    with pytest.raises(Exception, match="--customers must be at least --shops"):
        call_command("seed_demo", "--shops", "5", "--customers", "2", stdout=StringIO())


@db
def test_recompute_scores_json_prints_the_http_body_and_records_one_cli_run():
    make.customer()
    code, out = run("recompute_scores", "--json")
    body = json.loads(out)
    run_row = JobRun.objects.get()
    assert code == 0
    assert body["runId"] == run_row.pk and body["status"] == "succeeded" and body["total"] == 1
    assert run_row.trigger == Trigger.CLI and run_row.origin


@db
def test_recompute_scores_prints_a_readable_summary():
    make.customer()
    code, out = run("recompute_scores")
    assert code == 0
    assert out.startswith("recompute-scores: succeeded in ")
    assert "total 1" in out and "tier_new 1" in out and "errors: none" in out


@db
def test_run_job_runs_any_registered_job_with_the_same_output():
    code, out = run("run_job", "prune-job-runs", "--json")
    assert code == 0 and json.loads(out)["job"] == "prune-job-runs"


@db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recompute_scores", "--shop", "not-a-uuid"], "--shop: must be a shop's UUID"),
        (["recompute_scores", "--shop", "00000000-0000-4000-8000-000000000000"], "--shop: no shop has this id"),
        (["run_job", "recompute-scores", "--limit", "5"], "--limit: recompute-scores does not take a limit"),
        (["run_job", "prune-job-runs", "--shop", "00000000-0000-4000-8000-000000000000"], "--shop: prune-job-runs"),
        (["recompute_scores", "--lock-id", "12x"], "--lock-id: must be a whole number"),
        (["recompute_scores", "--lock-id", str(2**63)], "--lock-id: must be from"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument_and_run_nothing(args, message):
    result = manage(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not JobRun.objects.exists()


@db
def test_an_unknown_job_or_option_is_an_argument_error():
    assert manage("run_job", "no-such-job").returncode == 2
    assert manage("recompute_scores", "--limit", "5").returncode == 2  # recompute-scores takes no limit


@real_db
def test_a_lock_held_by_another_session_makes_the_command_exit_75_and_record_a_skip():
    with lock_held_elsewhere(482175):
        result = manage("recompute_scores", "--json")
    assert result.returncode == 75, result.stderr
    body = json.loads(result.stdout)
    assert body["skipped"] is True and body["reason"] == "locked"
    assert JobRun.objects.get().status == Status.SKIPPED


@real_db
def test_100k_appointments_seed_and_score_in_seconds_and_match_the_rule_for_every_customer():
    seeded = manage("seed_demo", "--shops", "20", "--customers", "10000", "--appointments", "100000")
    assert seeded.returncode == 0, seeded.stderr
    scored = manage("recompute_scores", "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["total"] == 10000

    now = datetime.fromisoformat(JobRun.objects.get().params["now"])
    counts: dict = {pk: Counter() for pk in Customer.objects.values_list("pk", flat=True)}
    window = Appointment.objects.filter(starts_at__gte=now - timedelta(days=180), starts_at__lt=now)
    resolved = window.exclude(outcome=Outcome.PENDING).filter(forgiven=False)  # the demo forgave a no-show
    for customer_id, outcome in resolved.values_list("customer_id", "outcome"):
        counts[customer_id][outcome] += 1
    stored = {row[0]: row[1:] for row in CustomerScore.objects.values_list("pk", "score", "tier", "cancellations")}
    assert len(stored) == 10000
    for customer_id, seen in counts.items():
        rule = score_for(seen[Outcome.ATTENDED], seen[Outcome.NO_SHOW], seen[Outcome.LATE_CANCEL])
        assert stored[customer_id] == (*rule, seen[Outcome.CANCELLED]), customer_id
