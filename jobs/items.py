"""Item isolation for job functions: one failing item never stops the batch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import transaction

logger = logging.getLogger("jobs")


@contextmanager
def item(errors: list[str], label: str) -> Iterator[None]:
    """Run one item in its own savepoint; on failure undo just that item and note why.

    Count an item's success as the last statement inside the block.
    """
    try:
        with transaction.atomic():
            yield
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        errors.append(f"{label}: {type(exc).__name__}: {first_line}")
        logger.warning("job item failed: %s", label, exc_info=True)
