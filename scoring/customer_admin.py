"""The customers' admin: the list with each customer's score and effective tier (sortable, filterable, exported as
CSV), and a customer's page, which explains their score (scoring/explain.py) above the form."""

from __future__ import annotations

import uuid
from contextlib import suppress
from datetime import UTC, date, datetime
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Case, IntegerField, Q, QuerySet, Value, When
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect, StreamingHttpResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from jobs.admin import TimesInUTCAdmin
from jobs.timefmt import utc, when
from scoring import export
from scoring.adjustments import effective_tier_expression
from scoring.explain import LISTED, Explanation, Line, explain, in_words, thresholds
from scoring.history import chart, legend
from scoring.models import Customer, Outcome, Tier


class EffectiveTierFilter(admin.SimpleListFilter):
    """The tier that counts: a pin while it lasts, else the score's."""

    title = "tier (pins included)"
    parameter_name = "tier"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(tier.value, tier.label) for tier in Tier]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Customer]) -> QuerySet[Customer]:
        # effective_tier: annotated by CustomerAdmin.get_queryset
        return queryset.filter(effective_tier=self.value()) if self.value() in Tier.values else queryset  # type: ignore[misc]


class PinnedFilter(admin.SimpleListFilter):
    title = "pinned tier"
    parameter_name = "pinned"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "pinned now"), ("no", "not pinned")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Customer]) -> QuerySet[Customer]:
        pinned = Q(pinned_until__gte=_today()) & ~Q(pinned_tier="")
        return {"yes": queryset.filter(pinned), "no": queryset.exclude(pinned)}.get(self.value() or "", queryset)


@admin.register(Customer)
class CustomerAdmin(TimesInUTCAdmin):
    """The list shows each customer's score and effective tier; a customer's page explains the score
    (scoring/explain.py). The list exports as CSV, its filters and search kept (scoring/export.py)."""

    list_display = ["name", "shop", "email", "phone", "score_value", "tier", "appointments_link"]
    list_filter = [EffectiveTierFilter, PinnedFilter, "shop"]
    list_select_related = ["shop", "score"]
    search_fields = ["name", "email", "phone"]
    raw_id_fields = ["shop"]
    # A pin is set through its form (scoring.adjustments), which logs who, when and why: never edited here.
    readonly_fields = ["pinned_tier", "pinned_until"]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Customer]:
        ranks = [When(effective_tier=tier.value, then=Value(rank)) for rank, tier in enumerate(Tier)]
        return (
            super()
            .get_queryset(request)
            .annotate(effective_tier=effective_tier_expression(today=_today()))
            .annotate(tier_rank=Case(*ranks, output_field=IntegerField()))  # sorted: new, reliable, watch, risky
        )

    @admin.display(description="score", ordering="score__score")
    def score_value(self, obj: Customer) -> int | None:
        return getattr(getattr(obj, "score", None), "score", None)

    @admin.display(description="tier", ordering="tier_rank")
    def tier(self, obj: Customer) -> str:
        """The effective tier; a pin says so, and until when."""
        tier = Tier(obj.effective_tier)  # type: ignore[attr-defined]
        score = getattr(obj, "score", None)
        if obj.pinned_tier and obj.pinned_until and obj.pinned_until >= _today():
            return format_html("{} <small>pinned until {}</small>", tier.label, obj.pinned_until.isoformat())
        return tier.label if score else "not scored yet"

    @admin.display(description="appointments")
    def appointments_link(self, obj: Customer) -> SafeString:
        url = reverse("admin:scoring_appointment_changelist") + f"?customer__id__exact={obj.pk}"
        return format_html('<a href="{}">appointments</a>', url)

    def get_urls(self) -> list[URLPattern]:
        export = self.admin_site.admin_view(self.export_view)
        return [path("export/", export, name="scoring_customer_export"), *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """The customers the list shows (its filters and search) as CSV, streamed."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            customers = self.get_changelist_instance(request).get_queryset(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(reverse("admin:scoring_customer_changelist") + "?e=1")
        response = StreamingHttpResponse(
            export.csv_chunks(export.customer_rows(customers, _today())), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="customers-{_today().isoformat()}.csv"'
        return response

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:  # fmt: skip
        """A customer's page explains their score above the form."""
        context = dict(extra_context or {})
        if object_id and (pk := _pk(object_id)) and self.has_view_or_change_permission(request):
            now = timezone.now()
            with suppress(Customer.DoesNotExist):  # Django says so its own way
                context["explained"] = _page(request, explain(pk, now), now)
        return super().changeform_view(request, object_id, form_url, context)


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def _pk(object_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(unquote(object_id))
    except ValueError:
        return None


def _link(name: str, *args: Any) -> str | None:
    """The URL of an admin page that may not exist in this deployment (another module's): None if it does not."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def _page(request: HttpRequest, explanation: Explanation, now: datetime) -> dict[str, Any]:
    """What the customer's page shows of the explanation, with the links this user may follow."""
    can_forgive, can_pin = request.user.has_perm("scoring.forgive"), request.user.has_perm("scoring.pin_tier")
    forgivable = {Outcome.NO_SHOW.value, Outcome.LATE_CANCEL.value}

    def row(line: Line) -> dict[str, Any]:
        visit = line.appointment
        forgive = _link("admin:scoring_forgive", visit.pk) if can_forgive and visit.outcome in forgivable else None
        return {"line": line, "visit": visit, "forgive": forgive, "undo": visit.forgiven}

    score = explanation.score
    run = explanation.run
    return {
        "e": explanation,
        "tier_words": in_words(explanation.tier),
        "thresholds": thresholds(),
        "computed": when(score.computed_at, now) if score else None,
        "run_url": reverse("admin:jobs_jobrun_change", args=[run.pk]) if run else None,
        "start": utc(explanation.window_start),
        "end": utc(explanation.window_end),
        "days": (explanation.window_end - explanation.window_start).days,
        "counted": [row(line) for line in explanation.counted],
        "not_counted": [row(line) for line in explanation.not_counted],
        "unresolved": [row(line) for line in explanation.unresolved],
        "chart": chart(explanation.history, score.score, explanation.customer.created_at, now) if score else "",
        "legend": legend(),
        "history_days": settings.JOB_RUNS_RETENTION_DAYS,
        "listed": LISTED,
        "pin_url": _link("admin:scoring_pin", explanation.customer.pk) if can_pin else None,
        "appointments_url": reverse("admin:scoring_appointment_changelist")
        + f"?customer__id__exact={explanation.customer.pk}",
    }
