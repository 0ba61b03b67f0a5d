"""The Day page's drift alerts on the line-run catalog: the real drift report of a day where line1's lamp has
dimmed and line2/st1/cam1 has its first stuck pixels names those cameras, and a curator's click excludes a
camera-day's images from training (signed with the curator's password) or queues them for review, as events
with the curator as actor; readers see the alerts and no button."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from catalog.drift import cameras_path, out_of_band
from learning.drift import DriftConfig, drift_for_day
from tests.apps.ui.conftest import PASSWORD

DAY_PAGE = "views/day.py"
DAY = date(2026, 3, 4)  # simulator day 2: line1's lamp 6 % down, 12 stuck pixels on line2/st1/cam1
ALERTED = {"line1/st1/cam1", "line1/st1/cam2", "line2/st1/cam1"}


def report_drift(cat, day: date) -> set[str]:
    """The day's drift table in the lake, as the drift_report asset writes it; the cameras out of band."""
    _, drift = drift_for_day(cat, cat.lake, day, DriftConfig())
    cat.lake.write_parquet(cameras_path(day), drift)
    return {f"{r['line']}/{r['station']}/{r['camera']}" for r in out_of_band(drift)}


def camera_day_images(cat, name: str, day: date) -> set[str]:
    line, station, camera = name.split("/")
    start = datetime.combine(day, datetime.min.time(), UTC)
    with cat.db.connect() as conn:
        return {r[0] for r in conn.exec_driver_sql(
            "SELECT sha256 FROM projections.images WHERE line = %(l)s AND station = %(s)s AND camera = %(c)s"
            " AND captured_at >= %(a)s AND captured_at < %(b)s",
            {"l": line, "s": station, "c": camera, "a": start, "b": start + timedelta(days=1)})}


def open_day(app, role: str, day: date):
    at = app(role)
    at.query_params["day"] = day.isoformat()
    at.switch_page(DAY_PAGE).run()
    assert not at.exception, at.exception
    return at


def click_for_events(at, cat, key: str, kind: str, images: set[str]) -> list:
    """Click the button ``key``; the events the click appended, checked to be one ``kind`` per image of
    ``images``."""
    head = cat.head()
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    events = cat.store.read(after=head)
    assert {e.type for e in events} == {kind} and {e.payload["sha256"] for e in events} == images
    return events


def alert_buttons(at, action: str) -> set[str]:
    return {b.key.removeprefix(f"drift-{action}-") for b in at.button if b.key and b.key.startswith(f"drift-{action}-")}


def test_a_curator_excludes_a_drifting_camera_day_from_training(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    assert report_drift(cat, DAY) == ALERTED
    at = open_day(app, "curator", DAY)
    assert alert_buttons(at, "exclude") == alert_buttons(at, "review") == ALERTED
    assert any(m.value.startswith("**line2/st1/cam1**: 12 stuck pixels") for m in at.markdown)
    assert any(m.value.startswith("**line1/st1/cam1**: brightness") and "every camera of its line" in m.value
               for m in at.markdown)

    chosen = camera_day_images(cat, "line2/st1/cam1", DAY)
    at.text_input(key="day-password").input(PASSWORD)
    events = click_for_events(at, cat, "drift-exclude-line2/st1/cam1", "ImageExcluded", chosen)
    assert {(e.metadata["actor"], e.metadata["signer"], e.metadata["meaning"]) for e in events} \
        == {("user:cora", "cora", "approved")}
    [reason] = {e.payload["reason"] for e in events}
    assert reason.startswith(f"drift alert on {DAY}, line2/st1/cam1: 12 stuck pixels")
    assert f"Excluded {len(chosen)} of the {len(chosen)} images of line2/st1/cam1" in at.success[0].value
    with cat.db.connect() as conn:
        excluded = {r[0] for r in conn.exec_driver_sql("SELECT sha256 FROM projections.images WHERE excluded")}
    assert excluded == chosen
    # Nothing left to exclude: the alert stays, its button is spent; the other cameras' are not.
    assert at.button(key="drift-exclude-line2/st1/cam1").disabled
    assert not at.button(key="drift-exclude-line1/st1/cam1").disabled


def test_a_curator_queues_a_drifting_camera_day_for_review(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    report_drift(cat, DAY)
    at = open_day(app, "curator", DAY)
    chosen = camera_day_images(cat, "line1/st1/cam2", DAY)
    events = click_for_events(at, cat, "drift-review-line1/st1/cam2", "ReviewRequested", chosen)
    assert {(e.payload["queue"], e.payload["strategy"], e.metadata["actor"]) for e in events} \
        == {("curator", "drift-alert", "user:cora")}
    assert all(e.payload["reason"].startswith(f"drift alert on {DAY}, line1/st1/cam2: ") for e in events)
    assert at.button(key="drift-review-line1/st1/cam2").disabled  # all waiting: not queued twice

    review = app("annotator").switch_page("views/review.py").run()
    review.selectbox(key="review-queue").set_value("curator").run()
    assert int(review.metric[0].value.replace(",", "")) == len(chosen)


@pytest.mark.parametrize("role", ["analyst", "annotator"])
def test_others_see_the_alerts_and_no_curation(app, ui_catalog, role) -> None:
    cat, _, _ = ui_catalog
    report_drift(cat, DAY)
    at = open_day(app, role, DAY)
    assert not alert_buttons(at, "exclude") and not alert_buttons(at, "review")
    assert {m.value.split("**")[1] for m in at.markdown if m.value.startswith("**line")} == ALERTED
    assert any("A curator can exclude" in c.value for c in at.caption)


def test_a_day_within_its_bands_raises_no_alert(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    first = date(2026, 3, 2)  # the reference day itself
    assert report_drift(cat, first) == set()
    at = open_day(app, "curator", first)
    assert not alert_buttons(at, "exclude")
    assert not [h for h in at.subheader if h.value == "Drift alerts"]
