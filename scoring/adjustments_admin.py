"""Staff's side of scoring.adjustments: the audit log (read-only, filterable, exported as CSV) and the forgive and
pin forms the customer's page links to (`admin:scoring_forgive`, `admin:scoring_pin`)."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from jobs.admin import ReadOnly, TimesInUTCAdmin
from scoring import adjustments
from scoring.adjustments import AdjustmentError, Standing
from scoring.models import Adjustment, Appointment, Customer, Tier

CSV_COLUMNS = ("id", "at", "by", "action", "shop_id", "customer_id", "appointment_id", "tier", "until", "reason")
CSV_PAGE = 2000  # rows read from the database at a time


def _pages(rows: QuerySet[Any, tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """The rows (ordered by id, descending; the id first), one keyset page of CSV_PAGE at a time.

    Not one query's .iterator(): with server-side cursors off (for transaction poolers, project/settings.py)
    PostgreSQL's client would receive the whole result at once. A page is one indexed range of the ids.
    """
    last = None
    while True:
        page = list((rows if last is None else rows.filter(id__lt=last))[:CSV_PAGE])
        yield from page
        if len(page) < CSV_PAGE:
            return
        last = page[-1][0]


class Echo:
    """A file-like object csv.writer can write to, that hands back each line instead of keeping it."""

    def write(self, value: str) -> str:
        return value


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000, strip=True)


class PinForm(ReasonForm):
    tier = forms.ChoiceField(choices=Tier.choices, required=False)
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), help_text="inclusive, UTC")

    field_order = ["tier", "until", "reason"]

    def __init__(self, *args: Any, clearing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clearing = clearing

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.clearing:
            for name in ("tier", "until"):
                if not cleaned.get(name) and name not in self.errors:
                    self.add_error(name, "This field is required to pin a tier.")
        return cleaned


class ByFilter(admin.SimpleListFilter):
    """Staff or the grace rule (not every name ever logged: that would read the whole log on each page)."""

    title = "by"
    parameter_name = "by"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("staff", "staff"), ("grace", "a shop's grace rule")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Adjustment]) -> QuerySet[Adjustment]:
        if self.value() == "grace":
            return queryset.filter(by=adjustments.GRACE_RULE)
        if self.value() == "staff":
            return queryset.exclude(by=adjustments.GRACE_RULE)
        return queryset


@admin.register(Adjustment)
class AdjustmentAdmin(ReadOnly, TimesInUTCAdmin):
    """The log of every forgiveness, undo and pin: nobody adds, edits or deletes an entry here (and the database
    refuses UPDATE and DELETE)."""

    list_display = ["at", "by", "action", "customer_link", "appointment_id", "tier", "until", "reason"]
    list_filter = ["action", ByFilter, "shop", "at"]
    search_fields = ["reason", "by", "=customer__id", "=appointment__id"]
    list_per_page = 50
    show_full_result_count = False
    change_list_template = "admin/scoring/adjustment/change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Adjustment]:
        # Not a join: the log outlives its customers (no foreign key in the database), and keeps their rows.
        name = Customer.objects.filter(pk=OuterRef("customer_id")).values("name")[:1]
        return super().get_queryset(request).annotate(customer_name=Subquery(name))

    @admin.display(description="customer", ordering="customer_name")
    def customer_link(self, obj: Any) -> SafeString | str:
        if obj.customer_name is None:  # deleted since
            return f"{obj.customer_id} (deleted)"
        url = reverse("admin:scoring_customer_change", args=[obj.customer_id])
        return format_html('<a href="{}">{}</a>', url, obj.customer_name)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("export.csv", view(self.export_csv), name="scoring_adjustment_export"),
            path("forgive/<uuid:appointment_id>/", view(self.forgive_view), name="scoring_forgive"),
            path("pin/<uuid:customer_id>/", view(self.pin_view), name="scoring_pin"),
            *super().get_urls(),
        ]

    def export_csv(self, request: HttpRequest) -> StreamingHttpResponse:
        """The log as CSV, filtered as the list is, newest first, streamed: read CSV_PAGE rows at a time."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)
        rows = changelist.get_queryset(request)
        response = StreamingHttpResponse(_csv_lines(rows), content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="adjustments-{stamp}.csv"'
        return response

    def forgive_view(self, request: HttpRequest, appointment_id: uuid.UUID) -> HttpResponse:
        """GET: the reason to forgive the appointment (or to undo its forgiveness); POST: do it."""
        if not request.user.has_perm("scoring.forgive"):
            raise PermissionDenied
        appointment = Appointment.objects.select_related("customer", "shop").filter(pk=appointment_id).first()
        if appointment is None:
            raise Http404("No appointment has this id.")
        undo = appointment.forgiven
        form = ReasonForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                now = adjustments.forgive(
                    appointment.pk, by=request.user.get_username(), reason=form.cleaned_data["reason"], undo=undo
                )
            except AdjustmentError as error:
                form.add_error(None, str(error))
            else:
                done = "Forgiveness undone" if undo else "Forgiven"
                return self._done(request, appointment.customer_id, f"{done}: {appointment}. {_said(now)}")
        outcome = appointment.get_outcome_display()
        title = f"{'Undo the forgiveness of' if undo else 'Forgive'} the {outcome.lower()} of"
        return self._form(request, form, title, appointment.customer,
                          details=[("Appointment", str(appointment)), ("Outcome", outcome)],
                          submit="Undo forgiveness" if undo else "Forgive")  # fmt: skip

    def pin_view(self, request: HttpRequest, customer_id: uuid.UUID) -> HttpResponse:
        """GET: the tier, last day and reason of a pin; POST: pin it, or end the pin (`clear`)."""
        if not request.user.has_perm("scoring.pin_tier"):
            raise PermissionDenied
        customer = Customer.objects.filter(pk=customer_id).first()
        if customer is None:
            raise Http404("No customer has this id.")
        clearing = "clear" in request.POST
        initial = {"tier": customer.pinned_tier or None, "until": customer.pinned_until}
        form = PinForm(request.POST if request.method == "POST" else None, initial=initial, clearing=clearing)
        if request.method == "POST" and form.is_valid():
            by, reason = request.user.get_username(), form.cleaned_data["reason"]
            try:
                if clearing:
                    now = adjustments.unpin_tier(customer.pk, by=by, reason=reason)
                else:
                    tier, until = form.cleaned_data["tier"], form.cleaned_data["until"]
                    now = adjustments.pin_tier(customer.pk, tier, until=until, by=by, reason=reason)
            except AdjustmentError as error:
                form.add_error(None, str(error))
            else:
                return self._done(request, customer.pk, f"{'Pin ended' if clearing else 'Tier pinned'}. {_said(now)}")
        current = adjustments.standing(customer.pk)
        pinned = f"{current.effective_tier} until {current.pinned_until}" if current.pinned_until else "not pinned"
        return self._form(request, form, "Pin the tier of", customer,
                          details=[("Score", _said(current)), ("Pin", pinned)], submit="Pin",
                          clear=bool(customer.pinned_tier))  # fmt: skip

    def _done(self, request: HttpRequest, customer_id: uuid.UUID, message: str) -> HttpResponseRedirect:
        messages.success(request, message)
        return HttpResponseRedirect(reverse("admin:scoring_customer_change", args=[customer_id]))

    def _form(
        self, request: HttpRequest, form: forms.Form, title: str, customer: Customer, **context: Any
    ) -> HttpResponse:
        return render(
            request,
            "admin/scoring/adjustment/action.html",
            {
                **self.admin_site.each_context(request),
                "title": f"{title} {customer}",
                "form": form,
                "customer": customer,
                "customer_url": reverse("admin:scoring_customer_change", args=[customer.pk]),
                "opts": Customer._meta,
                **context,
            },
            status=400 if form.is_bound and not form.is_valid() else 200,
        )


def _said(now: Standing) -> str:
    score = "not scored yet" if now.score is None else f"Score {now.score}"
    pinned = f", pinned {now.effective_tier} until {now.pinned_until}" if now.pinned_until else ""
    return f"{score}, tier {now.tier}{pinned}."


def _csv_lines(entries: QuerySet[Adjustment]) -> Iterator[str]:
    writer = csv.writer(Echo())
    yield writer.writerow(CSV_COLUMNS)
    for row in _pages(entries.values_list(*CSV_COLUMNS).order_by("-id")):
        yield writer.writerow(
            [value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value for value in row]
        )
