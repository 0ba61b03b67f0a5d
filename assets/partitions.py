"""Daily partitions for what is daily in the data: lake snapshots, breakdowns and drift.

Breakdowns and drift are per factory day of capture (`catalog.factory_day`: the calendar day of each
line's local time); lake snapshots count the UTC days the event log is stored by. The first day is ``VISIONLEDGER_FIRST_DAY`` (default
2026-03-01, before the simulated factory's first day); partitions run to today.
"""

from __future__ import annotations

import os
from datetime import date

import dagster as dg

FIRST_DAY = os.environ.get("VISIONLEDGER_FIRST_DAY", "2026-03-01")

daily = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC", end_offset=1)


def partition_day(partition_key: str) -> date:
    """The day a partition key names."""
    return date.fromisoformat(partition_key)
