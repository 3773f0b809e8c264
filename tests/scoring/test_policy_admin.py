"""The shop's admin page: its booking policy (inline, defaults filled in) and what its score predicts."""

from __future__ import annotations

from datetime import date

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from scoring.models import BookingPolicy, Evaluation, Requirement, Tier
from tests import factories as make

pytestmark = pytest.mark.django_db
PREFIX = "booking_policies"


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("owner", "owner@example.com", "a-long-test-password"))
    return client


def page(shop) -> str:
    return f"/admin/scoring/shop/{shop.pk}/change/"


def form(shop, rows: list[tuple[str, str, str]], saved: int = 0) -> dict[str, str]:
    """The shop page's POST: its name, and the policy rows (tier, requirement, percent), the first `saved` stored."""
    data = {"name": shop.name, "grace_days": "", f"{PREFIX}-TOTAL_FORMS": str(len(rows)),
            f"{PREFIX}-INITIAL_FORMS": str(saved), f"{PREFIX}-MIN_NUM_FORMS": "0",
            f"{PREFIX}-MAX_NUM_FORMS": "4"}  # fmt: skip
    stored = list(BookingPolicy.objects.filter(shop=shop).order_by("pk"))
    for index, (tier, requirement, percent) in enumerate(rows):
        data |= {f"{PREFIX}-{index}-tier": tier, f"{PREFIX}-{index}-requirement": requirement,
                 f"{PREFIX}-{index}-deposit_percent": percent, f"{PREFIX}-{index}-shop": str(shop.pk)}  # fmt: skip
        if index < saved:
            data[f"{PREFIX}-{index}-id"] = str(stored[index].pk)
    return data


DEFAULT_ROWS = [("reliable", "nothing", ""), ("watch", "nothing", ""), ("new", "nothing", ""), ("risky", "card", "")]


def test_a_shop_without_rows_shows_every_tier_with_its_default(staff):
    shop = make.shop()
    html = staff.get(page(shop)).content.decode()
    for index, (tier, requirement, _) in enumerate(DEFAULT_ROWS):
        assert (
            f'<option value="{tier}" selected>' in html.split(f'id="id_{PREFIX}-{index}-tier"')[1].split("</select>")[0]
        )
        chosen = html.split(f'id="id_{PREFIX}-{index}-requirement"')[1].split("</select>")[0]
        assert f'<option value="{requirement}" selected>' in chosen
    assert "Not evaluated yet" in html


def test_saving_the_page_unchanged_stores_no_rows_and_a_change_stores_one(staff):
    shop = make.shop()
    response = staff.post(page(shop), form(shop, DEFAULT_ROWS))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not BookingPolicy.objects.exists()
    rows = [*DEFAULT_ROWS[:3], ("risky", "deposit", "25")]
    assert staff.post(page(shop), form(shop, rows)).status_code == 302
    assert list(BookingPolicy.objects.values_list("tier", "requirement", "deposit_percent")) == [
        ("risky", "deposit", 25)
    ]
    html = staff.get(page(shop)).content.decode()
    assert html.count(f'name="{PREFIX}-') > 0 and f'name="{PREFIX}-3-tier"' in html  # the stored row and 3 defaults


def test_a_deposit_needs_its_percent_and_other_requirements_drop_it(staff):
    shop = make.shop()
    response = staff.post(page(shop), form(shop, [*DEFAULT_ROWS[:3], ("risky", "deposit", "")]))
    assert response.status_code == 200
    assert "A deposit needs its percent of the price (1 to 100)." in response.content.decode()
    response = staff.post(page(shop), form(shop, [*DEFAULT_ROWS[:3], ("risky", "deposit", "101")]))
    assert "Ensure this value is less than or equal to 100." in response.content.decode()
    assert staff.post(page(shop), form(shop, [*DEFAULT_ROWS[:3], ("risky", "confirmation", "40")])).status_code == 302
    assert list(BookingPolicy.objects.values_list("requirement", "deposit_percent")) == [("confirmation", None)]
    assert BookingPolicy.objects.get().tier == Tier.RISKY


def test_the_database_refuses_a_deposit_without_a_percent():
    from django.db import IntegrityError

    with pytest.raises(IntegrityError):
        BookingPolicy.objects.create(shop=make.shop(), tier=Tier.RISKY, requirement=Requirement.DEPOSIT)


def test_the_shop_page_shows_the_latest_evaluation_as_a_sentence_a_table_and_a_chart(staff):
    shop = make.shop()
    tiers = {"reliable": {"customers": 40, "appointments": 200, "missed": 8, "missed_any": 6},
             "watch": {"customers": 20, "appointments": 90, "missed": 18, "missed_any": 9},
             "risky": {"customers": 10, "appointments": 50, "missed": 19, "missed_any": 8},
             "new": {"customers": 5, "appointments": 7, "missed": 2, "missed_any": 2}}  # fmt: skip
    Evaluation.objects.create(shop=shop, at=date(2026, 9, 3), computed_at=timezone.now(), rule="default",
                              window_days=180, customers=75, appointments=347, missed=47, auc=0.71, tier_changes=12,
                              tiers=tiers)  # fmt: skip
    html = staff.get(page(shop)).content.decode()
    assert "Customers rated risky on 3 Sep missed 38 % of their appointments since; reliable ones 4 %." in html
    assert '<tr data-tier="watch"><td>watch</td><td>20</td><td>90</td><td>18</td><td class="share">20 %</td>' in html
    assert "<svg" in html and "AUC 0.71" in html and "12 of 75 customers are in another tier now" in html
