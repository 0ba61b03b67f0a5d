"""Daily breakdowns: images by line, station, camera, part and class, for the human labels and for each
engine's predictions (beside the label, so that disagreements can be counted per slice). Written to the
lake as ``breakdowns/day=…/{labels,predictions}.parquet`` with a chart beside them."""

from datetime import date

import altair as alt
import dagster as dg
import duckdb
import pyarrow as pa

from assets.partitions import daily, partition_day
from assets.resources import CatalogResource, LakeResource
from catalog import Catalog
from catalog.factory_day import on_days
from catalog.lake import Lake
from catalog.ontology import Ontology
from catalog.queries import UNLABELLED, current_class

SLICE = ("day", "line", "station", "camera", "part_id")


def label_breakdown(cat: Catalog, day: date) -> pa.Table:
    """Images captured on the factory ``day`` per slice, current class (read in the current ontology) and
    exclusion."""
    ontology = Ontology.load(cat)
    captured, params = on_days(day, day, "i.captured_at", "i.line")
    with cat.db.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT i.line, i.station, i.camera, i.part_id, i.label, i.label_ontology_version, i.excluded, count(*)"
            f" FROM projections.images i WHERE {captured} GROUP BY 1, 2, 3, 4, 5, 6, 7", params).fetchall()
    recorded = _table([(*r[:4], current_class(ontology, r[4], r[5]) or UNLABELLED, r[6], r[7]) for r in rows],
                      ("line", "station", "camera", "part_id", "class", "excluded", "images"))
    # Two recorded names can now be one class (a merge): add them up again.
    return _sum(recorded, day, ("line", "station", "camera", "part_id", "class", "excluded"))


def prediction_breakdown(cat: Catalog, day: date) -> pa.Table:
    """Each engine's latest predictions for images captured on the factory ``day``, per slice, predicted
    class and human class."""
    ontology = Ontology.load(cat)
    captured, params = on_days(day, day, "i.captured_at", "i.line")
    with cat.db.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT i.line, i.station, i.camera, i.part_id, p.engine_id, p.predicted_class, i.label,"
            " i.label_ontology_version, count(*)"
            " FROM projections.latest_predictions p JOIN projections.images i USING (sha256)"
            f" WHERE {captured} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8", params).fetchall()
    recorded = _table([(*r[:6], current_class(ontology, r[6], r[7]) or UNLABELLED, r[8]) for r in rows],
                      ("line", "station", "camera", "part_id", "engine_id", "predicted_class", "label", "images"))
    return _sum(recorded, day, ("line", "station", "camera", "part_id", "engine_id", "predicted_class", "label"))


def _table(rows: list[tuple], names: tuple[str, ...]) -> pa.Table:
    """Rows as a table with fixed types, so that an empty day has the same schema as a full one."""
    types = {"excluded": pa.bool_(), "images": pa.int64()}
    return pa.table({name: pa.array([r[i] for r in rows], types.get(name, pa.string()))
                     for i, name in enumerate(names)})


def _sum(table: pa.Table, day: date, keys: tuple[str, ...]) -> pa.Table:
    con = duckdb.connect()
    con.register("t", table)
    columns = ", ".join(keys)
    summed = con.sql(f"SELECT $day::DATE AS day, {columns}, sum(images)::BIGINT AS images FROM t"
                     f" GROUP BY {columns} ORDER BY {columns}", params={"day": day}).to_arrow_table()
    return summed


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
        cat.catch_up()
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
