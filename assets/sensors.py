"""The sensor that keeps the per-day reports up with the log: it follows the event store from a cursor (the
last position it read) and, for each factory day whose images arrived, asks for that day's `drift_report`
and `breakdowns` partitions."""

import dagster as dg

from assets.breakdowns import breakdowns
from assets.drift import drift_report
from assets.partitions import daily
from assets.resources import CatalogResource
from catalog.factory_day import ingested_days

PAGE = 10_000  # log positions read a tick: a tick stays short however far behind the cursor is

DAY_REPORTS = [drift_report.key, breakdowns.key]

day_reports = dg.define_asset_job("day_reports", selection=DAY_REPORTS,
                                  description="One factory day's drift report and breakdowns.")


@dg.sensor(job=day_reports, minimum_interval_seconds=60)
def images_arrived(context: dg.SensorEvaluationContext, catalog: CatalogResource) -> dg.SensorResult:
    """Each factory day with images ingested since the last tick gets its drift report and breakdowns again.
    The cursor is the last log position read (at most PAGE further each tick); a run key names the day and the
    position of its last image, so a tick evaluated twice requests nothing twice."""
    after = int(context.cursor or 0)
    with catalog.open() as cat:
        upto = min(cat.head(), after + PAGE)
        days = ingested_days(cat, after, upto)
    requests = []
    for day, position in sorted(days.items()):
        key = day.isoformat()
        if not daily.has_partition_key(key):  # before VISIONLEDGER_FIRST_DAY, or a clock far ahead
            context.log.warning(f"images of {key} arrived, outside the daily partitions: no report")
            continue
        requests.append(dg.RunRequest(run_key=f"{key}@{position}", partition_key=key, asset_selection=DAY_REPORTS))
    return dg.SensorResult(run_requests=requests, cursor=str(upto),
                           skip_reason=None if requests else f"no images arrived after position {after:,}")
