"""GET /api/customers/<uuid>/standing: the booking app's question "what do we require of this customer?"."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
import time_machine
from django.test import Client

from scoring import scores
from scoring.models import Action, Adjustment, BookingPolicy, CustomerChange, Outcome, Requirement, Tier
from tests import factories as make
from tests.factories import NOW
from tests.helpers import outside_a_run

pytestmark = pytest.mark.django_db
SECRET = "internal-secret-for-tests-0123456789"
HEADERS = {"X-Internal-Secret": SECRET}

# Histories (attended, no-shows, late cancels) that land in each tier, and the score the rule gives them.
HISTORIES = {
    Tier.RELIABLE: ((5, 0, 0), 86),
    Tier.WATCH: ((3, 1, 0), 67),
    Tier.RISKY: ((1, 2, 1), 36),
    Tier.NEW: ((1, 0, 0), 67),
}


@pytest.fixture(autouse=True)
def secrets(settings):
    settings.INTERNAL_SECRET = SECRET
    settings.CRON_SECRET = "the-cron-secret-which-is-another-one"


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False):
        yield


def get(customer: object, headers: dict[str, str] | None = None, suffix: str = "") -> tuple[int, dict]:
    response = Client().get(
        f"/api/customers/{customer}/standing{suffix}", headers=HEADERS if headers is None else headers
    )
    assert response["Content-Type"] == "application/json", response.content[:200]
    assert response["Cache-Control"] == "no-store"
    return response.status_code, json.loads(response.content)


def with_history(shop, attended: int, no_shows: int, late_cancels: int, name: str = "Customer"):
    customer = make.customer(shop, name)
    outcomes = [Outcome.ATTENDED] * attended + [Outcome.NO_SHOW] * no_shows + [Outcome.LATE_CANCEL] * late_cancels
    for day, outcome in enumerate(outcomes, start=1):
        make.appointment(customer, NOW - timedelta(days=day), outcome)
    return customer


def score_everyone(now=NOW) -> None:
    result = outside_a_run(scores.recompute_scores, now)
    assert not result["errors"], result


def strict_shop():
    """A shop that changed every tier's policy."""
    shop = make.shop("Strict")
    BookingPolicy.objects.create(shop=shop, tier=Tier.RELIABLE, requirement=Requirement.CARD)
    BookingPolicy.objects.create(shop=shop, tier=Tier.WATCH, requirement=Requirement.DEPOSIT, deposit_percent=30)
    BookingPolicy.objects.create(shop=shop, tier=Tier.RISKY, requirement=Requirement.NO_ONLINE_BOOKING)
    BookingPolicy.objects.create(shop=shop, tier=Tier.NEW, requirement=Requirement.CONFIRMATION)
    return shop


def test_a_reliable_customer_gets_the_whole_standing_in_one_query(django_assert_num_queries):
    shop = make.shop()
    customer = with_history(shop, 5, 0, 0)
    score_everyone()
    with django_assert_num_queries(1):
        status, body = get(customer.pk)
    assert status == 200
    assert body == {
        "customer": str(customer.pk),
        "shop": str(shop.pk),
        "score": 86,
        "tier": "reliable",
        "effectiveTier": "reliable",
        "policy": {"tier": "reliable", "requirement": "nothing", "depositPercent": None, "onlineBooking": True,
                   "label": "Nothing", "default": True},
        "reasons": ["0 no-shows and 0 late cancels in the last 180 days", "Attended 5 of 5 scored appointments"],
        "computedAt": "2026-06-01T12:00:00Z",
        "stale": False,
    }  # fmt: skip


EXPECTED_POLICY = {  # tier: (the strict shop's policy, the defaults')
    Tier.RELIABLE: (("card", None, True, "Card on file"), ("nothing", None, True, "Nothing")),
    Tier.WATCH: (("deposit", 30, True, "Deposit of 30 %"), ("nothing", None, True, "Nothing")),
    Tier.RISKY: (("no_online_booking", None, False, "No online booking"), ("card", None, True, "Card on file")),
    Tier.NEW: (("confirmation", None, True, "Staff confirmation"), ("nothing", None, True, "Nothing")),
}


