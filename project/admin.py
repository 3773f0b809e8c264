"""The admin site: Django's, with the jobs overview as the jobs app's page."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.db import DataError
from django.db.models import Model
from django.http import HttpRequest
from django.template.response import TemplateResponse


class SafeLookups(admin.ModelAdmin):
    """A query string Django cannot turn into dates is a bad lookup (the list without filters), not a 500.

    Django's own checks miss some: date_hierarchy adds a year, a month or a day to the date asked for
    (`?starts_at__year=9999` is year 10000), a `__year` of 40 digits overflows a C long, and PostgreSQL
    refuses a NUL character in a text filter (`?status__exact=%00`: psycopg raises before sending it).
    """

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        try:
            return super().get_changelist_instance(request)
        except (ValueError, OverflowError, DataError) as error:
            raise IncorrectLookupParameters(error) from error


class AdminSite(admin.AdminSite):
    site_header = "No-show scoring"
    site_title = "No-show scoring"
    site_url = None  # there is no public site: no "View site" link
    enable_nav_sidebar = False  # the ledger's columns need the width, on a laptop and a phone

    def register(
        self,
        model_or_iterable: type[Model] | Iterable[type[Model]],
        admin_class: type[admin.ModelAdmin] | None = None,
        **options: Any,
    ) -> None:
        """Every model's admin, whichever app registers it (Django's auth too), gets SafeLookups."""
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, SafeLookups):
            admin_class = type(
                admin_class.__name__,
                (SafeLookups, admin_class),
                {"__module__": admin_class.__module__, "__qualname__": admin_class.__qualname__},
            )
        super().register(model_or_iterable, admin_class, **options)

    def app_index(
        self, request: HttpRequest, app_label: str, extra_context: dict[str, Any] | None = None
    ) -> TemplateResponse:
        if app_label == "jobs":
            from jobs.admin import overview_context  # jobs.admin registers on this site: import it late

            extra_context = {**(extra_context or {}), **overview_context(request)}
        return super().app_index(request, app_label, extra_context)
