"""The staff pages through Django's test client (the browser test drives the same pages)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobs.models import JobRun, Status, Trigger
from scoring.models import CustomerScore
from tests import factories as make
from tests.helpers import lock_held_elsewhere

pytestmark = pytest.mark.django_db
OVERVIEW = "/admin/jobs/"


def staff(*perms: str, superuser: bool = False) -> Client:
    user = User.objects.create_user(f"user{User.objects.count()}", password="pw-123-long", is_staff=True)
    user.is_superuser = superuser
    user.save()
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def ran(job: str, status: Status, hours_ago: float, **fields) -> JobRun:
    started_at = timezone.now() - timedelta(hours=hours_ago)
    return JobRun.objects.create(
        job=job, trigger=Trigger.CRON, status=status, started_at=started_at, lock_id=1,
        finished_at=started_at + timedelta(seconds=2), duration_ms=2000, **fields,
    )  # fmt: skip


def row(html: str, job: str) -> str:
    start = html.index(f'data-job="{job}"')
    return html[start : html.index("</tr>", start)]


def test_the_overview_shows_every_job_with_its_verdict():
    ran("recompute-scores", Status.SUCCEEDED, hours_ago=50, counters={"total": 12000})
    ran("resolve-outcomes", Status.FAILED, hours_ago=1, traceback="Traceback ...")
    ran("expire-offers", Status.SUCCEEDED, hours_ago=0.02)
    ran("offer-loop", Status.RUNNING, hours_ago=0.01)
    html = staff("view_jobrun", superuser=True).get(OVERVIEW).content.decode()
    assert 'class="verdict">late' in row(html, "recompute-scores")
    assert "last success 50 h ago, expected daily" in row(html, "recompute-scores")
    assert "total 12,000" in row(html, "recompute-scores")
    assert 'class="verdict">failing' in row(html, "resolve-outcomes")
    assert 'class="verdict">ok' in row(html, "expire-offers")
    assert 'class="verdict">running' in row(html, "offer-loop")
    assert 'class="verdict">never run' in row(html, "prune-job-runs")
    assert "At 02:00 UTC" in row(html, "recompute-scores") and "0 2 * * *" in row(html, "recompute-scores")
    assert f"{reverse('admin:jobs_jobrun_changelist')}?job=recompute-scores" in html


def test_run_now_needs_its_permission_and_is_not_offered_without_it():
    viewer = staff("view_jobrun")
    assert "Run now" not in viewer.get(OVERVIEW).content.decode()
    response = viewer.post(reverse("admin:jobs_run_now", args=["recompute-scores"]))
    assert response.status_code == 403
    assert not JobRun.objects.exists()


def test_run_now_goes_through_the_runner_records_the_user_and_shows_the_run():
    shop = make.shop()
    make.customer(shop)
    make.customer()  # another shop
    client = staff("view_jobrun", "run_job")
    page = client.get(OVERVIEW)
    token = page.cookies["csrftoken"].value
    response = client.post(
        reverse("admin:jobs_run_now", args=["recompute-scores"]), {"shop": str(shop.pk), "csrfmiddlewaretoken": token}
    )
    run = JobRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("admin:jobs_jobrun_change", args=[run.pk])
    assert (run.trigger, run.user.username, run.params["shop"]) == (Trigger.ADMIN, "user0", str(shop.pk))
    assert run.counters["total"] == 1 and CustomerScore.objects.count() == 1
    detail = client.get(response["Location"]).content.decode()
    assert "Recompute-scores: succeeded in" in detail  # the message (capitalised by the admin)


def test_run_now_is_post_only_and_csrf_protected():
    client = staff("view_jobrun", "run_job")
    url = reverse("admin:jobs_run_now", args=["recompute-scores"])
    assert client.get(url).status_code == 405
    assert client.post(url).status_code == 403  # no CSRF token
    assert not JobRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_run_now_while_a_run_holds_the_lock_says_so_and_starts_nothing():
    client = staff("view_jobrun", "run_job")
    client.get(OVERVIEW)
    with lock_held_elsewhere(482175):
        response = client.post(
            reverse("admin:jobs_run_now", args=["recompute-scores"]),
            {"csrfmiddlewaretoken": client.cookies["csrftoken"].value},
            follow=True,
        )
    assert "is already running" in response.content.decode()
    assert JobRun.objects.get().status == Status.SKIPPED


def test_the_run_list_filters_searches_and_costs_the_same_queries_for_10_or_60_rows():
    client = staff(superuser=True)
    for i in range(10):
        ran("recompute-scores", Status.PARTIAL, hours_ago=i, errors=[f"customers a..b: boom {i}"], error_count=1)
    url = reverse("admin:jobs_jobrun_changelist")
    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    for i in range(50):
        ran("expire-offers", Status.SUCCEEDED, hours_ago=i)
    with CaptureQueriesContext(connection) as many:
        html = client.get(url).content.decode()
    assert len(many) == len(few)
    assert 'class="run-badge"' in html and ">partial</span>" in html
    found = client.get(url, {"q": "boom 7"}).content.decode()
    assert found.count('class="run-badge"') == 1
    only = client.get(url, {"job": "expire-offers", "status__exact": "succeeded"}).content.decode()
    assert only.count('class="run-badge"') == 50


def test_a_run_shows_its_details_the_previous_run_and_big_changes():
    before = ran("recompute-scores", Status.SUCCEEDED, hours_ago=24, counters={"total": 12000, "updated": 100})
    run = ran(
        "recompute-scores", Status.FAILED, hours_ago=1, counters={"total": 0, "updated": 90},
        errors=["customers 1..2: one", "customers 3..4: two"], error_count=2,
        traceback="Traceback (most recent call last):\nRuntimeError: <boom>", params={"lock_id": 482175},
    )  # fmt: skip
    html = staff(superuser=True).get(reverse("admin:jobs_jobrun_change", args=[run.pk])).content.decode()
    assert "<li><code>customers 1..2: one</code></li><li><code>customers 3..4: two</code></li>" in html
    assert "RuntimeError: &lt;boom&gt;" in html  # escaped
    assert f"previous run #{before.pk}</a> (succeeded)" in html
    assert "⚠ was 12,000, now 0" in html  # worth a glance
    assert "was 100, now 90" not in html  # not worth one


def test_runs_are_immutable_for_everyone():
    run = ran("recompute-scores", Status.SUCCEEDED, hours_ago=1)
    client = staff(superuser=True)
    change = reverse("admin:jobs_jobrun_change", args=[run.pk])
    assert client.get(reverse("admin:jobs_jobrun_add")).status_code == 403
    assert client.get(reverse("admin:jobs_jobrun_delete", args=[run.pk])).status_code == 403
    client.post(change, {"status": "failed"})
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED
    assert "delete_selected" not in client.get(reverse("admin:jobs_jobrun_changelist")).content.decode()


@pytest.mark.parametrize("model", ["shop", "customer", "appointment", "customerscore", "waitlistentry", "slotoffer"])
def test_the_domain_pages_load(model):
    customer = make.customer()
    make.appointment(customer, timezone.now() - timedelta(days=1))
    client = staff(superuser=True)
    assert client.get(reverse(f"admin:scoring_{model}_changelist")).status_code == 200


def test_scores_are_read_only_and_shown_with_customers():
    from scoring.services import recompute_scores

    customer = make.customer(name="Ada")
    recompute_scores(now=timezone.now())
    client = staff(superuser=True)
    assert client.get(reverse("admin:scoring_customerscore_add")).status_code == 403
    html = client.get(reverse("admin:scoring_customer_changelist")).content.decode()
    assert "Ada" in html and ">50<" in html and "New" in html
    detail = client.get(reverse("admin:scoring_customer_change", args=[customer.pk])).content.decode()
    assert "Customer score" in detail


def test_the_admin_is_for_staff_only():
    assert Client().get(OVERVIEW).status_code == 302
    User.objects.create_user("outsider", password="pw-123-long")
    client = Client()
    client.login(username="outsider", password="pw-123-long")
    assert client.get(OVERVIEW)["Location"].startswith("/admin/login/")


def test_staff_record_a_customers_answer_to_an_offer():
    from scoring.models import Appointment, OfferStatus, SlotOffer, WaitlistEntry
    from scoring.services import offer_loop

    shop = make.shop()
    owner, waiting = make.customer(shop, "Owner"), make.customer(shop, "Waiting")
    starts_at = timezone.now() + timedelta(days=1)
    Appointment.objects.create(
        shop=shop, customer=owner, starts_at=starts_at, ends_at=starts_at + timedelta(hours=1),
        cancelled_at=timezone.now(),
    )  # fmt: skip
    WaitlistEntry.objects.create(shop=shop, customer=waiting)
    offer_loop(now=timezone.now())
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
