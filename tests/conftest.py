from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.db import connection


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    if os.environ.get("REQUIRE_POSTGRES") and not on_postgres:
        raise pytest.UsageError("REQUIRE_POSTGRES is set but DATABASE_URL is not a PostgreSQL URL")
    if not on_postgres:
        skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def on_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture(autouse=True)
def _adjustment_log_flushed(request: pytest.FixtureRequest) -> Iterator[None]:
    """Let a transactional test's flush empty the append-only adjustment log on SQLite.

    Django empties the tables after a test with `transaction=True` (or `live_server`): on PostgreSQL with a
    TRUNCATE, which the log's trigger does not refuse; on SQLite with a DELETE, which it does. So on SQLite the
    log is emptied just before, with its DELETE trigger dropped and created again: the test database only.
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = bool(marker and marker.kwargs.get("transaction")) or bool(
        {"transactional_db", "live_server"} & set(request.fixturenames)
    )
    if transactional:
        request.getfixturevalue("_django_db_helper")  # set up first, so its flush comes after this fixture's end
    yield
    if transactional and connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name = %s",
                           ["scoring_adjustment_no_delete"])  # fmt: skip
            trigger = cursor.fetchone()
            cursor.execute("SELECT 1 FROM scoring_adjustment LIMIT 1")
            if trigger and cursor.fetchone():
                cursor.execute(f"DROP TRIGGER {trigger[0]}")
                cursor.execute("DELETE FROM scoring_adjustment")
                cursor.execute(trigger[1])
