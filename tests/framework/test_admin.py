"""The staff pages through Django's test client (the browser test drives the same pages)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from jobs.models import JobRun, Status, Trigger
from jobs.registry import JOBS
from jobs.runner import run_job
from jobs.timefmt import utc
from tests.framework.testjobs import PASSES, TEST_LOCK_ID
from tests.helpers import lock_held_elsewhere

pytestmark = pytest.mark.django_db
OVERVIEW = "/admin/jobs/"
SECONDS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"  # a time on these pages, to the second


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
    ran("nightly", Status.SUCCEEDED, hours_ago=50, counters={"total": 12000})
    ran("frequent", Status.FAILED, hours_ago=1, traceback="Traceback ...")
    ran("on-demand", Status.SUCCEEDED, hours_ago=0.02)
    ran("batches", Status.RUNNING, hours_ago=0.01)
    html = staff("view_jobrun", superuser=True).get(OVERVIEW).content.decode()
    assert 'class="verdict">late' in row(html, "nightly")
    assert "has not come (expected daily)" in row(html, "nightly")
    assert "total 12,000" in row(html, "nightly")
    assert 'class="verdict">failing' in row(html, "frequent")
    assert 'class="verdict">ok' in row(html, "on-demand")
    assert 'class="verdict">running' in row(html, "batches")
    assert 'class="verdict">late' in row(html, "prune-job-runs")  # never ran, and the ledger began 50 h ago
    assert "At 02:00 UTC" in row(html, "nightly") and "0 2 * * *" in row(html, "nightly")
    assert f"{reverse('admin:jobs_jobrun_changelist')}?job=nightly" in html


def test_run_now_needs_its_permission_and_is_not_offered_without_it():
    viewer = staff("view_jobrun")
    assert "Run now" not in viewer.get(OVERVIEW).content.decode()
    response = viewer.post(reverse("admin:jobs_run_now", args=["nightly"]))
    assert response.status_code == 403
    assert not JobRun.objects.exists()


def test_run_now_offers_the_jobs_form_goes_through_the_runner_records_the_user_and_shows_the_run():
    client = staff("view_jobrun", "run_job")
    page = client.get(OVERVIEW)
    form = row(page.content.decode(), "nightly")
    assert 'name="size"' in form and 'name="prefix"' in form and 'name="dry_run"' in form
    assert 'name="lock_id"' not in form  # staff do not pick lock ids
    response = client.post(
        reverse("admin:jobs_run_now", args=["nightly"]),
        {"size": "2", "prefix": "", "csrfmiddlewaretoken": page.cookies["csrftoken"].value},
    )
    run = JobRun.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("admin:jobs_jobrun_change", args=[run.pk])
    assert (run.trigger, run.user.username, run.params["size"]) == (Trigger.ADMIN, "user0", 2)
    assert "prefix" not in run.params  # left empty: not given
    assert run.counters["written"] == 2 and Group.objects.count() == 2
    detail = client.get(response["Location"]).content.decode()
    assert "Nightly: succeeded in" in detail  # the message (capitalised by the admin)


def test_run_now_with_a_bad_parameter_names_it_and_runs_nothing():
    client = staff("view_jobrun", "run_job")
    page = client.get(OVERVIEW)
    response = client.post(
        reverse("admin:jobs_run_now", args=["nightly"]),
        {"size": "lots", "csrfmiddlewaretoken": page.cookies["csrftoken"].value},
        follow=True,
    )
    assert "Nightly: size: must be a whole number" in response.content.decode()
    assert not JobRun.objects.exists()


def test_run_now_is_post_only_and_csrf_protected():
    client = staff("view_jobrun", "run_job")
    url = reverse("admin:jobs_run_now", args=["nightly"])
    assert client.get(url).status_code == 405
    assert client.post(url).status_code == 403  # no CSRF token
    assert not JobRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_run_now_while_a_run_holds_the_lock_says_so_and_starts_nothing():
    client = staff("view_jobrun", "run_job")
    client.get(OVERVIEW)
    with lock_held_elsewhere(TEST_LOCK_ID):
        response = client.post(
            reverse("admin:jobs_run_now", args=["nightly"]),
            {"csrfmiddlewaretoken": client.cookies["csrftoken"].value},
            follow=True,
        )
    assert f"Nightly was not started: lock {TEST_LOCK_ID} is held by another database session." in (
        response.content.decode()
    )
    assert JobRun.objects.get().status == Status.SKIPPED


def test_the_run_list_filters_searches_and_costs_the_same_queries_for_10_or_60_rows():
    client = staff(superuser=True)
    for i in range(10):
        ran("nightly", Status.PARTIAL, hours_ago=i, errors=[f"customers a..b: boom {i}"], error_count=1)
    url = reverse("admin:jobs_jobrun_changelist")
    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    for i in range(50):
        ran("on-demand", Status.SUCCEEDED, hours_ago=i)
    with CaptureQueriesContext(connection) as many:
        html = client.get(url).content.decode()
    assert len(many) == len(few)
    assert 'class="run-badge"' in html and ">partial</span>" in html
    found = client.get(url, {"q": "boom 7"}).content.decode()
    assert found.count('class="run-badge"') == 1
    only = client.get(url, {"job": "on-demand", "status__exact": "succeeded"}).content.decode()
    assert only.count('class="run-badge"') == 50


def test_a_run_shows_its_details_the_previous_run_and_big_changes():
    before = ran("nightly", Status.SUCCEEDED, hours_ago=24, counters={"total": 12000, "updated": 100})
    run = ran(
        "nightly", Status.FAILED, hours_ago=1, counters={"total": 0, "updated": 90},
        errors=["customers 1..2: one", "customers 3..4: two"], error_count=2,
        traceback="Traceback (most recent call last):\nRuntimeError: <boom>", params={"lock_id": TEST_LOCK_ID},
    )  # fmt: skip
    html = staff(superuser=True).get(reverse("admin:jobs_jobrun_change", args=[run.pk])).content.decode()
    assert "<li><code>customers 1..2: one</code></li><li><code>customers 3..4: two</code></li>" in html
    assert "RuntimeError: &lt;boom&gt;" in html  # escaped
    assert f"previous run #{before.pk}</a> (succeeded)" in html
    assert "⚠ was 12,000, now 0" in html  # worth a glance
    assert "was 100, now 90" not in html  # not worth one


def test_runs_are_immutable_for_everyone():
    run = ran("nightly", Status.SUCCEEDED, hours_ago=1)
    client = staff(superuser=True)
    change = reverse("admin:jobs_jobrun_change", args=[run.pk])
    assert client.get(reverse("admin:jobs_jobrun_add")).status_code == 403
    assert client.get(reverse("admin:jobs_jobrun_delete", args=[run.pk])).status_code == 403
    client.post(change, {"status": "failed"})
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED
    assert "delete_selected" not in client.get(reverse("admin:jobs_jobrun_changelist")).content.decode()


def test_the_admin_is_for_staff_only():
    assert Client().get(OVERVIEW).status_code == 302
    User.objects.create_user("outsider", password="pw-123-long")
    client = Client()
    client.login(username="outsider", password="pw-123-long")
    assert client.get(OVERVIEW)["Location"].startswith("/admin/login/")


def test_the_overview_shows_a_strip_of_recent_runs_a_duration_line_and_the_weeks_success_rate():
    runs = [
        ran("nightly", status, hours_ago=4 - n, errors=["RuntimeError: boom"] * (status == Status.FAILED))
        for n, status in enumerate([Status.FAILED, Status.SUCCEEDED, Status.SKIPPED, Status.SUCCEEDED])
    ]
    html = row(staff(superuser=True).get(OVERVIEW).content.decode(), "nightly")
    assert html.count('class="cell"') == 4 and f'title="#{runs[0].pk} failed · ' in html
    assert '<svg class="sparkline"' in html and "durations of the last 3 runs" in html
    assert "7 days: 67% of 3 succeeded" in html
    assert "Last failure: " in html and "RuntimeError: boom" in html


def test_the_overview_refreshes_itself_only_while_a_run_is_in_progress():
    client = staff(superuser=True)
    assert 'http-equiv="refresh"' not in client.get(OVERVIEW).content.decode()
    ran("nightly", Status.RUNNING, hours_ago=0.01)
    assert 'http-equiv="refresh" content="10"' in client.get(OVERVIEW).content.decode()


def test_a_run_page_has_no_history_or_view_site_link_and_offers_to_run_again_with_the_same_parameters():
    client = staff("view_jobrun", "run_job")
    first = run_job("nightly", {"size": 2, "prefix": "again", "dry_run": True}, trigger=Trigger.CLI)
    page = client.get(reverse("admin:jobs_jobrun_change", args=[first.pk]))
    html = page.content.decode()
    assert "History" not in html and "View site" not in html
    assert "Run again with the same parameters" in html
    assert '<input type="hidden" name="size" value="2">' in html and 'name="dry_run" value="true"' in html
    token = page.cookies["csrftoken"].value
    data = {"size": "2", "prefix": "again", "dry_run": "true", "csrfmiddlewaretoken": token}  # what the button posts
    client.post(reverse("admin:jobs_run_now", args=["nightly"]), data)
    again = JobRun.objects.latest("id")
    assert again.pk != first.pk and again.trigger == Trigger.ADMIN
    assert {k: again.params[k] for k in ("size", "prefix", "dry_run")} == {
        "size": 2,
        "prefix": "again",
        "dry_run": True,
    }
    viewer = staff("view_jobrun")
    assert "Run again" not in viewer.get(reverse("admin:jobs_jobrun_change", args=[first.pk])).content.decode()


def test_a_run_now_message_is_short_whatever_the_number_of_errors():
    client = staff("view_jobrun", "run_job")
    page = client.get(OVERVIEW)
    response = client.post(reverse("admin:jobs_run_now", args=["failing-item"]),
                           {"csrfmiddlewaretoken": page.cookies["csrftoken"].value}, follow=True)  # fmt: skip
    message = next(iter(response.context["messages"])).message
    assert message.startswith("failing-item: partial in ") and message.count("\n") <= 6


@pytest.fixture
def the_passes_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job that names the kinds of its runs (incremental, full pass), with a weekly full pass."""
    monkeypatch.setitem(JOBS, PASSES.name, PASSES)


