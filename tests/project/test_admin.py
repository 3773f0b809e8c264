"""The whole admin site, fuzzed: no query string or id a staff member can type answers 500.

Walks every ModelAdmin registered on the site (the domain's, the jobs framework's and Django's
own auth), as a superuser through the test client.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import models
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from jobs.models import JobRun, Status, Trigger
from scoring import demo

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:DateTimeField .* received a naive datetime:RuntimeWarning"),
]

# Django's date_hierarchy adds one year, one month or one day to the date asked for: 9999 overflows.
HIERARCHY = [
    {"year": "9999"},
    {"year": "9999", "month": "12"},
    {"year": "9999", "month": "12", "day": "31"},
    {"year": "0"},
    {"year": "-1"},
    {"year": "99999"},
    {"year": "2024", "month": "13"},
    {"year": "2024", "month": "0"},
    {"year": "2024", "month": "2", "day": "32"},
    {"year": "2024", "month": "2", "day": "30"},
    {"year": "\u00b2"},  # a superscript two: str.isdigit() says yes, int() says no
    {"year": "\u0662\u0660\u0662\u0664"},  # 2024 in Arabic-Indic digits
    {"year": "2024", "month": "\u0661\u0662", "day": "\u0663\u0661"},
    {"year": "1e3"},
    {"year": ""},
    {"year": "9" * 40},
]
DATES = ["99999-01-01", "9999-12-31 23:59:59.999999", "0000-00-00", "0001-01-01", "2024-02-30", "2024-13-01",
         "\u0662\u0660\u0662\u0664-\u0660\u0661-\u0660\u0661", "9" * 40, "\x00", "yesterday"]  # fmt: skip
# Any other filter the list offers, given a value of the wrong kind.
VALUES = ["\u00b2", "-1", "1.5", "9" * 40, "not-a-uuid", "\x00", "9999-12-31", ""]
EXTRAS = [{"p": "9" * 40}, {"p": "-1"}, {"o": "99"}, {"o": "x.-"}, {"q": "\x00"}, {"q": "%"}, {"e": "1"}]
IDS = ["\u00b2", "-1", "0", "1.5", "9" * 40, str(2**63), "not-a-uuid", "00000000-0000-0000-0000-00000000000g",
       "\x00", "1 ", "_5F"]  # fmt: skip


def data() -> None:
    """A little of everything, so that every list has rows, dates and filters to show."""
    now = timezone.now()
    demo.seed(shops=2, customers=12, appointments=60, seed=1, now=now)
    JobRun.objects.create(job="recompute-scores", trigger=Trigger.CLI, status=Status.SUCCEEDED, started_at=now,
                          finished_at=now, duration_ms=1, lock_id=482175)  # fmt: skip


def superuser() -> Client:
    user = User.objects.create_superuser("fuzz", password="pw-123-long")
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def admins() -> list[tuple[type[models.Model], admin.ModelAdmin]]:
    return sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


def query(params: dict[str, str]) -> str:
    return "?" + "&".join(f"{quote(key)}={quote(value)}" for key, value in params.items())


def changelist_queries(model: type[models.Model], model_admin: admin.ModelAdmin, client: Client) -> list[str]:
    """The date hierarchy's and every date field's out-of-range and malformed values, and every list filter's."""
    queries = []
    if model_admin.date_hierarchy:
        queries += [query({f"{model_admin.date_hierarchy}__{k}": v for k, v in p.items()}) for p in HIERARCHY]
    for field in model._meta.get_fields():
        if isinstance(field, models.DateField):  # DateTimeField too
            for lookup in ("gte", "year", "date"):  # lt and exact parse their value as gte does
                queries += [query({f"{field.name}__{lookup}": value}) for value in DATES]
    changelist = client.get(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"))
    assert changelist.status_code == 200, model
    for spec in changelist.context["cl"].filter_specs:
        for parameter in spec.expected_parameters():
            queries += [query({parameter: value}) for value in VALUES]
    return queries + [query(extra) for extra in EXTRAS]


def test_no_changelist_answers_500_to_out_of_range_or_malformed_filters():
    data()
    client = superuser()
    problems, asked = [], 0
    for model, model_admin in admins():
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for asking in changelist_queries(model, model_admin, client):
            response = client.get(url + asking)
            asked += 1
            if response.status_code >= 500:
                problems.append(f"{url}{asking}: {response.status_code} {getattr(response, 'exc_info', None)}")
    print(f"{asked} changelist requests over {len(admins())} models")
    assert asked > 800
    assert problems == [], "\n".join(problems)


def test_no_object_page_answers_500_to_a_malformed_id():
    data()
    client = superuser()
    problems, asked = [], 0
    for model, _ in admins():
        for view in ("change", "history", "delete"):
            for object_id in IDS:
                url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=["ID"])
                url = url.replace("ID", quote(object_id, safe=""))
                response = client.get(url)
                asked += 1
                if response.status_code >= 500:
                    problems.append(f"{url}: {response.status_code} {getattr(response, 'exc_info', None)}")
    print(f"{asked} object-page requests over {len(admins())} models")
    assert problems == [], "\n".join(problems)


def test_a_superscript_digit_as_a_run_id_gets_the_admins_usual_does_not_exist_answer():
    client = superuser()
    response = client.get("/admin/jobs/jobrun/%C2%B2/change/", follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [("/admin/", 302)]
    assert "Perhaps it was deleted?" in response.content.decode()  # Django's message for an unknown id


def test_a_date_hierarchy_year_past_9998_shows_the_list_without_the_filter():
    data()
    client = superuser()
    response = client.get("/admin/scoring/appointment/?starts_at__year=9999")
    assert (response.status_code, response["Location"]) == (302, "/admin/scoring/appointment/?e=1")
    assert client.get(response["Location"]).status_code == 200
    # The last year that has a next one still filters.
    assert client.get("/admin/scoring/appointment/?starts_at__year=9998&starts_at__month=12").status_code == 200
