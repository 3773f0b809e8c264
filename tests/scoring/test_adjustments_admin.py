"""The forgive and pin forms staff reach from a customer's page, the read-only log with its CSV export, and the
forgive and pin_tier commands."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone

from scoring import adjustments, adjustments_admin
from scoring.models import Adjustment, Appointment, Customer, CustomerScore, Outcome, Tier
from scoring.rules import score_for
from tests import factories as make
from tests.framework.test_admin import staff
from tests.helpers import manage

pytestmark = pytest.mark.django_db


def a_no_show() -> Appointment:
    customer = make.customer()
    for day in (3, 4, 5):
        make.appointment(customer, timezone.now() - timedelta(days=day), Outcome.ATTENDED)
    return make.appointment(customer, timezone.now() - timedelta(days=2), Outcome.NO_SHOW)


def post(client, url: str, data: dict):
    page = client.get(url)
    return client.post(url, {**data, "csrfmiddlewaretoken": page.cookies["csrftoken"].value})


# Permissions and the forms


def test_forgiving_needs_its_own_permission():
    no_show = a_no_show()
    url = reverse("admin:scoring_forgive", args=[no_show.pk])
    assert url == f"/admin/scoring/adjustment/forgive/{no_show.pk}/"
    other = staff("view_customer", "change_appointment", "pin_tier")
    assert other.get(url).status_code == 403
    assert other.post(url, {"reason": "x"}).status_code == 403
    assert not Appointment.objects.get(pk=no_show.pk).forgiven
    page = staff("forgive").get(url)
    assert page.status_code == 200
    assert "Forgive the no-show of" in page.content.decode() and 'name="reason"' in page.content.decode()


def test_staff_forgive_from_the_form_and_land_on_the_customers_page_with_the_new_score():
    no_show = a_no_show()
    client = staff("forgive", "view_customer")
    url = reverse("admin:scoring_forgive", args=[no_show.pk])
    assert post(client, url, {"reason": "  "}).status_code == 400  # a reason is required
    assert not Adjustment.objects.exists()
    answer = post(client, url, {"reason": "called ahead"})
    assert answer.status_code == 302
    assert answer["Location"] == reverse("admin:scoring_customer_change", args=[no_show.customer_id])
    assert Appointment.objects.get(pk=no_show.pk).forgiven
    assert CustomerScore.objects.get(customer_id=no_show.customer_id).score == score_for(3, 0, 0).score
    message = str(next(iter(client.get(answer["Location"]).context["messages"])))
    assert message.startswith("Forgiven:") and f"Score {score_for(3, 0, 0).score}, tier {Tier.RELIABLE}" in message
    entry = Adjustment.objects.get()
    assert (entry.by, entry.action) == (User.objects.get(pk=client.session["_auth_user_id"]).username, "forgive")
    # Already forgiven: the same address offers the undo.
    assert "Undo the forgiveness" in client.get(url).content.decode()
    post(client, url, {"reason": "they did not call"})
    assert not Appointment.objects.get(pk=no_show.pk).forgiven
    assert list(Adjustment.objects.order_by("id").values_list("action", flat=True)) == ["forgive", "unforgive"]


def test_a_refused_forgiveness_is_a_message_on_the_form_not_an_error_page():
    visit = make.appointment(make.customer(), timezone.now() - timedelta(days=1), Outcome.ATTENDED)
    answer = post(staff("forgive"), reverse("admin:scoring_forgive", args=[visit.pk]), {"reason": "why not"})
    assert answer.status_code == 400
    assert "Only a no-show or a late cancel can be forgiven" in answer.content.decode()
    assert staff("forgive").get(reverse("admin:scoring_forgive", args=[uuid.uuid4()])).status_code == 404


def test_pinning_needs_its_own_permission_and_the_form_pins_and_clears():
    customer = make.customer()
    url = reverse("admin:scoring_pin", args=[customer.pk])
    assert url == f"/admin/scoring/adjustment/pin/{customer.pk}/"
    assert staff("forgive", "change_customer").get(url).status_code == 403
    client = staff("pin_tier")
    assert client.get(url).status_code == 200
    until = (timezone.now() + timedelta(days=30)).date()
    assert post(client, url, {"tier": "reliable", "reason": "a regular"}).status_code == 400  # no last day
    answer = post(client, url, {"tier": "reliable", "until": until.isoformat(), "reason": "a regular"})
    assert answer.status_code == 302
    customer.refresh_from_db()
    assert (customer.pinned_tier, customer.pinned_until) == ("reliable", until)
    assert 'name="clear"' in client.get(url).content.decode()
    post(client, url, {"clear": "1", "reason": "moved away"})
    customer.refresh_from_db()
    assert (customer.pinned_tier, customer.pinned_until) == ("", None)
    assert list(Adjustment.objects.order_by("id").values_list("action", flat=True)) == ["pin", "unpin"]


# The log in the admin


def test_the_log_is_read_only_in_the_admin():
    adjustments.forgive(a_no_show().pk, by="ada", reason="called ahead")
    entry = Adjustment.objects.get()
    client = staff("view_adjustment", "add_adjustment", "change_adjustment", "delete_adjustment")
    listing = client.get(reverse("admin:scoring_adjustment_changelist"))
    assert listing.status_code == 200 and "called ahead" in listing.content.decode()
    assert "Export CSV" in listing.content.decode()
    assert client.get(reverse("admin:scoring_adjustment_add")).status_code == 403
    assert client.get(reverse("admin:scoring_adjustment_delete", args=[entry.pk])).status_code == 403
    change = client.get(reverse("admin:scoring_adjustment_change", args=[entry.pk]))
    assert change.status_code == 200 and 'type="submit"' not in change.content.decode().split('id="content"')[1]
    listed = reverse("admin:scoring_adjustment_changelist")
    counts = {query: client.get(f"{listed}?{query}").context["cl"].result_count
              for query in ("action__exact=pin", "action__exact=forgive", "by=grace", "by=staff", "q=ahead",
                            f"q={entry.customer_id}", "q=not-an-id")}  # fmt: skip
    assert counts == {"action__exact=pin": 0, "action__exact=forgive": 1, "by=grace": 0, "by=staff": 1,
                      "q=ahead": 1, f"q={entry.customer_id}": 1, "q=not-an-id": 0}  # fmt: skip


def test_the_logs_csv_export_streams_page_by_page_as_the_list_is_filtered(monkeypatch, django_assert_num_queries):
    customer = make.customer()
    for n in range(5):
        adjustments.pin_tier(customer.pk, "watch", until=timezone.now().date(), by=f"staff{n}", reason=f"pin {n}")
    adjustments.unpin_tier(customer.pk, by="ada", reason="done")
    monkeypatch.setattr(adjustments_admin, "CSV_PAGE", 2)
    client = staff("view_adjustment")
    answer = client.get(reverse("admin:scoring_adjustment_export") + "?action__exact=pin")
    assert isinstance(answer, StreamingHttpResponse)
    assert answer["Content-Type"] == "text/csv; charset=utf-8"
    with django_assert_num_queries(3):  # 5 rows, 2 at a time: three pages
        body = b"".join(answer.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [row["by"] for row in rows] == [f"staff{n}" for n in (4, 3, 2, 1, 0)]  # newest first, pins only
    assert rows[0]["action"] == "pin" and rows[0]["customer_id"] == str(customer.pk)
    assert staff("view_customer").get(reverse("admin:scoring_adjustment_export")).status_code == 403


# The commands


def test_forgive_prints_the_new_score_and_undo_restores_it():
    no_show = a_no_show()
    out = io.StringIO()
    call_command("forgive", str(no_show.pk), "--reason", "called ahead", stdout=out)
    forgiven = score_for(3, 0, 0)
    assert out.getvalue() == f"Forgiven. Customer ({no_show.customer_id}): score {forgiven.score}, tier reliable\n"
    out = io.StringIO()
    call_command("forgive", str(no_show.pk), "--reason", "no", "--undo", stdout=out)
    assert f"score {score_for(3, 1, 0).score}, tier {score_for(3, 1, 0).tier}" in out.getvalue()
    assert list(Adjustment.objects.order_by("id").values_list("by", "action")) == [("shell", "forgive"),
                                                                                  ("shell", "unforgive")]  # fmt: skip


def test_pin_tier_prints_the_effective_tier_and_clear_ends_it():
    customer = make.customer(name="Ada")
    until = (timezone.now() + timedelta(days=3)).date()
    out = io.StringIO()
    call_command("pin_tier", str(customer.pk), "risky", "--until", until.isoformat(), "--reason", "x", stdout=out)
    assert out.getvalue() == f"Tier pinned. Ada ({customer.pk}): not scored yet, tier new, pinned risky until {until}\n"
    out = io.StringIO()
    call_command("pin_tier", str(customer.pk), "--clear", "--reason", "y", stdout=out)
    assert out.getvalue() == f"Pin ended. Ada ({customer.pk}): not scored yet, tier new\n"


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["forgive", "nope", "--reason", "x"], "Not an appointment id", 2),
        (["forgive", str(uuid.UUID(int=7)), "--reason", "x"], "No appointment has the id", 1),
        (["pin_tier", "nope", "risky", "--until", "2099-01-01", "--reason", "x"], "Not a customer id", 2),
        (["pin_tier", str(uuid.UUID(int=7)), "risky", "--until", "2099-01-01", "--reason", "x"], "No customer", 1),
        (["pin_tier", "CUSTOMER", "gold", "--until", "2099-01-01", "--reason", "x"], "Unknown tier 'gold'", 2),
        (["pin_tier", "CUSTOMER", "risky", "--until", "next week", "--reason", "x"], "not a date", 2),
        (["pin_tier", "CUSTOMER", "risky", "--until", "2000-01-01", "--reason", "x"], "has passed", 1),
        (["pin_tier", "CUSTOMER", "risky", "--reason", "x"], "give a TIER and --until", 2),
        (["pin_tier", "CUSTOMER", "--clear", "--reason", "x"], "no pin to end", 1),
        (["forgive", "NO_SHOW", "--reason", " "], "A reason is required", 1),
    ],
)
def test_the_commands_refuse_bad_input_with_a_message_and_an_exit_code(args, message, code):
    no_show = a_no_show()
    args = [{"CUSTOMER": str(no_show.customer_id), "NO_SHOW": str(no_show.pk)}.get(arg, arg) for arg in args]
    with pytest.raises(CommandError, match=message) as refused:
        call_command(*args)
    assert refused.value.returncode == code
    assert not Adjustment.objects.exists()
    assert Customer.objects.get(pk=no_show.customer_id).pinned_tier == ""


@pytest.mark.django_db(transaction=True)  # a real process: it must see the database as it is
def test_a_bad_id_is_exit_code_2_from_the_shell_too():
    result = manage("forgive", "not-a-uuid", "--reason", "x")
    assert (result.returncode, result.stdout) == (2, "")
    assert "Not an appointment id (a UUID): 'not-a-uuid'" in result.stderr and "Traceback" not in result.stderr
    result = manage("pin_tier", str(uuid.UUID(int=7)), "risky", "--until", "2099-01-01", "--reason", "x")
    assert result.returncode == 1 and f"No customer has the id {uuid.UUID(int=7)}." in result.stderr
