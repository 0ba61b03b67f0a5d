"""The daily drift report as an asset: each camera's statistics of the day against its reference window
(`learning.drift`), written to the lake (`catalog.drift` reads it back), plotted, and an asset check that
warns when one leaves its band."""

# No `from __future__ import annotations`: Dagster reads the asset's config annotation as a live class.

from collections.abc import Iterator

import dagster as dg

from assets.partitions import daily, partition_day
from assets.resources import CatalogResource, LakeResource
from catalog.drift import cameras_path, out_of_band
from learning import drift

CHECK = "stats_within_bands"


class DriftConfig(drift.DriftConfig, dg.Config):
    """`learning.drift.DriftConfig` as a Dagster run config."""


def markdown_table(rows: list[dict]) -> str:
    lines = ["| camera | statistic | value | band |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['line']}/{r['station']}/{r['camera']} | {r['statistic']} | {r['value']:.4g} "
              f"| [{r['low']:.4g}, {r['high']:.4g}] |" for r in rows]
    return "\n".join(lines)


@dg.asset(
    partitions_def=daily,
    group_name="monitoring",
    check_specs=[dg.AssetCheckSpec(CHECK, asset="drift_report",
                                   description="Every camera's statistics of the day stay inside their band.")],
    description="Per day and camera: brightness, contrast, sharpness and stuck pixels against a reference "
                "window, written to drift/ in the lake and plotted.",
)
def drift_report(context: dg.AssetExecutionContext, config: DriftConfig, catalog: CatalogResource,
                 lake: LakeResource) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    day = partition_day(context.partition_key)
    store = lake.lake
    with catalog.open() as cat:
        # Per camera at debug (the UI shows it); the day's verdict at info, one line a console can follow.
        today, table = drift.drift_for_day(cat, store, day, config, log=context.log.debug)
    image_file = store.write_parquet(drift.images_path(day), today.images)
    camera_file = store.write_parquet(cameras_path(day), table)
    html, png = drift.write_drift_chart(store)
    alerts = out_of_band(table)
    context.log.info(f"{day}: {len(today.cameras())} cameras, {today.images.num_rows} images; "
                     + ("out of band: " + ", ".join(f"{r['line']}/{r['station']}/{r['camera']} {r['statistic']}"
                                                    for r in alerts) if alerts else "all within their bands"))
    windows = sorted({r["reference_days"] for r in table.to_pylist() if r["reference_days"]})
    yield dg.MaterializeResult(metadata={
        "cameras": len(today.cameras()),
        "images": today.images.num_rows,
        "alerts": dg.MetadataValue.md(markdown_table(alerts) if alerts else "all statistics within their bands"),
        "reference_window": "; ".join(windows) or "none",
        "images_table": dg.MetadataValue.path(str(image_file)),
        "drift_table": dg.MetadataValue.path(str(camera_file)),
        "chart_html": dg.MetadataValue.path(str(html)),
        "chart": dg.MetadataValue.path(str(png)),
    })
    yield dg.AssetCheckResult(
        check_name=CHECK, passed=not alerts, severity=dg.AssetCheckSeverity.WARN,
        metadata={"out_of_band": len(alerts),
                  "rows": dg.MetadataValue.md(markdown_table(alerts) if alerts else "none")},
    )
