"""The domain's admin pages, and Run now for one shop."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs import report
from jobs.admin import CHOICES_MAX
from jobs.models import JobRun, Trigger
from jobs.runner import run_job
from scoring.models import Appointment, CustomerScore, OfferStatus, SlotOffer, WaitlistEntry
from scoring.offers import offer_loop, respond_to_offer
from scoring.scores import recompute_scores
from tests import factories as make
from tests.framework.test_admin import OVERVIEW, row, staff
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


def test_with_more_shops_than_a_menu_lists_run_now_takes_the_shops_id_typed_in(django_assert_max_num_queries):
    shops = [make.shop() for _ in range(CHOICES_MAX + 1)]
    make.customer(shops[-1])
    client = staff("view_jobrun", "run_job")
    page = client.get(OVERVIEW).content.decode()
    assert "<option" not in page and 'placeholder="all shops, or an id"' in page
    client.post(
        reverse("admin:jobs_run_now", args=["recompute-scores"]),
        {"shop": str(shops[-1].pk), "csrfmiddlewaretoken": client.cookies["csrftoken"].value},
    )
    run = JobRun.objects.get()
    assert (run.params["shop"], run.counters["total"]) == (str(shops[-1].pk), 1)


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
    assert (
        '<span class="score-number">50</span> of 100' in detail
    )  # explained on the page (tests/scoring/test_explain.py)


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


def test_the_domain_pages_show_times_as_the_jobs_pages_do_in_utc_with_ages_where_useful():
    shop = make.shop()
    owner, waiting = make.customer(shop, "Owner"), make.customer(shop, "Waiting")
    past = make.appointment(owner, datetime(2026, 10, 12, 13, 15, tzinfo=UTC))
    starts_at = timezone.now() + timedelta(days=1)
    Appointment.objects.create(
        shop=shop, customer=owner, starts_at=starts_at, ends_at=starts_at + timedelta(hours=1),
        cancelled_at=timezone.now(),
    )  # fmt: skip
    WaitlistEntry.objects.create(shop=shop, customer=waiting, created_at=timezone.now() - timedelta(hours=3))
    outside_a_run(offer_loop, timezone.now(), limit=200)
    outside_a_run(recompute_scores, timezone.now())
    client = staff(superuser=True)

    def page(name: str, *args: object) -> str:
        return client.get(reverse(f"admin:scoring_{name}", args=args)).content.decode()

    appointments = page("appointment_changelist")
    assert "2026-10-12 13:15 UTC" in appointments and "2026-10-12 13:45 UTC" in appointments  # its start, its end
    assert re.search(
        r"<td class=\"field-created_at\">\d{4}-\d\d-\d\d \d\d:\d\d UTC, 3 h ago", page("waitlistentry_changelist")
    )
    offers = page("slotoffer_changelist")
    assert re.search(r"field-offered_at\">\d{4}-\d\d-\d\d \d\d:\d\d UTC, \d+ s ago", offers)
    assert re.search(r"field-expires_at\">\d{4}-\d\d-\d\d \d\d:\d\d UTC, in 1\d min", offers)
    assert (
        f"Waiting at {starts_at:%Y-%m-%d %H:%M} UTC" not in offers
        and f"Owner at {starts_at:%Y-%m-%d %H:%M} UTC" in offers
    )
    score = page("customerscore_change", owner.pk)  # read-only: Django's own display, in our format
    assert re.search(r'<div class="readonly">\d{4}-\d\d-\d\d \d\d:\d\d UTC</div>', score)
    edit = page("appointment_change", past.pk)  # a form: its time fields say they are UTC
    assert 'value="2026-10-12"' in edit and 'value="13:15:00"' in edit and "In UTC." in edit
    for html in (appointments, offers, score, edit):
        assert not re.search(r"\b[ap]\.m\.|\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.? \d", html)


def test_recompute_runs_are_named_by_what_they_did_and_the_overview_shows_the_weekly_full_pass():
    shop = make.shop()
    make.customer(shop)
    first = run_job("recompute-scores", trigger=Trigger.CRON)  # nothing asked, but no full pass yet: one is due
    daily = run_job("recompute-scores", trigger=Trigger.CRON)
    weekly = run_job("recompute-scores", {"full": True}, trigger=Trigger.CRON)
    one_shop = run_job("recompute-scores", {"shop": shop.pk}, trigger=Trigger.CLI)
    named = [report.kind(run) for run in (first, daily, weekly, one_shop)]
    assert named == ["full pass", "incremental", "full pass", f"shop {str(shop.pk)[:8]}…"]
    html = row(staff(superuser=True).get(OVERVIEW).content.decode(), "recompute-scores")
    assert "At 02:00 UTC <code>0 2 * * *</code> · incremental" in html
    assert "At 03:00, only on Sunday UTC <code>0 3 * * 0</code> · full pass <code>?full=1</code>" in html
