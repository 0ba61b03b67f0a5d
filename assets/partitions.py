"""Daily partitions for what is daily in the data: lake snapshots, breakdowns and drift.

Days are UTC calendar days of capture time. The first day is ``VISIONLEDGER_FIRST_DAY`` (default
2026-03-01, before the simulated factory's first day); partitions run to today.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta

import dagster as dg

FIRST_DAY = os.environ.get("VISIONLEDGER_FIRST_DAY", "2026-03-01")

daily = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC", end_offset=1)


def day_window(partition_key: str) -> tuple[date, datetime, datetime]:
    """The day a partition key names, and its [start, end) in UTC."""
    day = date.fromisoformat(partition_key)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return day, start, start + timedelta(days=1)
