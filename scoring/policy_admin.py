"""The booking policy in the admin: one row per tier, inline on the shop's page, the defaults filled in.

A tier the shop never changed shows its default as an unsaved row: saving the page stores only what was
changed, so a shop has rows only for the tiers it decided otherwise.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from scoring.models import BookingPolicy, Shop, Tier
from scoring.policy import DEFAULTS


class BookingPolicyInline(admin.TabularInline):
    model = BookingPolicy
    fields = ("tier", "requirement", "deposit_percent")
    verbose_name = "booking policy"
    verbose_name_plural = "Booking policy: what a customer of each tier must do to book online"
    max_num = len(Tier)

    def get_extra(self, request: HttpRequest, obj: Shop | None = None, **kwargs: Any) -> int:
        return len(missing_tiers(obj))


def missing_tiers(shop: Shop | None) -> list[str]:
    """The tiers the shop has no row for, in the order an owner reads them."""
    have = set(shop.booking_policies.values_list("tier", flat=True)) if shop is not None and shop.pk else set()
    order = (Tier.RELIABLE, Tier.WATCH, Tier.NEW, Tier.RISKY)
    return [tier.value for tier in order if tier.value not in have]


def default_rows(shop: Shop | None) -> list[dict[str, str]]:
    """The initial values of the inline's unsaved rows: each missing tier with its default."""
    return [{"tier": tier, "requirement": DEFAULTS[tier].value} for tier in missing_tiers(shop)]
