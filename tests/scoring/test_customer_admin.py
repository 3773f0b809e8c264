"""The customers' admin (scoring/customer_admin.py): the list's score and effective tier, sorted and filtered; a
customer's page explaining the score; the CSV export, streamed."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone

from scoring import scores
from scoring.export import csv_chunks, customer_rows
from scoring.models import Action, Adjustment, Customer, CustomerScore, Outcome, Tier
from tests import factories as make
from tests.framework.test_admin import staff
from tests.helpers import outside_a_run

pytestmark = pytest.mark.django_db
LIST = "admin:scoring_customer_changelist"


def scored(*histories: tuple[str, list[Outcome]]) -> dict[str, Customer]:
    """Customers of one shop with these outcomes in the last days, scored now."""
    shop = make.shop("Studio")
    people = {}
    for name, outcomes in histories:
        people[name] = make.customer(shop, name)
        for days, outcome in enumerate(outcomes, start=1):
            make.appointment(people[name], timezone.now() - timedelta(days=days), outcome)
    outside_a_run(scores.recompute_scores, timezone.now())
    return people


def pin(customer: Customer, tier: Tier, days: int) -> None:
    customer.pinned_tier, customer.pinned_until = tier, timezone.now().date() + timedelta(days=days)
    customer.save()


def names(client, query: str = "") -> list[str]:
    response = client.get(reverse(LIST) + query)
    assert response.status_code == 200
    return [customer.name for customer in response.context["cl"].result_list]


def some_customers() -> dict[str, Customer]:
    people = scored(
        ("reliable", [Outcome.ATTENDED] * 4),  # 83
        ("risky", [Outcome.NO_SHOW] * 3),  # 20
        ("watch", [Outcome.ATTENDED, Outcome.ATTENDED, Outcome.NO_SHOW]),  # 60
        ("new", []),  # 50
        ("pinned", [Outcome.NO_SHOW] * 4),  # 17, risky, pinned reliable
        ("lapsed", [Outcome.NO_SHOW] * 3),  # 20, risky, its pin to reliable has lapsed
    )
    pin(people["pinned"], Tier.RELIABLE, 0)  # until today, inclusive
    pin(people["lapsed"], Tier.RELIABLE, -1)
    return people


def test_the_list_sorts_by_score_and_by_effective_tier():
    some_customers()
    client = staff(superuser=True)
    by_score = names(client, "?o=5")  # the fifth column: score
    assert by_score == ["pinned", "risky", "lapsed", "new", "watch", "reliable"] or by_score == [
        "pinned", "lapsed", "risky", "new", "watch", "reliable",
    ]  # fmt: skip
    by_tier = names(client, "?o=-6.1")  # the tier, descending: risky first; then by name
    assert by_tier == ["lapsed", "risky", "watch", "pinned", "reliable", "new"]


def test_the_list_filters_by_effective_tier_and_by_pin_and_says_so():
    some_customers()
    client = staff(superuser=True)
    assert sorted(names(client, "?tier=reliable")) == ["pinned", "reliable"]
    assert sorted(names(client, "?tier=risky")) == ["lapsed", "risky"]
    assert names(client, "?tier=new") == ["new"]
    assert names(client, "?pinned=yes") == ["pinned"]
    assert "pinned" not in names(client, "?pinned=no")
    assert sorted(names(client, "?tier=bogus")) == sorted(names(client))  # an unknown value filters nothing
    html = client.get(reverse(LIST) + "?tier=reliable").content.decode()
    assert "Reliable <small>pinned until" in html


@pytest.mark.parametrize("customers", [3, 30])
def test_the_list_costs_the_same_queries_whatever_its_length(customers, django_assert_max_num_queries):
    scored(*((f"c{n}", [Outcome.ATTENDED, Outcome.NO_SHOW]) for n in range(customers)))
    client = staff(superuser=True)
    with django_assert_max_num_queries(5):  # session, user, the count, the page (joined with shop and score), ...
        assert len(names(client)) == customers


@pytest.mark.parametrize("appointments", [2, 60])
def test_a_customer_s_page_explains_the_score_in_the_same_queries_whatever_the_history(
    appointments, django_assert_max_num_queries
):
    people = scored(("ada", [Outcome.NO_SHOW, Outcome.LATE_CANCEL] * (appointments // 2)))
    client = staff("view_customer", "forgive", "pin_tier")
    with django_assert_max_num_queries(13):  # the admin's 6 (session, user, permissions, ...), the explanation's 7
        response = client.get(reverse("admin:scoring_customer_change", args=[people["ada"].pk]))
    html = response.content.decode()
    a, n, l = 0, appointments // 2, appointments // 2  # noqa: E741
    stored = CustomerScore.objects.get(customer=people["ada"])
    assert f'<span class="score-number">{stored.score}</span> of 100' in html
    assert f"100 x (A+1) / (A+N+L/2+2) = 100 x 1 / ({a}+{n}+{l // 2}{'.5' if l % 2 else ''}+2) = {stored.score}" in html
    assert f"Appointments that count ({appointments})" in html
    assert 'class="score-history"' in html and "run #" not in html  # scored outside a run
    # With the permissions: a Forgive link for each no-show and late cancel, and the pin form's link.
    assert html.count("Forgive</a>") == appointments and "Pin a tier" in html
    assert reverse("admin:scoring_pin", args=[people["ada"].pk]) in html


def test_a_pinned_customer_s_page_says_by_whom_until_when_and_why():
    people = some_customers()
    Adjustment.objects.create(by="mia", action=Action.PIN, shop_id=people["pinned"].shop_id,
                              customer=people["pinned"], tier=Tier.RELIABLE, until=people["pinned"].pinned_until,
                              reason="A regular for six years")  # fmt: skip
    html = staff(superuser=True).get(reverse("admin:scoring_customer_change", args=[people["pinned"].pk]))
    text = html.content.decode()
    assert "Tier pinned to" in text and "by mia" in text and "A regular for six years" in text
    assert f"until {people['pinned'].pinned_until.isoformat()}" in text


def test_staff_without_the_view_permission_see_neither_the_page_nor_the_export():
    people = scored(("ada", [Outcome.NO_SHOW]))
    client = staff("view_appointment")
    assert client.get(reverse("admin:scoring_customer_change", args=[people["ada"].pk])).status_code == 403
    assert client.get(reverse("admin:scoring_customer_export")).status_code == 403


def read_csv(response) -> list[dict[str, str]]:
    assert isinstance(response, StreamingHttpResponse)
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_export_is_the_list_s_customers_with_score_and_effective_tier_as_csv():
    people = some_customers()
    Customer.objects.filter(pk=people["new"].pk).update(name="=HYPERLINK(1)", phone="+44 7700 900123")
    client = staff("view_customer")
    response = client.get(reverse("admin:scoring_customer_export") + "?tier=reliable")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response["Content-Disposition"]
    rows = {row["name"]: row for row in read_csv(response)}
    assert set(rows) == {"pinned", "reliable"}  # the list's filter kept
    assert (rows["pinned"]["score"], rows["pinned"]["tier"], rows["pinned"]["effective_tier"]) == (
        "17",
        "risky",
        "reliable",
    )
    assert rows["pinned"]["pinned_until"] == people["pinned"].pinned_until.isoformat()
    assert rows["pinned"]["customer_id"] == str(people["pinned"].pk)
    everyone = {row["customer_id"]: row for row in read_csv(client.get(reverse("admin:scoring_customer_export")))}
    assert len(everyone) == 6
    assert everyone[str(people["new"].pk)]["name"] == "'=HYPERLINK(1)"  # never a formula in a spreadsheet
    assert everyone[str(people["new"].pk)]["phone"] == "'+44 7700 900123"
    assert everyone[str(people["lapsed"].pk)]["effective_tier"] == "risky"


def test_the_export_reads_every_customer_a_batch_at_a_time_in_key_order():
    shop = make.shop()
    for n in range(7):
        make.customer(shop, f"c{n}")
    rows = list(customer_rows(Customer.objects.all(), timezone.now().date(), batch=3))
    assert sorted(row[0] for row in rows) == [row[0] for row in rows]
    assert len(rows) == 7 and all(row[6] is None and row[7] == "new" for row in rows)  # not scored yet: new
    text = "".join(csv_chunks(rows))
    assert text.count("\n") == 8


def seed_scores(n: int) -> None:
    """n customers of one shop, each with a score, in set-based SQL."""
    shop = make.shop()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "INSERT INTO scoring_customer (id, shop_id, name, email, phone, created_at, pinned_tier) "
                "SELECT md5('c' || i)::uuid, %s, 'Customer ' || i, 'customer' || i || '@example.com', "
                "'+44 7700 ' || i, now(), '' FROM generate_series(1, %s) i",
                [shop.pk, n],
            )
        else:
            cursor.execute(
                "WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < %s) "
                "INSERT INTO scoring_customer (id, shop_id, name, email, phone, created_at, pinned_tier) "
                "SELECT lower(hex(randomblob(16))), %s, 'Customer ' || n, 'customer' || n || '@example.com', "
                "'+44 7700 ' || n, datetime('now'), '' FROM i",
                [n, shop.pk.hex],
            )
        cursor.execute(
            "INSERT INTO scoring_customerscore (customer_id, shop_id, score, tier, attended, no_shows, late_cancels, "
            "cancellations, window_days, computed_at) "
            "SELECT id, shop_id, 50, 'new', 0, 0, 0, 0, 180, created_at FROM scoring_customer"
        )


def peak_rss() -> int:
    """This process's peak resident memory since the last reset_peak() (Linux), in bytes."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def test_the_export_of_a_million_scores_streams_in_bounded_memory():
    """All the memory the process holds at any moment, C included (the database driver's), not just Python's:
    a million rows of CSV are more than 80 MB, and the export never holds more than a few MB of them."""
    n = 1_000_000
    seed_scores(n)
    response = staff("view_customer").get(reverse("admin:scoring_customer_export"))
    reset_peak()
    before = peak_rss()
    lines, size = 0, 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
        size += len(chunk)
    grew = peak_rss() - before
    assert lines == n + 1
    assert size > 80 * 2**20
    assert grew < 16 * 2**20, f"the export held {grew / 2**20:.1f} MB at its peak, for {size / 2**20:.0f} MB of CSV"


def test_staff_without_the_adjustment_permissions_see_no_forgive_or_pin_link():
    people = scored(("ada", [Outcome.NO_SHOW, Outcome.LATE_CANCEL]))
    html = (
        staff("view_customer").get(reverse("admin:scoring_customer_change", args=[people["ada"].pk])).content.decode()
    )
    assert "100 x (A+1)" in html  # the explanation is there
    assert "Forgive</a>" not in html and "Pin a tier" not in html
