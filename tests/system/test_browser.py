"""The staff overview in a real browser: headless Chromium (Debian's) driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from jobs.models import JobRun, Status, Trigger
from jobs.runner import run_job
from scoring import demo
from scoring.models import Action, Adjustment, Customer
from tests.helpers import ROOT

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / ".artifacts" / "admin-overview.png"
PHONE = ROOT / ".artifacts" / "admin-overview-390.png"
CUSTOMER = ROOT / ".artifacts" / "customer-score.png"
CUSTOMER_PHONE = ROOT / ".artifacts" / "customer-score-390.png"
CUSTOMERS_PHONE = ROOT / ".artifacts" / "customers-390.png"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"REQUIRE_BROWSER is set but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"needs {CHROMIUM} (Debian package chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; the test's own ORM calls are still synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        yield chromium
        chromium.close()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


def ran(job: str, status: Status, hours_ago: float, **fields: object) -> JobRun:
    started_at = timezone.now() - timedelta(hours=hours_ago)
    return JobRun.objects.create(
        job=job, trigger=Trigger.CRON, status=status, started_at=started_at, lock_id=1,
        finished_at=started_at + timedelta(seconds=3), duration_ms=3000, **fields,
    )  # fmt: skip


def test_staff_see_late_and_failing_jobs_open_a_run_and_run_a_job_now(browser, live_server):
    User.objects.create_superuser("staff", "staff@example.com", "a-long-test-password")
    ran("recompute-scores", Status.SUCCEEDED, hours_ago=50, counters={"total": 12000, "created": 0})
    failed = ran(
        "resolve-outcomes",
        Status.FAILED,
        hours_ago=1,
        traceback="Traceback (most recent call last):\nRuntimeError: boom",
    )
    ran("expire-offers", Status.SUCCEEDED, hours_ago=0.02, counters={"total": 3, "expired": 3, "offered": 2})
    ran("offer-loop", Status.SUCCEEDED, hours_ago=0.03, counters={"total": 13, "offered": 12, "exhausted": 1})

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{live_server.url}/admin/login/?next=/admin/jobs/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.wait_for_selector("#jobs-overview")

    def verdict(job: str) -> str:
        return page.inner_text(f'tr[data-job="{job}"] .verdict')

    assert verdict("recompute-scores") == "late"
    assert "has not come (expected daily)" in page.inner_text('tr[data-job="recompute-scores"]')
    assert verdict("resolve-outcomes") == "failing"
    assert verdict("expire-offers") == "ok"
    assert verdict("prune-job-runs") == "late"  # never ran, and the ledger began 50 h ago
    assert page.locator('tr[data-job="resolve-outcomes"] .strip .cell').count() == 1
    recompute = page.inner_text('tr[data-job="recompute-scores"]')
    assert "At 03:00, only on Sunday UTC 0 3 * * 0 · full pass" in recompute  # the weekly full pass too
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1400, f"the overview is {width} px wide at 1400 px"
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    page.goto(f"{live_server.url}/admin/jobs/jobrun/")
    fits = "document.querySelector('#result_list').scrollWidth <= document.querySelector('.results').clientWidth"
    assert page.evaluate(fits), "the run list's columns do not fit at 1400 px"
    page.goto(f"{live_server.url}/admin/jobs/")

    page.click(f'tr[data-job="resolve-outcomes"] a:text("#{failed.pk}")')
    page.wait_for_selector("text=RuntimeError: boom")
    assert "failed" in page.inner_text(".run-badge")

    page.goto(f"{live_server.url}/admin/jobs/")
    page.click('tr[data-job="recompute-scores"] button:text("Run now")')
    page.wait_for_selector(".messagelist")
    assert "Recompute-scores: succeeded" in page.inner_text(".messagelist")
    run = JobRun.objects.filter(trigger=Trigger.ADMIN).get()
    assert (run.job, run.user.username, run.status) == ("recompute-scores", "staff", Status.SUCCEEDED)
    page.goto(f"{live_server.url}/admin/jobs/")
    assert verdict("recompute-scores") == "ok"

    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.goto(f"{live_server.url}/admin/jobs/")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the overview is {width} px wide on a 390 px phone"
    page.screenshot(path=str(PHONE), full_page=True)
    page.close()


EVALUATION = ROOT / ".artifacts" / "shop-evaluation.png"  # docs/shop-evaluation.png, the README's, is a copy of it


def test_an_owner_sees_what_the_score_predicts_and_sets_the_booking_policy_on_the_shop_page(browser, live_server):
    """`make demo`'s data and nightly jobs, then evaluate-scores; the screenshot is the README's (copied by hand:
    a test run leaves the tracked files as they were)."""
    from django.core.management import call_command

    from scoring import demo
    from scoring.models import BookingPolicy, Evaluation, Shop

    demo.seed(shops=3, customers=300, appointments=3000, seed=42, now=timezone.now())
    for command in ("resolve_outcomes", "recompute_scores", "evaluate_scores"):
        call_command(command, stdout=StringIO())
    shop = Shop.objects.get(name="Lumen Skin Clinic")
    evaluation = Evaluation.objects.get(shop=shop)
    User.objects.create_superuser("owner", "owner@example.com", "a-long-test-password")

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{live_server.url}/admin/login/?next=/admin/scoring/shop/{shop.pk}/change/")
    page.fill("#id_username", "owner")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.wait_for_selector(".shop-evaluation")
    sentence = page.inner_text(".evaluation-sentence")
    assert sentence.startswith(f"Customers rated risky on {evaluation.at.day} {evaluation.at:%b} missed ")
    assert page.locator(".evaluation-chart rect").count() == 4
    shares = page.locator(".evaluation-table td.share").all_inner_texts()
    assert len(shares) == 4 and all(share.endswith("%") or share == "-" for share in shares)

    # The risky row (the fourth, a default not stored yet): a deposit of 20 % instead of a card.
    page.select_option("#id_booking_policies-3-requirement", "deposit")
    page.fill("#id_booking_policies-3-deposit_percent", "20")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist")
    assert list(BookingPolicy.objects.filter(shop=shop).values_list("tier", "requirement", "deposit_percent")) == [
        ("risky", "deposit", 20)
    ]
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1400, f"the shop page is {width} px wide at 1400 px"
    page.locator(".shop-evaluation").scroll_into_view_if_needed()
    EVALUATION.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(EVALUATION), full_page=True)
    page.close()


def test_staff_see_why_a_customer_has_their_score_on_a_laptop_and_a_phone(browser, live_server):
    """`make demo`'s data and jobs: the customer whose no-show staff forgave and whose tier they pinned, at 1400
    and 390 px (docs/customer-score*.png), and the customers' list on a phone (docs/customers-390.png)."""
    demo.seed(shops=3, customers=300, appointments=3000, seed=42, now=timezone.now())
    for job in ("resolve-outcomes", "recompute-scores"):
        assert run_job(job, trigger=Trigger.CLI).status == Status.SUCCEEDED
    forgiven = Adjustment.objects.get(action=Action.FORGIVE)
    pinned = Adjustment.objects.get(action=Action.PIN)
    assert forgiven.customer_id == pinned.customer_id
    customer = Customer.objects.get(pk=forgiven.customer_id)
    User.objects.create_superuser("staff", "staff@example.com", "a-long-test-password")

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{live_server.url}/admin/login/?next=/admin/scoring/customer/{customer.pk}/change/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.wait_for_selector("#score-explained")
    text = page.inner_text("#score-explained")
    assert "100 x (A+1) / (A+N+L/2+2) = 100 x " in text
    assert "Tier pinned to" in text and "by mia.staff" in text and pinned.reason in text
    assert "Snowed in" in text and "forgiven" in text
    assert "The stored score is" not in text  # the score, the counts and the appointments agree
    assert page.locator("svg.score-history circle").count() >= 1
    for width, path in ((1400, CUSTOMER), (390, CUSTOMER_PHONE)):
        page.set_viewport_size({"width": width, "height": 900})
        page.reload()
        wide = page.evaluate("document.documentElement.scrollWidth")
        assert wide <= width, f"the customer's page is {wide} px wide at {width} px"
        page.screenshot(path=str(path), full_page=True)

    page.goto(f"{live_server.url}/admin/scoring/customer/?tier=reliable&pinned=yes")
    assert page.inner_text("#result_list tbody").count("pinned until") == 1
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 390, f"the customers' list is {wide} px wide at 390 px"
    page.goto(f"{live_server.url}/admin/scoring/customer/?o=-6.5")  # riskiest first, then lowest score
    assert page.locator("#result_list tbody tr").first.inner_text().count("Risky") == 1
    page.screenshot(path=str(CUSTOMERS_PHONE))
    page.close()