@pytest.mark.parametrize("tier", list(HISTORIES))
def test_each_tier_gets_its_shops_policy_or_the_default(tier):
    strict, plain = strict_shop(), make.shop("Plain")
    (history, score) = HISTORIES[tier]
    customers = {shop: with_history(shop, *history) for shop in (strict, plain)}
    score_everyone()
    for shop, expected, default in ((strict, EXPECTED_POLICY[tier][0], False), (plain, EXPECTED_POLICY[tier][1], True)):
        status, body = get(customers[shop].pk)
        assert status == 200
        assert (body["score"], body["tier"], body["effectiveTier"], body["stale"]) == (score, tier, tier, False)
        policy = body["policy"]
        assert (policy["requirement"], policy["depositPercent"], policy["onlineBooking"], policy["label"]) == expected
        assert (policy["tier"], policy["default"]) == (tier, default)


def test_the_reasons_say_what_the_score_counted():
    customer = with_history(make.shop(), 1, 2, 1)
    score_everyone()
    _, body = get(customer.pk)
    assert body["reasons"] == [
        "2 no-shows and 1 late cancel in the last 180 days",
        "Attended 1 of 4 scored appointments",
    ]
    newcomer = with_history(make.shop(), 1, 0, 0)
    score_everyone()
    _, body = get(newcomer.pk)
    assert body["reasons"][-1] == "Fewer than 3 scored appointments: new"


def test_a_pinned_customer_is_treated_as_the_pinned_tier_until_the_pin_ends():
    shop = strict_shop()
    customer = with_history(shop, 1, 2, 1)  # risky
    score_everyone()
    customer.pinned_tier, customer.pinned_until = Tier.RELIABLE, NOW.date()  # the last day of the pin
    customer.save()
    Adjustment.objects.create(by="staff", action=Action.PIN, shop=shop, customer=customer, tier=Tier.RELIABLE,
                              until=NOW.date(), reason="regular since 2019, the no-shows were our mistake")  # fmt: skip
    CustomerChange.objects.all().delete()  # a pin changes no score (and marks nobody once issue 22 lands)
    _, body = get(customer.pk)
    assert (body["tier"], body["effectiveTier"], body["policy"]["requirement"]) == ("risky", "reliable", "card")
    assert body["reasons"][-1] == (
        "Pinned by staff to reliable until 01 Jun 2026: regular since 2019, the no-shows were our mistake"
    )
    customer.pinned_until = NOW.date() - timedelta(days=1)  # ended yesterday
    customer.save()
    _, body = get(customer.pk)
    assert (body["tier"], body["effectiveTier"], body["policy"]["requirement"]) == (
        "risky",
        "risky",
        "no_online_booking",
    )
    assert not any(reason.startswith("Pinned") for reason in body["reasons"])


def test_a_customer_pinned_without_a_score_yet_gets_the_pinned_tiers_policy():
    shop = strict_shop()
    customer = make.customer(shop)
    customer.pinned_tier, customer.pinned_until = Tier.RISKY, NOW.date() + timedelta(days=30)
    customer.save()
    _, body = get(customer.pk)
    assert (body["score"], body["tier"], body["effectiveTier"]) == (None, "new", "risky")
    assert body["policy"]["requirement"] == "no_online_booking"


def test_a_customer_without_a_score_gets_the_new_policy_not_an_error(django_assert_num_queries):
    shop = strict_shop()
    customer = make.customer(shop)  # never scored: the trigger marked them, no run since
    with django_assert_num_queries(1):
        status, body = get(customer.pk)
    assert status == 200
    assert (body["score"], body["tier"], body["effectiveTier"], body["computedAt"]) == (None, "new", "new", None)
    assert body["policy"]["requirement"] == "confirmation"
    assert body["stale"] is True  # marked, not scored yet
    assert body["reasons"] == [
        "No score yet: a new customer",
        "Changed since the last scoring run: the score is not yet recomputed",
    ]
    CustomerChange.objects.all().delete()  # e.g. a customer loaded behind the triggers' back
    _, body = get(customer.pk)
    assert (body["tier"], body["policy"]["requirement"], body["stale"]) == ("new", "confirmation", False)


