"""The forgive and pin forms in a real browser (Chromium, as in test_browser.py), on a phone's width too."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from scoring.models import Adjustment, Appointment, Customer, Outcome
from scoring.rules import score_for
from tests import factories as make
from tests.helpers import ROOT
from tests.system.test_browser import browser  # noqa: F401  (the module's Chromium)

pytestmark = pytest.mark.django_db(transaction=True)
SCREENSHOT = ROOT / ".artifacts" / "adjustment-forgive-390.png"


def test_staff_forgive_a_no_show_and_pin_a_tier_from_the_forms_on_a_phone(browser, live_server):  # noqa: F811
    User.objects.create_superuser("staff", "staff@example.com", "a-long-test-password")
    customer = make.customer(name="Ada")
    for day in (3, 4, 5):
        make.appointment(customer, timezone.now() - timedelta(days=day), Outcome.ATTENDED)
    no_show = make.appointment(customer, timezone.now() - timedelta(days=2), Outcome.NO_SHOW)

    page = browser.new_page(viewport={"width": 390, "height": 844})
    forgive = reverse("admin:scoring_forgive", args=[no_show.pk])
    page.goto(f"{live_server.url}/admin/login/?next={forgive}")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.wait_for_selector("textarea[name=reason]")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the form is wider than a phone"
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.click("input[type=submit][value=Forgive]")  # no reason: refused on the form
    assert Adjustment.objects.count() == 0
    page.fill("textarea[name=reason]", "Flat tyre, called ahead")
    page.click("input[type=submit][value=Forgive]")
    page.wait_for_selector(".messagelist")
    assert page.url.endswith(reverse("admin:scoring_customer_change", args=[customer.pk]))
    assert f"Score {score_for(3, 0, 0).score}, tier reliable" in page.inner_text(".messagelist")
    assert Appointment.objects.get(pk=no_show.pk).forgiven

    until = (timezone.now() + timedelta(days=30)).date()
    page.goto(f"{live_server.url}{reverse('admin:scoring_pin', args=[customer.pk])}")
    page.select_option("select[name=tier]", "risky")
    page.fill("input[name=until]", until.isoformat())
    page.fill("textarea[name=reason]", "Shouted at staff")
    page.click("input[type=submit][value=Pin]")
    page.wait_for_selector(".messagelist")
    assert f"pinned risky until {until}" in page.inner_text(".messagelist")
    assert Customer.objects.filter(pk=customer.pk, pinned_tier="risky", pinned_until=until).exists()
    assert list(Adjustment.objects.order_by("id").values_list("action", "by")) == [
        ("forgive", "staff"),
        ("pin", "staff"),
    ]
    page.close()
