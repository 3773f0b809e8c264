"""The domain's admin pages, and Run now for one shop."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.models import JobRun, Trigger
from scoring.models import Appointment, CustomerScore, OfferStatus, SlotOffer, WaitlistEntry
from scoring.offers import offer_loop, respond_to_offer
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


def test_the_admin_refuses_to_undo_the_cancellation_of_a_slot_a_waiting_customer_took():
    shop = make.shop()
    owner, waiting = make.customer(shop, "Owner"), make.customer(shop, "Waiting")
    starts_at = timezone.now() + timedelta(days=1)
    slot = Appointment.objects.create(
        shop=shop, customer=owner, starts_at=starts_at, ends_at=starts_at + timedelta(hours=1),
        cancelled_at=timezone.now(),
    )  # fmt: skip
    WaitlistEntry.objects.create(shop=shop, customer=waiting)
    outside_a_run(offer_loop, timezone.now(), limit=200)
    client = staff(superuser=True)
    url = reverse("admin:scoring_appointment_change", args=[slot.pk])

    def undo_the_cancellation():
        page = client.get(url)
        return client.post(url, {**undo_cancellation(slot), "csrfmiddlewaretoken": page.cookies["csrftoken"].value})

    assert undo_the_cancellation().status_code == 302  # with the offer still pending: allowed (the accept refuses)
    assert Appointment.objects.get(pk=slot.pk).cancelled_at is None
    Appointment.objects.filter(pk=slot.pk).update(cancelled_at=timezone.now())
    respond_to_offer(SlotOffer.objects.get().pk, accept=True, now=timezone.now())
    refused = undo_the_cancellation()
    assert refused.status_code == 200
    assert "undoing the cancellation would book two customers at the same time" in refused.content.decode()
    slot.refresh_from_db()
    assert slot.cancelled_at is not None


def undo_cancellation(slot: Appointment) -> dict[str, str]:
    """The appointment's change form as the admin posts it, with the cancellation cleared."""
    return {
        "shop": str(slot.shop_id), "customer": str(slot.customer_id), "outcome": slot.outcome,
        "starts_at_0": f"{slot.starts_at:%Y-%m-%d}", "starts_at_1": f"{slot.starts_at:%H:%M:%S}",
        "ends_at_0": f"{slot.ends_at:%Y-%m-%d}", "ends_at_1": f"{slot.ends_at:%H:%M:%S}",
        "checked_in_at_0": "", "checked_in_at_1": "", "cancelled_at_0": "", "cancelled_at_1": "",
        "resolved_at_0": "", "resolved_at_1": "",
    }  # fmt: skip
