"""The score history (scoring/history.py, migration 0014): one row per change of a score or tier, with what it was
before, written by the statements that change the scores, with the run; pruned with the job runs."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobs.context import Context
from jobs.models import Trigger
from jobs.runner import run_job
from scoring import history, scores
from scoring.models import Customer, CustomerScore, Outcome, ScoreChange
from tests import factories as make
from tests.factories import NOW
from tests.helpers import blocks_read, outside_a_run, pages_written
from tests.scoring.test_incremental import apply, changes

pytestmark = pytest.mark.django_db


def recompute(now, **kwargs):
    return outside_a_run(scores.recompute_scores, now, **kwargs)


def changes_of(customer: Customer) -> list[tuple]:
    rows = ScoreChange.objects.filter(customer=customer).order_by("at", "id")
    return list(rows.values_list("at", "previous_score", "score", "tier"))


def test_each_change_of_a_score_or_tier_adds_one_row_with_what_it_was_and_nothing_else_does():
    a, b = make.customer(name="a"), make.customer(name="b")
    leaving = make.appointment(a, NOW - timedelta(days=179), Outcome.NO_SHOW)
    recompute(NOW)
    assert not ScoreChange.objects.exists()  # a first score is no change

    later = NOW + timedelta(hours=1)
    make.appointment(a, NOW - timedelta(days=2), Outcome.CANCELLED)  # counted, not scored: a new row, same score
    recompute(later)
    assert CustomerScore.objects.get(customer=a).cancellations == 1
    assert not ScoreChange.objects.exists()

    make.appointment(b, NOW - timedelta(days=2), Outcome.NO_SHOW)
    recompute(later)
    assert changes_of(b) == [(later, 50, 33, "new")] and changes_of(a) == []

    for days in (3, 4):
        make.appointment(b, NOW - timedelta(days=days), Outcome.ATTENDED)
    recompute(later)  # 3 scored appointments: the tier changes too
    assert changes_of(b)[-1] == (later, 33, 60, "watch")

    slid = leaving.starts_at + timedelta(days=180, hours=1)  # the window slides past a's no-show: no mark
    assert recompute(slid)["full_pass"] == 0
    assert changes_of(a) == [(slid, 33, 50, "new")]


def test_the_run_that_changed_a_score_is_kept_with_it_and_with_the_change():
    customer = make.customer()
    first = run_job("recompute-scores", trigger=Trigger.CLI)
    assert CustomerScore.objects.get(customer=customer).run_id == first.pk
    second = run_job("recompute-scores", trigger=Trigger.CLI)  # nothing changed
    assert second.counters["changed"] == 0
    assert CustomerScore.objects.get(customer=customer).run_id == first.pk
    make.appointment(customer, second.started_at - timedelta(days=1), Outcome.NO_SHOW)
    third = run_job("recompute-scores", trigger=Trigger.CLI)
    assert list(ScoreChange.objects.values_list("customer_id", "run_id")) == [(customer.pk, third.pk)]
    assert CustomerScore.objects.get(customer=customer).run_id == third.pk


runs = st.sampled_from(["whole", "full", "shop", "cut", "cut full"])
rounds = st.lists(
    st.tuples(st.lists(changes, max_size=5), st.integers(0, 20 * 24), runs, st.sampled_from([1, 7, 1000])),
    min_size=2,
    max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Found by this test: a resumed full pass wrote a score as of its start, after a run narrowed to a shop had recorded
# a later change of it (migration 0019).
@example(
    rounds=[
        ([("delete", 0), ("outcome", 46, Outcome.NO_SHOW), ("move", 0, 0), ("delete", 9), ("reassign", 3, 16)], 432,
         "full", 7),
        ([("outcome", 12, Outcome.ATTENDED), ("move", 15, 1), ("delete", 18), ("forgive", 40, True), ("move", 0, 0)],
         239, "whole", 1000),
        ([("reassign", 16, 18), ("delete", 21), ("insert", 7, -214, Outcome.LATE_CANCEL),
          ("insert", 15, -176, Outcome.PENDING), ("outcome", 25, Outcome.ATTENDED)], 319, "cut full", 1),
        ([("move", 5, 1), ("reassign", 12, 4), ("reassign", 38, 7), ("outcome", 5, Outcome.LATE_CANCEL),
          ("delete", 50)], 386, "shop", 7),
        ([], 234, "shop", 1000),
        ([], 405, "shop", 1000),
        ([("move", 14, 0), ("delete", 26)], 254, "cut", 1000),
        ([("insert", 6, 240, Outcome.LATE_CANCEL), ("insert", 9, -4836, Outcome.CANCELLED),
          ("insert", 18, -176, Outcome.LATE_CANCEL)], 233, "cut", 7),
    ]
)  # fmt: skip
@given(rounds=rounds)
def test_whatever_the_changes_and_runs_the_history_holds_each_change_once_and_ends_at_the_stored_score(rounds):
    """The random changes and runs of tests/scoring/test_incremental.py: after every run, each score that changed
    has a new row; each customer's rows form a chain (each starts where the one before ended) that ends at their
    stored score and tier; no row changes nothing."""
    with transaction.atomic():
        shops = [make.shop("A"), make.shop("B")]
        people = [make.customer(shops[n % 2], f"c{n}") for n in range(20)]
        now = NOW
        recompute(now)
        for steps, hours, run, batch_size in rounds:
            for step in steps:
                apply(step, people, shops, now)
            before = {row[0]: row[1:] for row in CustomerScore.objects.values_list("customer_id", "score", "tier")}
            seen = ScoreChange.objects.order_by("-id").values_list("id", flat=True).first() or 0
            now += timedelta(hours=hours)
            ctx = Context(now=now, deadline=0 if run.startswith("cut") else math.inf)
            shop = shops[hours % 2].pk if run == "shop" else None
            scores.recompute_scores(ctx, shop=shop, full=run.endswith("full"), batch_size=batch_size)

            stored = {row[0]: row[1:] for row in CustomerScore.objects.values_list("customer_id", "score", "tier")}
            changed = {who for who, was in before.items() if stored[who] != was}
            assert changed <= set(ScoreChange.objects.filter(id__gt=seen).values_list("customer_id", flat=True))
            last: dict = {}
            for who, *change in ScoreChange.objects.order_by("at", "id").values_list(
                "customer_id", "previous_score", "previous_tier", "score", "tier"
            ):
                was, became = tuple(change[:2]), tuple(change[2:])
                assert was != became, "a row that changes nothing"
                assert last.get(who, was) == was, "a row that does not start where the one before ended"
                last[who] = became
            assert all(stored[who] == became for who, became in last.items())
        transaction.set_rollback(True)


def change(who: Customer, days: float, previous: int, score: int) -> ScoreChange:
    return ScoreChange.objects.create(customer=who, at=NOW - timedelta(days=days), previous_score=previous,
                                      previous_tier="new", score=score, tier="new")  # fmt: skip


def test_pruning_deletes_the_changes_older_than_the_job_runs_retention(settings):
    settings.JOB_RUNS_RETENTION_DAYS = 90
    a, b = make.customer(name="a"), make.customer(name="b")
    for days, score in ((200, 1), (150, 2), (100, 3), (90, 4), (10, 5)):
        change(a, days, score - 1, score)
    change(b, 120, 50, 6)
    assert history.prune(NOW) == 4
    assert list(ScoreChange.objects.order_by("at").values_list("score", flat=True)) == [4, 5]  # the cutoff: kept
    assert history.prune(NOW) == 0


def test_each_whole_run_prunes_the_history_and_a_run_for_one_shop_does_not(settings):
    settings.JOB_RUNS_RETENTION_DAYS = 30
    customer = make.customer()
    old = change(customer, 40, 50, 33)
    recent = change(customer, 20, 33, 25)
    recompute(NOW, shop=customer.shop_id)
    assert ScoreChange.objects.count() == 2  # a run for one shop prunes nothing
    recompute(NOW)
    assert list(ScoreChange.objects.values_list("pk", flat=True)) == [recent.pk]
    assert old.pk != recent.pk


def test_the_chart_draws_the_score_from_where_the_kept_history_begins_to_now(settings):
    settings.JOB_RUNS_RETENTION_DAYS = 90
    customer = make.customer()
    changes = [change(customer, 60, 50, 33), change(customer, 20, 33, 83)]
    svg = history.chart(changes, 83, NOW - timedelta(days=400), NOW)
    assert 'aria-label="Score from 2026-03-03 12:00 UTC to 2026-06-01 12:00 UTC: 2 changes, from 50 to 83"' in svg
    assert svg.count("<circle") == 2 and "2026-04-02 12:00 UTC: 50 (New) -&gt; 33 (New)" in svg
    # 90 days over x 26 to 476, scores 0 to 100 over y 122 to 6: 50 until 60 days ago, 33 until 20 days ago, then 83
    assert 'd="M 26.0 64.0 H 176.0 V 83.7 H 376.0 V 25.7 H 476.0 V 25.7"' in svg
    unchanged = history.chart([], 62, NOW - timedelta(days=10), NOW)  # added 10 days ago, never changed
    assert "62 throughout" in unchanged and "from 2026-05-22 12:00 UTC" in unchanged


def test_a_deleted_customer_takes_their_history_along():
    customer, other = make.customer(name="a"), make.customer(name="b")
    recompute(NOW)
    change(customer, 10, 50, 33)
    change(other, 10, 50, 66)
    Customer.objects.filter(pk=customer.pk).delete()
    assert list(ScoreChange.objects.values_list("customer_id", flat=True)) == [other.pk]


@pytest.mark.postgres
def test_a_customer_deleted_by_raw_sql_takes_their_history_along_on_postgresql():
    customer, other = make.customer(name="a"), make.customer(name="b")
    recompute(NOW)
    for who, days, previous, score in ((customer, 10, 50, 33), (customer, 5, 33, 25), (other, 10, 50, 66)):
        change(who, days, previous, score)
    with connection.cursor() as cursor:  # the database's cascade (migration 0017), not Django's
        cursor.execute("DELETE FROM scoring_customer WHERE id = %s", [customer.pk])
    assert list(ScoreChange.objects.values_list("customer_id", flat=True)) == [other.pk]


@pytest.mark.postgres
def test_the_last_changes_are_looked_up_in_one_pass_or_a_probe_each_whatever_the_history_was_on_postgresql(plans):
    """Each change is dated after the customer's last (migration 0019). Looked up per change in a plan kept for the
    session, they were read from the whole history per change when planned on an empty one (a new installation, all
    of it pruned), the rows the statement itself was appending included: quadratic (migration 0020).

    The history holds a change dated after the new scores, so that they are looked up (migration 0021)."""
    shop = make.shop()
    Customer.objects.bulk_create(Customer(shop=shop, name=f"c{i}") for i in range(2_000))
    recompute(NOW)
    change = "UPDATE scoring_customerscore SET score = score + 1, computed_at = computed_at + '1 hour'"
    read = []
    later = Customer.objects.first()  # rescored by staff at a later `now` (rescore())
    ScoreChange.objects.create(
        customer=later, at=NOW + timedelta(days=1), previous_score=50, previous_tier="new", score=51, tier="new"
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE scoring_scorechange")  # one row
        del plans[:]
        cursor.execute(change)  # 2,000 first changes
        read.append(blocks_read(plans, "scoring_scorechange"))
        cursor.execute(  # the history grows: 50,000 older changes
            "INSERT INTO scoring_scorechange (customer_id, at, score, tier, previous_score, previous_tier)"
            " SELECT customer_id, computed_at - make_interval(days => n), 50, 'new', 50, 'new'"
            " FROM scoring_customerscore, generate_series(1, 25) n"
        )
        del plans[:]
        cursor.execute(change)  # 2,000 more
        read.append(blocks_read(plans, "scoring_scorechange"))
        cursor.execute("ANALYZE scoring_scorechange")  # its size known
        del plans[:]
        cursor.execute(change)  # 2,000 more
        read.append(blocks_read(plans, "scoring_scorechange"))
    assert ScoreChange.objects.count() == 1 + 2_000 + 50_000 + 2_000 + 2_000
    # At most a block per row of the history (one pass, unvacuumed) and a probe of the index per change (4 blocks),
    # whatever its statistics say; known, only the changes later than the earliest new score, from the time index
    # (migration 0022): the staff's and those of its customer the look-ups dated after it, however long the history.
    assert read[0] <= 1 + 6 * 2_000 and read[1] <= 52_001 + 6 * 2_000 and read[2] <= 10, read
    dated = ScoreChange.objects.filter(customer=later, at__gt=NOW).values_list("at", flat=True)
    assert list(dated) == [NOW + timedelta(days=1)] * 4, "the changes were not looked up"


@pytest.mark.postgres
def test_changes_later_than_the_whole_history_read_only_its_end_on_postgresql(plans):
    """A run's new scores are dated after every change in the history (nearly always): no look-up can move their
    dates, and the trigger reads one probe of the history's time index, however long the history (migration 0021).
    The changes are dated by their scores, and the history still ends at each stored score."""
    shop = make.shop()
    Customer.objects.bulk_create(Customer(shop=shop, name=f"c{i}") for i in range(2_000))
    recompute(NOW)
    with connection.cursor() as cursor:
        cursor.execute(  # 50,000 earlier changes
            "INSERT INTO scoring_scorechange (customer_id, at, score, tier, previous_score, previous_tier)"
            " SELECT customer_id, computed_at - make_interval(days => n), 50, 'new', 50, 'new'"
            " FROM scoring_customerscore, generate_series(1, 25) n"
        )
        cursor.execute("ANALYZE scoring_scorechange")
        del plans[:]
        cursor.execute("UPDATE scoring_customerscore SET score = score + 1, computed_at = computed_at + '1 hour'")
    read = blocks_read(plans, "scoring_scorechange")
    assert read <= 30, read  # a probe of its end (and the dead entries other tests may have left there)
    written = ScoreChange.objects.filter(at__gt=NOW)
    assert written.count() == 2_000 and set(written.values_list("at", flat=True)) == {NOW + timedelta(hours=1)}


@pytest.fixture
def long_history() -> list[Customer]:
    """2,000 scored customers with 50 changes each over the 50 days before NOW (100,000), the statistics known."""
    shop = make.shop()
    customers = Customer.objects.bulk_create(Customer(shop=shop, name=f"c{i}") for i in range(2_000))
    recompute(NOW)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO scoring_scorechange (customer_id, at, score, tier, previous_score, previous_tier)"
            " SELECT customer_id, computed_at - make_interval(days => n), 50, 'new', 50, 'new'"
            " FROM scoring_customerscore, generate_series(1, 50) n ORDER BY 2"
        )
        cursor.execute("ANALYZE scoring_scorechange")
    return customers


def pages(model) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size(%s) / current_setting('block_size')::int", [model._meta.db_table])
        return cursor.fetchone()[0]


@pytest.mark.postgres
def test_a_runs_changes_are_written_to_a_few_pages_of_the_history_however_long_it_is_on_postgresql(long_history, plans):
    """A run dates its changes at its `now`: in the history's (day, customer) index they all go to that day, at its
    end, where by customer they went each to a page of its own, each logged whole after a checkpoint (migration
    0022). 2,000 changes over a history of 100,000: the table's new pages, its two time-ordered indexes' and the
    day's."""
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")  # every page clean: the pages the changes dirty are those they write
        del plans[:]
        cursor.execute("UPDATE scoring_customerscore SET score = score + 1, computed_at = computed_at + '1 hour'")
    assert ScoreChange.objects.filter(at__gt=NOW).count() == 2_000
    # 60-85 here (as other tests left the tables); by customer (the index before migration 0022), 526
    assert 0 < pages_written(plans, "scoring_scorechange") <= 150, pages_written(plans, "scoring_scorechange")


