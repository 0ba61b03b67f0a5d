"""Daily breakdowns: images by line, station, camera, part and class, for the human labels and for each
engine's predictions (beside the label, so that disagreements can be counted per slice; counted by
`catalog.breakdowns`). Written to the lake as ``breakdowns/day=…/{labels,predictions}.parquet`` with a chart
beside them."""

from datetime import date

import altair as alt
import dagster as dg
import duckdb
import pyarrow as pa

from assets.partitions import daily, partition_day
from assets.resources import CatalogResource, LakeResource
from catalog.breakdowns import label_breakdown, prediction_breakdown
from catalog.lake import Lake
from catalog.queries import UNLABELLED


def breakdown_chart(labels: pa.Table, predictions: pa.Table, day: date) -> alt.VConcatChart:
    """Images per line and camera by class: the labels, and each engine's predictions."""
    con = duckdb.connect()
    con.register("labels", labels)
    con.register("predictions", predictions)
    frames = [
        con.sql("SELECT line || '/' || station || '/' || camera AS camera, class, sum(images)::BIGINT AS images,"
                " 'human labels' AS source FROM labels GROUP BY ALL").to_arrow_table(),
        con.sql("SELECT line || '/' || station || '/' || camera AS camera, predicted_class AS class,"
                " sum(images)::BIGINT AS images, 'engine ' || engine_id AS source FROM predictions GROUP BY ALL"
                ).to_arrow_table(),
    ]
    data = pa.concat_tables([f for f in frames if f.num_rows]) if any(f.num_rows for f in frames) else frames[0]
    return alt.Chart(alt.Data(values=data.to_pylist())).mark_bar().encode(
        x=alt.X("camera:N", title="line / station / camera"),
        y=alt.Y("images:Q", title="images"),
        color=alt.Color("class:N"),
        column=alt.Column("source:N", title=None),
        tooltip=["camera:N", "class:N", "images:Q", "source:N"],
    ).properties(title=f"images by camera and class, {day.isoformat()}", width=260, height=220)


def write_breakdowns(lake: Lake, labels: pa.Table, predictions: pa.Table, day: date) -> dict[str, str]:
    folder = f"breakdowns/day={day.isoformat()}"
    paths = {
        "labels": str(lake.write_parquet(f"{folder}/labels.parquet", labels)),
        "predictions": str(lake.write_parquet(f"{folder}/predictions.parquet", predictions)),
    }
    chart = breakdown_chart(labels, predictions, day)
    import vl_convert as vlc  # noqa: PLC0415 - a large native module; only plots need it

    paths["chart_png"] = str(lake.write_bytes(f"{folder}/breakdown.png", vlc.vegalite_to_png(chart.to_json(), scale=2)))
    paths["chart_html"] = str(lake.write_bytes(f"{folder}/breakdown.html", chart.to_html().encode()))
    return paths


@dg.asset(partitions_def=daily, group_name="analytics", compute_kind="duckdb")
def breakdowns(context: dg.AssetExecutionContext, catalog: CatalogResource, lake: LakeResource) -> dg.MaterializeResult:
    """Label and prediction counts per line, part, day, station, camera and class for one capture day."""
    day = partition_day(context.partition_key)
    with catalog.open() as cat:
        labels = label_breakdown(cat, day)
        predictions = prediction_breakdown(cat, day)
    paths = write_breakdowns(lake.lake, labels, predictions, day)
    con = duckdb.connect()
    con.register("labels", labels)
    con.register("predictions", predictions)
    per_line = con.sql("SELECT line, class, sum(images)::BIGINT FROM labels GROUP BY ALL ORDER BY ALL").fetchall()
    agreement = con.sql(
        "SELECT engine_id, sum(images) FILTER (WHERE predicted_class = label)::BIGINT, sum(images)::BIGINT"
        " FROM predictions WHERE label <> $u GROUP BY ALL ORDER BY ALL", params={"u": UNLABELLED}).fetchall()
    context.log.info(f"{day}: {sum(r[2] for r in per_line):,} images, {len(agreement)} engines with predictions")
    return dg.MaterializeResult(metadata={
        "images": dg.MetadataValue.int(sum(r[2] for r in per_line)),
        "parts": dg.MetadataValue.int(len(set(labels.column("part_id").to_pylist()))),
        "by_line_and_class": dg.MetadataValue.md(
            "| line | class | images |\n|---|---|---|\n" + "\n".join(f"| {a} | {b} | {n:,} |" for a, b, n in per_line)),
        "engine_agreement": dg.MetadataValue.md(
            "| engine | agree with label | labelled predictions |\n|---|---|---|\n"
            + "\n".join(f"| {e} | {a:,} | {n:,} |" for e, a, n in agreement)),
        "labels": dg.MetadataValue.path(paths["labels"]),
        "predictions": dg.MetadataValue.path(paths["predictions"]),
        "chart": dg.MetadataValue.path(paths["chart_png"]),
    })