def kinds(html: str) -> list[str]:
    return re.findall(r'<td class="field-kind">([^<]*)</td>', html)


def test_a_runs_kind_reads_as_its_job_names_it_and_jobs_that_name_none_keep_full(the_passes_job):
    run_job("passes", trigger=Trigger.CRON)
    run_job("passes", {"full": True}, trigger=Trigger.CRON)
    run_job("passes", {"dry_run": True}, trigger=Trigger.CLI)
    run_job("nightly", {"size": 1, "prefix": "only"}, trigger=Trigger.CLI)
    run_job("nightly", {"size": 1}, trigger=Trigger.CLI)
    html = staff(superuser=True).get(reverse("admin:jobs_jobrun_changelist")).content.decode()
    assert kinds(html) == ["full", "prefix only", "dry run, incremental", "full pass", "incremental"]  # newest first


def test_a_run_is_compared_with_the_last_success_of_its_own_kind_not_with_the_weekly_full_pass(the_passes_job):
    yesterday = ran("passes", Status.SUCCEEDED, hours_ago=26, counters={"total": 10, "full_pass": 0})
    full = ran(
        "passes", Status.SUCCEEDED, hours_ago=25, counters={"total": 1000, "full_pass": 1}, params={"full": True}
    )
    today = ran("passes", Status.SUCCEEDED, hours_ago=2, counters={"total": 12, "full_pass": 0})
    client = staff(superuser=True)
    html = client.get(reverse("admin:jobs_jobrun_change", args=[today.pk])).content.decode()
    assert f"previous incremental success (#{yesterday.pk})" in html
    assert "⚠" not in html  # 10 -> 12; against the full pass it would be 1,000 -> 12 and full_pass 1 -> 0
    html = client.get(reverse("admin:jobs_jobrun_change", args=[full.pk])).content.decode()
    assert "<th>previous full pass success</th>" in html and "⚠" not in html  # the first of its kind


