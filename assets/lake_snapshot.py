"""The lake snapshot: the Parquet mirror brought up to the catalog's head, one materialization per day of
events, recording the position it reached."""

import dagster as dg

from assets.partitions import daily, partition_day
from assets.resources import CatalogResource, LakeResource


@dg.asset(partitions_def=daily, group_name="lake", compute_kind="parquet")
def lake_snapshot(context: dg.AssetExecutionContext, catalog: CatalogResource,
                  lake: LakeResource) -> dg.MaterializeResult:
    """Mirror every event not yet in the lake (the sync is global and exactly-once; re-running it for any
    day is cheap), then count what the lake holds for this partition's day by event type."""
    day = partition_day(context.partition_key)
    mirror = lake.lake
    with catalog.open() as cat:
        def progress(done: int, total: int) -> None:
            context.log.info(f"lake sync: {done:,} / {total:,} events")

        report = mirror.sync(cat.db, progress=progress)
        head = cat.head()
    by_type = mirror.duckdb().execute(
        "SELECT type, count(*) FROM events WHERE day = $day GROUP BY type ORDER BY type", {"day": day}).fetchall()
    return dg.MaterializeResult(
        metadata={
            "position": dg.MetadataValue.int(report.end),
            "catalog_head": dg.MetadataValue.int(head),
            "events_synced_now": dg.MetadataValue.int(report.events),
            "events_that_day": dg.MetadataValue.int(sum(n for _, n in by_type)),
            "by_type": dg.MetadataValue.md("| type | events |\n|---|---|\n"
                                           + "\n".join(f"| {t} | {n:,} |" for t, n in by_type)),
            "path": dg.MetadataValue.path(str(mirror.events_dir)),
        },
        data_version=dg.DataVersion(str(report.end)),
    )
