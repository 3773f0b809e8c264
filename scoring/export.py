"""Customers with their score and effective tier as CSV, streamed: read in key order a batch at a time (no
server-side cursor: they do not survive a transaction pooler), so memory does not grow with the rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

from django.db.models import QuerySet

from scoring.adjustments import effective_tier_expression
from scoring.models import Customer

BATCH = 2000
HEADER = ("customer_id", "name", "shop", "email", "phone", "score", "tier", "effective_tier", "pinned_until",
          "scored_at")  # fmt: skip
TYPED = (1, 2, 3, 4)  # name, shop, email, phone: text people type
FORMULA = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet would run as a formula (OWASP: CSV injection)


def customer_rows(customers: QuerySet[Customer], today: date, *, batch: int = BATCH) -> Iterator[tuple[Any, ...]]:
    """Each customer of the queryset (its filters kept, its order not: by id) as a row of HEADER's columns."""
    values = customers.order_by("pk").values_list(
        "pk", "name", "shop__name", "email", "phone", "score__score", "score__tier",
        effective_tier_expression(today=today), "pinned_until", "score__computed_at",
    )  # fmt: skip
    after = None
    while True:
        rows = list((values.filter(pk__gt=after) if after is not None else values)[:batch])
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1][0]


def csv_chunks(rows: Iterable[tuple[Any, ...]], *, per_chunk: int = BATCH) -> Iterator[str]:
    """The header, then the rows as CSV text, `per_chunk` rows to a chunk. Text typed by people that a
    spreadsheet would take for a formula starts with an apostrophe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    for n, row in enumerate(rows, start=1):
        cells = list(row)
        for i in TYPED:
            if cells[i].startswith(FORMULA):
                cells[i] = "'" + cells[i]
        writer.writerow(cells)  # None as an empty cell, a time as `2026-12-02 04:34:27+00:00`
        if n % per_chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
