"""The admin site: Django's, with the jobs overview as the jobs app's page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse


class AdminSite(admin.AdminSite):
    site_header = "No-show scoring"
    site_title = "No-show scoring"
    site_url = None  # there is no public site: no "View site" link
    enable_nav_sidebar = False  # the ledger's columns need the width, on a laptop and a phone

    def app_index(
        self, request: HttpRequest, app_label: str, extra_context: dict[str, Any] | None = None
    ) -> TemplateResponse:
        if app_label == "jobs":
            from jobs.admin import overview_context  # jobs.admin registers on this site: import it late

            extra_context = {**(extra_context or {}), **overview_context(request)}
        return super().app_index(request, app_label, extra_context)
