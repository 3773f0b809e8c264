"""Fixtures of the scoring tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection


@pytest.fixture
def plans() -> Iterator[list[str]]:
    """The plans PostgreSQL runs from here on, those of triggers' statements too, with the blocks each node read
    (auto_explain, its reports sent to this session as notices)."""
    reports: list[str] = []
    connection.ensure_connection()
    handler = lambda notice: reports.append(notice.message_primary)  # noqa: E731
    connection.connection.add_notice_handler(handler)
    explain = {"min_duration": "0", "nested_statements": "on", "analyze": "on", "buffers": "on", "timing": "off",
               "level": "notice", "format": "json"}  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("LOAD 'auto_explain'")
        for name, value in explain.items():
            cursor.execute(f"SET auto_explain.log_{name} = {value}")
    yield reports
    with connection.cursor() as cursor:
        cursor.execute("SET auto_explain.log_min_duration = -1")
    connection.connection.remove_notice_handler(handler)