@pytest.mark.postgres
def test_a_customers_history_is_read_a_probe_per_day_however_long_it_is_on_postgresql(long_history, plans):
    customer = long_history[7]
    del plans[:]
    changes = list(history.of(customer.pk))
    assert [change.at for change in changes] == [NOW - timedelta(days=n) for n in range(1, 51)]
    # 51 days (the first change's to NOW's), a descent of the index each, and the changes' pages: 214 blocks here
    assert blocks_read(plans, "scoring_scorechange") <= 300 < pages(ScoreChange) / 2, blocks_read(
        plans, "scoring_scorechange"
    )


@pytest.mark.postgres
@pytest.mark.parametrize("by", ["SQL", "Django"])
def test_a_deleted_customers_history_is_found_a_probe_per_day_on_postgresql(long_history, plans, by):
    """The database deletes it (migration 0017), Django leaves it to it: its DELETE by customer reads it whole."""
    customer = long_history[7]
    del plans[:]
    if by == "Django":
        Customer.objects.filter(pk=customer.pk).delete()
    else:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM scoring_customer WHERE id = %s", [customer.pk])
    read = blocks_read(plans, "scoring_scorechange")  # 216 here
    assert not ScoreChange.objects.filter(customer=customer).exists()
    assert ScoreChange.objects.count() == 1_999 * 50
    assert read <= 300 < pages(ScoreChange) / 2, read