def test_the_overview_shows_every_declared_schedule_in_words_with_the_kind_of_run_it_asks_for(the_passes_job):
    html = row(staff(superuser=True).get(OVERVIEW).content.decode(), "passes")
    assert "At 02:00 UTC <code>0 2 * * *</code> · incremental" in html
    assert "At 03:00, only on Sunday UTC <code>0 3 * * 0</code> · full pass <code>?full=1</code>" in html
    assert re.search(r"\d{4}-\d\d-\d\d 02:00 UTC</span>, in \d+ (s|min|h) · incremental", html)
    assert re.search(r"\d{4}-\d\d-\d\d 03:00 UTC</span>, in \d+ (s|min|h|d) · full pass", html)


def test_every_time_on_the_jobs_pages_reads_one_way_in_utc_with_its_age():
    client = staff("view_jobrun", "run_job")
    page = client.get(OVERVIEW)
    response = client.post(
        reverse("admin:jobs_run_now", args=["nightly"]),
        {"size": "1", "csrfmiddlewaretoken": page.cookies["csrftoken"].value},
        follow=True,
    )
    run = JobRun.objects.get()
    detail = response.content.decode()
    message = next(iter(response.context["messages"])).message
    assert f"(run #{run.pk}, started {utc(run.started_at, seconds=True)})" in message
    assert f"<td>now</td><td>{utc(datetime.fromisoformat(run.params['now']), seconds=True)}</td>" in detail
    assert re.search(rf"{SECONDS}, \d+ s ago", detail)  # started, finished
    overview = client.get(OVERVIEW).content.decode()
    assert re.search(rf"now {SECONDS}", overview)
    assert re.search(rf'<span class="when">{SECONDS}</span>, \d+ s ago, took', row(overview, "nightly"))
    listing = client.get(reverse("admin:jobs_jobrun_changelist")).content.decode()
    for html in (detail, overview, listing):
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", html)  # no raw ISO
        assert not re.search(r"\b[ap]\.m\.|\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.? \d", html)


def test_an_abandoned_run_shows_when_its_process_was_last_seen_and_no_made_up_duration():
    started_at = timezone.now() - timedelta(hours=30)
    dead = JobRun.objects.create(job="nightly", trigger=Trigger.CRON, started_at=started_at, lock_id=TEST_LOCK_ID)
    run_job("nightly", {"size": 1}, trigger=Trigger.CLI)
    client = staff(superuser=True)
    detail = client.get(reverse("admin:jobs_jobrun_change", args=[dead.pk])).content.decode()
    assert f"last seen {utc(started_at, seconds=True)}, 30 h ago" in detail
    assert '<div class="readonly">unknown</div>' in detail  # its duration
    listing = client.get(reverse("admin:jobs_jobrun_changelist")).content.decode()
    assert '<td class="field-took">unknown</td>' in listing
