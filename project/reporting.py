"""What an error report (Django's technical 500 and 400 pages, the error e-mails) may show."""

from __future__ import annotations

import re
from collections.abc import ItemsView
from types import FrameType
from typing import Any

from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, hiding also whatever can carry a credential in a URL or a connection string.

    The report lists the settings and request.META, and the development server puts the whole
    environment in META: DATABASE_URL and EMAIL_URL hold passwords, JOBS_ALERT_WEBHOOK_URL's path is
    its secret. Django hides names with API, AUTH, TOKEN, KEY, SECRET, PASS, SIGNATURE or HTTP_COOKIE;
    this adds URL, URI, DSN, DATABASE, HOOK, CREDENTIAL, PRIVATE and PWD, and applies the same names to
    the local variables of the traceback's frames, with DEBUG on as well as off.
    """

    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|PWD|SIGNATURE|HTTP_COOKIE|CREDENTIAL|PRIVATE|URL|URI|DSN|DATABASE|HOOK",
        flags=re.IGNORECASE,
    )

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: FrameType) -> ItemsView[str, Any]:
        return {
            name: self.cleansed_substitute if self.hidden_settings.search(name) else value
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        }.items()