def test_a_customer_marked_since_the_last_run_is_stale_until_rescored():
    customer = with_history(make.shop(), 5, 0, 0)
    score_everyone(NOW - timedelta(hours=1))
    make.appointment(customer, NOW - timedelta(minutes=30), Outcome.NO_SHOW)  # the trigger marks them
    _, body = get(customer.pk)
    assert (body["score"], body["stale"], body["computedAt"]) == (86, True, "2026-06-01T11:00:00Z")
    assert body["reasons"][-1] == "Changed since the last scoring run: the score is not yet recomputed"
    score_everyone(NOW)
    _, body = get(customer.pk)
    assert (body["score"], body["stale"], body["computedAt"]) == (75, False, "2026-06-01T12:00:00Z")


def test_a_marked_customer_left_over_by_a_cut_short_run_is_stale():
    customer = with_history(make.shop(), 5, 0, 0)
    score_everyone(NOW - timedelta(hours=1))
    make.appointment(customer, NOW - timedelta(minutes=30), Outcome.NO_SHOW)
    scores._move_marks()  # the next run moved the log into the dirty set, then stopped before this customer
    assert not CustomerChange.objects.exists()
    _, body = get(customer.pk)
    assert body["stale"] is True


def test_an_unchanged_score_is_as_of_the_last_slide_and_not_stale():
    """A score unchanged for days keeps its `computed_at` (rows are written only when they change), yet every slide
    carries it to the window's end: it is exact at ScoringState.last_now, and says so."""
    customer = with_history(make.shop(), 5, 0, 0)
    score_everyone(NOW - timedelta(days=2))
    score_everyone(NOW - timedelta(hours=2))  # an incremental run: the window slid, this score did not change
    _, body = get(customer.pk)
    assert (body["stale"], body["computedAt"]) == (False, "2026-06-01T10:00:00Z")


def test_a_score_of_another_window_is_stale(settings):
    customer = with_history(make.shop(), 5, 0, 0)
    score_everyone()
    settings.RECOMPUTE_SCORES_WINDOW_DAYS = 90  # the next run is a full pass over 90 days
    _, body = get(customer.pk)
    assert body["stale"] is True
    assert body["reasons"][-1] == "Scored over 180 days; the window is now 90 days until the next run"


def test_it_answers_with_a_trailing_slash_and_to_head():
    customer = make.customer()
    assert get(customer.pk, suffix="/")[0] == 200
    assert Client().head(f"/api/customers/{customer.pk}/standing", headers=HEADERS).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Internal-Secret": "wrong"}, {"X-Internal-Secret": ""}, {"Authorization": f"Bearer {SECRET}"},
     {"X-Cron-Secret": "the-cron-secret-which-is-another-one"}],
)  # fmt: skip
def test_without_the_internal_secret_it_is_401_before_anything_else(headers, django_assert_num_queries):
    with django_assert_num_queries(0):
        status, body = get("not-even-a-uuid", headers=headers)
    assert (status, body) == (401, {"error": "Unauthorized"})


def test_an_unset_internal_secret_is_a_500_that_says_so(settings):
    settings.INTERNAL_SECRET = ""
    status, body = get(uuid.uuid4())
    assert (status, body) == (500, {"error": "INTERNAL_SECRET not configured"})


@pytest.mark.parametrize("bad", ["abc", "1%27%20OR%201%3D1", "123", "00000000-0000-0000-0000-00000000000g"])
def test_a_malformed_id_is_a_400_naming_it(bad, django_assert_num_queries):
    with django_assert_num_queries(0):
        status, body = get(bad)
    assert (status, body) == (400, {"error": "customer: must be a customer's UUID", "param": "customer"})


def test_an_unknown_customer_is_a_404():
    status, body = get(uuid.UUID(int=7))
    assert (status, body) == (404, {"error": "customer: no customer has this id", "param": "customer"})


def test_another_method_is_a_405():
    response = Client().post(f"/api/customers/{uuid.uuid4()}/standing", headers=HEADERS)
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert json.loads(response.content) == {"error": "Method not allowed"}
