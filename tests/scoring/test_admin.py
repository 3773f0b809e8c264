"""The domain's admin pages, and Run now for one shop."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.models import JobRun, Trigger
from scoring.models import Appointment, CustomerScore, OfferStatus, SlotOffer, WaitlistEntry
from scoring.offers import offer_loop
from scoring.scores import recompute_scores
from tests import factories as make
from tests.framework.test_admin import OVERVIEW, staff
from tests.helpers import outside_a_run

pytestmark = pytest.mark.django_db


def test_run_now_for_one_shop_scores_only_that_shop():
    shop = make.shop()
    make.customer(shop)
    make.customer()  # another shop
    client = staff("view_jobrun", "run_job")
    page = client.get(OVERVIEW)
    assert f'<option value="{shop.pk}">{shop.name}</option>' in page.content.decode()
    client.post(
        reverse("admin:jobs_run_now", args=["recompute-scores"]),
        {"shop": str(shop.pk), "csrfmiddlewaretoken": page.cookies["csrftoken"].value},
    )
    run = JobRun.objects.get()
    assert (run.trigger, run.params["shop"], run.counters["total"]) == (Trigger.ADMIN, str(shop.pk), 1)
    assert CustomerScore.objects.count() == 1


@pytest.mark.parametrize("model", ["shop", "customer", "appointment", "customerscore", "waitlistentry", "slotoffer"])
def test_the_domain_pages_load(model):
    customer = make.customer()
    make.appointment(customer, timezone.now() - timedelta(days=1))
    client = staff(superuser=True)
    assert client.get(reverse(f"admin:scoring_{model}_changelist")).status_code == 200


def test_scores_are_read_only_and_shown_with_customers():
    customer = make.customer(name="Ada")
    outside_a_run(recompute_scores, timezone.now())
    client = staff(superuser=True)
    assert client.get(reverse("admin:scoring_customerscore_add")).status_code == 403
    html = client.get(reverse("admin:scoring_customer_changelist")).content.decode()
    assert "Ada" in html and ">50<" in html and "New" in html
    detail = client.get(reverse("admin:scoring_customer_change", args=[customer.pk])).content.decode()
    assert "Customer score" in detail


def test_staff_record_a_customers_answer_to_an_offer():

    shop = make.shop()
    owner, waiting = make.customer(shop, "Owner"), make.customer(shop, "Waiting")
    starts_at = timezone.now() + timedelta(days=1)
    Appointment.objects.create(
        shop=shop, customer=owner, starts_at=starts_at, ends_at=starts_at + timedelta(hours=1),
        cancelled_at=timezone.now(),
    )  # fmt: skip
    WaitlistEntry.objects.create(shop=shop, customer=waiting)
    outside_a_run(offer_loop, timezone.now(), limit=200)
    offer = SlotOffer.objects.get()
    client = staff(superuser=True)
    page = client.get(reverse("admin:scoring_slotoffer_changelist"))
    client.post(
        reverse("admin:scoring_slotoffer_changelist"),
        {
            "action": "accept",
            "_selected_action": [str(offer.pk)],
            "csrfmiddlewaretoken": page.cookies["csrftoken"].value,
        },
    )
    offer.refresh_from_db()
    assert offer.status == OfferStatus.ACCEPTED
    assert Appointment.objects.filter(customer=waiting, starts_at=starts_at).exists()
