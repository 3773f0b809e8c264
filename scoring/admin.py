from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import DatabaseError
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.safestring import SafeString

from jobs.admin import ReadOnly, TimesInUTCAdmin
from scoring.evaluation_admin import shop_evaluation
from scoring.models import Appointment, CustomerScore, Shop, SlotOffer, WaitlistEntry
from scoring.offers import OfferError, respond_to_offer
from scoring.policy_admin import BookingPolicyInline, default_rows


@admin.register(Shop)
class ShopAdmin(TimesInUTCAdmin):
    list_display = ["name", "customer_count", "created_at"]
    search_fields = ["name"]
    inlines = [BookingPolicyInline]
    readonly_fields = ["what_the_score_predicts"]

    def get_formset_kwargs(self, request: HttpRequest, obj: Any, inline: Any, prefix: str) -> dict[str, Any]:
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, BookingPolicyInline):
            kwargs["initial"] = default_rows(obj)  # the tiers the shop never changed, with their defaults
        return kwargs

    @admin.display(description="what the score predicts")
    def what_the_score_predicts(self, obj: Shop) -> SafeString:
        return shop_evaluation(obj) if obj.pk else SafeString("")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Shop]:
        return super().get_queryset(request).annotate(customer_count=Count("customers"))

    @admin.display(description="customers", ordering="customer_count")
    def customer_count(self, obj: Any) -> int:
        return obj.customer_count


from scoring import customer_admin  # noqa: E402, F401  (the customers' list and page, a module of its own)


@admin.register(Appointment)
class AppointmentAdmin(TimesInUTCAdmin):
    list_display = ["starts_at", "customer", "shop", "outcome", "checked_in_at", "cancelled_at", "resolved_at"]
    list_filter = ["outcome", "starts_at", "shop"]
    list_select_related = ["customer", "shop"]
    date_hierarchy = "starts_at"
    search_fields = ["customer__name", "customer__email"]
    raw_id_fields = ["shop", "customer"]
    show_full_result_count = False


@admin.register(CustomerScore)
class CustomerScoreAdmin(ReadOnly, TimesInUTCAdmin):
    list_display = ["customer", "shop", "score", "tier", "attended", "no_shows", "late_cancels", "cancellations",
                    "last_appointment_at", "computed_at"]  # fmt: skip
    ages = ("computed_at",)
    list_filter = ["tier", "shop"]
    list_select_related = ["customer", "shop"]
    ordering = ["-score"]
    search_fields = ["customer__name"]
    show_full_result_count = False


@admin.register(WaitlistEntry)
class WaitlistEntryAdmin(TimesInUTCAdmin):
    list_display = ["customer", "shop", "created_at", "closed_at"]
    ages = ("created_at",)  # waiting since
    list_filter = [("closed_at", admin.EmptyFieldListFilter), "shop"]
    list_select_related = ["customer", "shop"]
    search_fields = ["customer__name"]
    raw_id_fields = ["shop", "customer"]


@admin.register(SlotOffer)
class SlotOfferAdmin(ReadOnly, TimesInUTCAdmin):
    list_display = ["slot", "customer", "status", "offered_at", "expires_at", "responded_at"]
    ages = ("offered_at", "expires_at")  # an offer lives minutes: how long ago, how soon
    list_filter = ["status"]
    list_select_related = ["slot__customer", "customer"]
    search_fields = ["customer__name"]
    actions = ["accept", "decline"]

    @admin.action(description="Record the customer's answer: accepted (books the slot)")
    def accept(self, request: HttpRequest, queryset: QuerySet[SlotOffer]) -> None:
        self._answer(request, queryset, accept=True)

    @admin.action(description="Record the customer's answer: declined (offers the slot to the next in line)")
    def decline(self, request: HttpRequest, queryset: QuerySet[SlotOffer]) -> None:
        self._answer(request, queryset, accept=False)

    def _answer(self, request: HttpRequest, queryset: QuerySet[SlotOffer], *, accept: bool) -> None:
        for offer in queryset:
            try:
                respond_to_offer(offer.pk, accept=accept, now=timezone.now())
            except OfferError as error:  # closed meanwhile, or it would double-book the customer
                messages.warning(request, f"{offer}: {error}")
            except DatabaseError as error:  # a conflict the rules above did not foresee: say so, never a 500
                messages.error(request, f"{offer}: not recorded ({type(error).__name__}); try again.")
            else:
                messages.success(request, f"{offer}: {'accepted' if accept else 'declined'}.")


from scoring import adjustments_admin  # noqa: E402, F401  (staff adjustments: the log and the forgive/pin forms)
