"""Staff's view of the outbox: every alert message on each channel, and what became of it. Read-only: messages
are written by the alert check and delivered by jobs/outbox.py, never edited by hand."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from jobs.admin import JobFilter, ReadOnly, timestamp
from jobs.models import OutboxMessage


def status(obj: OutboxMessage) -> str:
    """delivered, sending (a lease runs), waiting (never tried) or retrying (tried, failed)."""
    if obj.delivered_at:
        return "delivered"
    if obj.lease_until and obj.lease_until > timezone.now():
        return "sending"
    return "retrying" if obj.attempts else "waiting"


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("undelivered", "not delivered yet"), ("delivered", "delivered"), ("retrying", "retrying")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> QuerySet[OutboxMessage]:
        if self.value() == "delivered":
            return queryset.filter(delivered_at__isnull=False)
        if self.value() == "undelivered":
            return queryset.filter(delivered_at__isnull=True)
        if self.value() == "retrying":
            return queryset.filter(delivered_at__isnull=True, attempts__gt=0)
        return queryset


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnly, admin.ModelAdmin):  # written by the alert check, changed by its senders
    list_display = ["created", "job", "kind", "channel", "state", "text"]
    list_filter = [StatusFilter, JobFilter, "channel", "kind"]
    search_fields = ["job"]
    ordering = ["-created_at", "id"]
    list_per_page = 50
    show_full_result_count = False
    fields = ["id", "job", "kind", "channel", "state", "created", "delivered", "next_attempt", "text", "run"]

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        if not search_term:
            return queryset, False
        return queryset.filter(Q(job__icontains=search_term) | Q(last_error__icontains=search_term)), False

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: OutboxMessage) -> str:
        return timestamp(obj.created_at)

    @admin.display(description="delivered", ordering="delivered_at")
    def delivered(self, obj: OutboxMessage) -> str:
        return timestamp(obj.delivered_at)

    @admin.display(description="next attempt")
    def next_attempt(self, obj: OutboxMessage) -> str:
        return "-" if obj.delivered_at else timestamp(obj.next_attempt_at)

    @admin.display(description="status")
    def state(self, obj: OutboxMessage) -> str:
        """The status, with the attempts it took and the last error."""
        word = status(obj)
        attempts = f"{obj.attempts} attempt{'s' * (obj.attempts != 1)}"
        if word == "delivered":
            return f"delivered {timestamp(obj.delivered_at)} ({attempts})"
        if word == "sending":
            return f"sending (attempt {obj.attempts}, left to its sender until {timestamp(obj.lease_until)})"
        if word == "waiting":
            return "waiting"
        error = obj.last_error or "did not finish (its process died or stopped)"
        return f"retrying: {attempts}, last: {error}; next {timestamp(obj.next_attempt_at)}"

    @admin.display(description="message")
    def text(self, obj: OutboxMessage) -> str:
        text = str(obj.content.get("text", ""))
        return text if len(text) <= 120 else text[:119] + "…"

    @admin.display(description="run")
    def run(self, obj: OutboxMessage) -> SafeString | str:
        run_id = obj.content.get("run_id")
        if not isinstance(run_id, int):
            return "-"
        return format_html('<a href="{}">#{}</a>', reverse("admin:jobs_jobrun_change", args=[run_id]), run_id)
