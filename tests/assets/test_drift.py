"""The drift report: materialized day by day in process against the real PostgreSQL of the tiny factory, it
must catch the simulator's dimming lamp, stuck pixels and dust on the first day of each, and no more."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq

from assets.drift import drift_report
from assets.resources import CatalogResource, LakeResource

DAYS = ("2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05")  # simulator days 0..3
DIMMED = (("line1", "st1", "cam1"), ("line1", "st1", "cam2"))  # 3 % darker a day from day 1
STUCK = ("line2", "st1", "cam1")  # 12 stuck pixels on day 2, 24 on day 3
DUSTY = ("line2", "st1", "cam2")  # blurred from day 3
# Each drift on its first day: the lamp at 3 % in contrast (which follows the lamp and, on a procedural
# surface, hardly varies from part to part), in brightness from 6 % (both cameras of the line darker
# together); the first stuck pixels; the dust in sharpness (and contrast, which it halves). Exact sets:
# nothing before, no other camera, no other statistic.
EXPECTED_ALERTS = {
    "2026-03-02": set(),
    "2026-03-03": {(c, "contrast") for c in DIMMED},
    "2026-03-04": {(c, s) for c in DIMMED for s in ("brightness", "contrast")} | {(STUCK, "stuck_pixels")},
    "2026-03-05": {(c, s) for c in DIMMED for s in ("brightness", "contrast")}
    | {(STUCK, "stuck_pixels"), (DUSTY, "sharpness"), (DUSTY, "contrast")},
}


def _materialize(resources: dict, day: str) -> dg.ExecuteInProcessResult:
    return dg.materialize([drift_report], partition_key=day, resources=resources,
                          instance=dg.DagsterInstance.ephemeral())


def test_drift_report_catches_each_drift_on_its_day(factory_cat) -> None:
    settings = factory_cat.settings
    resources = {"catalog": CatalogResource(home=str(settings.home), database_url=settings.database_url),
                 "lake": LakeResource(root=str(settings.lake_root))}
    lake_root = settings.lake_root
    tables = {}
    for day in DAYS:
        result = _materialize(resources, day)
        assert result.success
        table = pq.read_table(lake_root / f"drift/cameras/day={day}/drift.parquet")
        tables[day] = table
        rows = table.to_pylist()
        alerts = {((r["line"], r["station"], r["camera"]), r["statistic"]) for r in rows if r["in_band"] is False}
        assert alerts == EXPECTED_ALERTS[day], day
        # With six images a camera, 6 % of brightness is not sure enough for either camera alone; both, together, are.
        assert {r["line_wide"] for r in rows if r["in_band"] is False and r["statistic"] == "brightness"} <= {True}
        assert not any(r["line_wide"] for r in rows if r["statistic"] != "brightness")
        assert {r["reference_days"] for r in rows} == {"2026-03-02"}
        assert len({(r["line"], r["station"], r["camera"]) for r in rows}) == 4

        [check] = result.get_asset_check_evaluations()
        assert check.check_name == "stats_within_bands"
        assert check.passed == (not EXPECTED_ALERTS[day])
        assert check.severity == dg.AssetCheckSeverity.WARN
        assert check.metadata["out_of_band"].value == len(EXPECTED_ALERTS[day])
        [materialization] = result.asset_materializations_for_node("drift_report")
        assert materialization.metadata["cameras"].value == 4
        assert (lake_root / f"drift/images/day={day}/stats.parquet").exists()

    assert (lake_root / "drift/drift.html").exists()
    png = lake_root / "drift/drift.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert materialization.metadata["chart"].value == str(png)

    # Re-deriving a day gives the same table, byte for byte in its values.
    again = _materialize(resources, "2026-03-04")
    assert again.success
    assert pq.read_table(lake_root / "drift/cameras/day=2026-03-04/drift.parquet").equals(tables["2026-03-04"])
