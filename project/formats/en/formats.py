"""Every time the admin shows reads as the jobs' pages do: 2026-12-02 04:34 UTC (TIME_ZONE is UTC).

Django's admin renders model times (list columns, read-only fields, history) with these formats
(FORMAT_MODULE_PATH), not with its English defaults ("Oct. 12, 2026, 1:15 p.m.", no zone); its
date drill-down reads 2026-10 and 10-12 rather than "October 2026" and "October 12".
"""

from jobs.timefmt import DATE_FORMAT, DATETIME_FORMAT, TIME_FORMAT

SHORT_DATETIME_FORMAT = DATETIME_FORMAT
SHORT_DATE_FORMAT = DATE_FORMAT
YEAR_MONTH_FORMAT = "Y-m"
MONTH_DAY_FORMAT = "m-d"

__all__ = [
    "DATETIME_FORMAT", "DATE_FORMAT", "MONTH_DAY_FORMAT", "SHORT_DATETIME_FORMAT", "SHORT_DATE_FORMAT", "TIME_FORMAT",
    "YEAR_MONTH_FORMAT",
]  # fmt: skip
