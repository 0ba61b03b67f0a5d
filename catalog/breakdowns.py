"""A factory day's images counted per slice (line, station, camera, part): by human class, and by each
engine's latest prediction beside the human class. The daily `breakdowns` asset writes and plots them."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from catalog.factory_day import on_days
from catalog.ontology import Ontology
from catalog.queries import UNLABELLED, current_class

if TYPE_CHECKING:
    from catalog import Catalog


def label_breakdown(cat: Catalog, day: date) -> pa.Table:
    """Images captured on the factory ``day`` per slice, current class (read in the current ontology) and
    exclusion."""
    ontology = Ontology.load(cat)
    captured, params = on_days(day, day, "i.captured_at", "i.line")
    with cat.read() as conn:
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
    with cat.read() as conn:
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
