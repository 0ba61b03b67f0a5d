"""The Overview, Day and Lineage pages on the line-run catalog: the figures they show are those counted here
in the catalog, the slider and the day picker move them, and the lineage graph names the fixture's dataset
version, model and engine."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs

import pyarrow as pa

from catalog.drift import DRIFT_SCHEMA, STATISTICS, cameras_path
from catalog.factory_day import set_time_zone
from ingestion.labels import record_correction

# Every figure below is counted from the read models with SQL of the test's own, not through catalog.activity.
DISAGREEING = """
    SELECT count(*) FROM projections.images i
    JOIN (SELECT DISTINCT ON (sha256) sha256, predicted_class FROM projections.latest_predictions
          ORDER BY sha256, predicted_at DESC, position DESC) p USING (sha256)
    WHERE i.label IS NOT NULL AND p.predicted_class <> i.label
      AND i.captured_at >= %(start)s AND i.captured_at < %(end)s"""


def scalar(cat, sql: str, **params) -> int:
    with cat.db.connect() as conn:
        return conn.exec_driver_sql(sql, params).scalar()


def counted(cat, first: date, last: date) -> dict[str, str]:
    """The metrics a page should show for the UTC days ``first``..``last``, as the page formats them."""
    start, end = datetime.combine(first, datetime.min.time(), UTC), datetime.combine(last, datetime.min.time(), UTC)
    window = {"start": start, "end": end + timedelta(days=1)}
    in_window = "captured_at >= %(start)s AND captured_at < %(end)s"
    figures = {
        "images": scalar(cat, f"SELECT count(*) FROM projections.images WHERE {in_window}", **window),
        "parts": scalar(cat, "SELECT count(*) FROM (SELECT DISTINCT part_id, (captured_at AT TIME ZONE 'UTC')::date"
                             f" FROM projections.images WHERE {in_window}) d", **window),
        "rejected parts": scalar(cat, "SELECT count(*) FROM projections.part_dispositions WHERE decision = 'reject'"
                                      " AND decided_at >= %(start)s AND decided_at < %(end)s", **window),
        "disagreements": scalar(cat, DISAGREEING, **window),
        "corrections": scalar(cat, "SELECT count(*) FROM projections.corrections"
                                   " WHERE corrected_at >= %(start)s AND corrected_at < %(end)s", **window),
    }
    return {label: f"{value:,}" for label, value in figures.items()}


def days_with_images(cat) -> list[date]:
    with cat.db.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql(
            "SELECT DISTINCT (captured_at AT TIME ZONE 'UTC')::date FROM projections.images ORDER BY 1")]


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def page_links(at) -> list[tuple[str, str, dict]]:
    return [(link.proto.page, link.proto.label, parse_qs(link.proto.query_string)) for link in at.get("page_link")]


def write_drift_report(cat, day: date, *, out_of_band: int) -> None:
    """A drift table for ``day`` as the drift_report asset writes it: two cameras, every statistic in its
    band but the first ``out_of_band`` rows."""
    rows = []
    for camera in ("cam1", "cam2"):
        for statistic in STATISTICS:
            inside = len(rows) >= out_of_band
            rows.append({"day": day, "line": "line1", "station": "st1", "camera": camera, "images": 5,
                         "statistic": statistic, "value": 100.0 if inside else 140.0, "reference": 100.0,
                         "low": 90.0, "high": 110.0, "in_band": inside, "reference_days": "2026-03-02",
                         "reference_images": 5})
    cat.lake.write_parquet(cameras_path(day), pa.Table.from_pylist(rows, schema=DRIFT_SCHEMA))


def test_overview_shows_the_last_week_as_the_catalog_counts_it(app, ui_catalog) -> None:
    cat, _, engine_id = ui_catalog
    last = days_with_images(cat)[-1]
    at = app("analyst").switch_page("views/overview.py").run()
    assert not at.exception, at.exception

    expected = counted(cat, last - timedelta(days=6), last)
    assert metrics(at) == {label: expected[label] for label in ("images", "parts", "rejected parts",
                                                                "disagreements")} | {
        "drift alerts": "no drift report yet"}
    assert int(expected["rejected parts"]) > 0 and int(expected["disagreements"]) > 0
    assert any(engine_id[:16] in md.value and "Engine in service" in md.value for md in at.markdown)

    # the latest rejects, each a link to its trace
    with cat.db.connect() as conn:
        latest = [r[0] for r in conn.exec_driver_sql(
            "SELECT part_id FROM projections.part_dispositions WHERE decision = 'reject'"
            " ORDER BY decided_at DESC, part_id LIMIT 10")]
    links = [(page, query["part"][0]) for page, _, query in page_links(at) if "part" in query]
    assert links == [("trace", part) for part in latest]  # the page's url path, and its ?part=

    at.slider[0].set_value(1).run()  # the last day alone
    assert not at.exception, at.exception
    assert metrics(at)["images"] == counted(cat, last, last)["images"] != expected["images"]


def test_overview_counts_drift_alerts_of_the_window(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    days = days_with_images(cat)
    write_drift_report(cat, days[-1], out_of_band=2)
    write_drift_report(cat, days[0], out_of_band=1)
    at = app("analyst").switch_page("views/overview.py").run()
    assert not at.exception, at.exception
    assert metrics(at)["drift alerts"] == "3"
    alerts = at.dataframe[0].value
    assert sorted(alerts["day"]) == [days[0], days[-1], days[-1]] and set(alerts["statistic"]) <= set(STATISTICS)

    at.slider[0].set_value(1).run()
    assert metrics(at)["drift alerts"] == "2"


def test_day_shows_the_last_day_then_the_day_picked(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    days = days_with_images(cat)
    at = app("analyst").switch_page("views/day.py").run()
    assert not at.exception, at.exception
    assert at.date_input[0].value == days[-1]
    assert metrics(at) == counted(cat, days[-1], days[-1])

    # every reject of the day is listed, each with a link to its trace
    rejects = at.dataframe[0].value
    with cat.db.connect() as conn:
        rejected = {r[0] for r in conn.exec_driver_sql(
            "SELECT part_id FROM projections.part_dispositions WHERE decision = 'reject'"
            " AND (decided_at AT TIME ZONE 'UTC')::date = %(d)s", {"d": days[-1]})}
    assert set(rejects["part_id"]) == rejected and len(rejects) == int(metrics(at)["rejected parts"])
    assert list(rejects["trace"]) == [f"trace?part={p}" for p in rejects["part_id"]]
    assert "no drift report" in " ".join(i.value for i in at.info)

    at.date_input[0].set_value(days[0]).run()
    assert not at.exception, at.exception
    assert metrics(at) == counted(cat, days[0], days[0]) != counted(cat, days[-1], days[-1])
    assert all(p.split("-")[1] == f"{days[0]:%Y%m%d}" for p in at.dataframe[0].value["part_id"])


def test_day_lists_a_correction_made_that_day_and_its_drift(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    day = days_with_images(cat)[1]
    with cat.db.connect() as conn:
        sha, part, label = conn.exec_driver_sql(
            "SELECT sha256, part_id, label FROM projections.images WHERE label IS NOT NULL"
            " AND (captured_at AT TIME ZONE 'UTC')::date = %(d)s ORDER BY captured_at LIMIT 1", {"d": day}).fetchone()
    new = "crack" if label != "crack" else "ok"
    record_correction(cat, sha256=sha, new_label=new, corrected_by="tester", reason="a second look",
                      occurred_at=datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=23))
    write_drift_report(cat, day, out_of_band=1)

    at = app("analyst")
    at.query_params["day"] = day.isoformat()
    at.switch_page("views/day.py").run()
    assert not at.exception, at.exception
    assert at.date_input[0].value == day
    assert metrics(at) == counted(cat, day, day)
    corrections = next(d.value for d in at.dataframe if "new_label" in d.value.columns)
    row = corrections[corrections["corrected_by"] == "tester"].iloc[0]
    assert (row["part_id"], row["old_label"], row["new_label"], row["trace"]) == (part, label, new,
                                                                                  f"trace?part={part}")
    drift = next(d.value for d in at.dataframe if "statistic" in d.value.columns)
    assert len(drift) == 2 * len(STATISTICS) and list(drift["state"]).count("out of band") == 1
    assert any("1 statistic(s) out of band" in m.value for m in at.markdown)


def test_day_lists_the_lineage_recorded_that_day(app, ui_catalog) -> None:
    cat, _, engine_id = ui_catalog
    with cat.db.connect() as conn:
        built = conn.exec_driver_sql("SELECT built_at FROM projections.engines WHERE engine_id = %(e)s",
                                     {"e": engine_id}).scalar()
    at = app("analyst").switch_page("views/day.py").run()
    at.date_input[0].set_value(built.astimezone(UTC).date()).run()
    assert not at.exception, at.exception
    records = at.dataframe[-1].value
    assert {"dataset version", "model", "engine"} <= set(records["kind"])
    assert engine_id in set(records["id"])


def test_lineage_graph_names_the_dataset_version_model_and_engine(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    # The newest engine: the promoted model's, rebuilt by the gate with the operating threshold its
    # evaluation chose (a new operating point is a new engine id).
    with cat.db.connect() as conn:
        engine_id, model_id, version_id = conn.exec_driver_sql(
            "SELECT engine_id, model_id, dataset_version_id FROM projections.engines ORDER BY position DESC"
            " LIMIT 1").fetchone()
    at = app("auditor").switch_page("views/lineage.py").run()
    assert not at.exception, at.exception
    dot = at.get("graphviz_chart")[0].proto.spec
    assert all(ident in dot for ident in (version_id, model_id, engine_id))
    assert f'"dataset:{version_id}" -> "model:{model_id}"' in dot and f'"model:{model_id}" -> "engine:{engine_id}"' in dot
    chains = at.dataframe[0].value
    assert (chains["version_id"][0], chains["model_id"][0], chains["engine_id"][0]) == (version_id, model_id, engine_id)


def test_day_says_so_on_a_quiet_day_and_on_a_bad_date(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    at = app("analyst")
    at.query_params["day"] = "2020-01-01"
    at.switch_page("views/day.py").run()
    assert not at.exception, at.exception
    assert set(metrics(at).values()) == {"0"}
    assert any("Nothing captured or decided on 2020-01-01" in m.value for m in at.markdown)

    at = app("analyst")
    at.query_params["day"] = "yesterday"
    at.switch_page("views/day.py").run()
    assert "is not a date" in at.warning[0].value and at.date_input[0].value == days_with_images(cat)[-1]


def test_day_counts_the_lines_own_day_and_shows_its_local_time(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    day = days_with_images(cat)[1]
    with cat.db.connect() as conn:
        sha, line = conn.exec_driver_sql(
            "SELECT sha256, line FROM projections.images WHERE label IS NOT NULL"
            " AND (captured_at AT TIME ZONE 'UTC')::date = %(d)s ORDER BY captured_at LIMIT 1", {"d": day}).fetchone()
    # 23:30 UTC is 08:30 the next morning in Tokyo: the correction belongs to that factory day, shown in JST.
    record_correction(cat, sha256=sha, new_label="crack", corrected_by="tester", reason="a second look",
                      occurred_at=datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=23, minutes=30))
    set_time_zone(cat, line, "Asia/Tokyo", actor="tester")

    at = app("analyst")
    at.query_params["day"] = (day + timedelta(days=1)).isoformat()
    at.switch_page("views/day.py").run()
    assert not at.exception, at.exception
    corrections = next(d.value for d in at.dataframe if "new_label" in d.value.columns)
    row = corrections[corrections["corrected_by"] == "tester"].iloc[0]
    assert row["corrected_at"] == f"{day + timedelta(days=1)} 08:30:00+09:00"
