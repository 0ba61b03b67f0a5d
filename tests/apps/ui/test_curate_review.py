"""The pages that write: Curate's filters, gallery, paging and actions on the selection, and Review's decisions,
against the real catalog, each as a person logged in with the role that may (or may not) act. Exclusions and
corrections are signed with the person's password."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

import catalog
from apps.ui.roles import DATABASE_ROLE
from catalog.events import ImageIncluded
from catalog.store import NewEvent, PermissionDenied
from ingestion.labels import record_correction
from tests.apps.ui.conftest import PASSWORD

CURATE, REVIEW = "views/curate.py", "views/review.py"
PAGE_SIZE = 24


def sql(cat: catalog.Catalog, query: str, **params) -> list[tuple]:
    with cat.db.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(query, params).fetchall()]


def gallery(at) -> list[str]:
    """The images the gallery shows, in order (each has its Open button)."""
    return [b.key.removeprefix("open-") for b in at.button if b.key and b.key.startswith("open-")]


def selected(at) -> int:
    return int(at.metric[0].value.replace(",", ""))


def keys(at) -> set[str]:
    return {w.key for w in [*at.button, *at.text_input] if w.key}


def test_filters_narrow_the_gallery_to_what_the_database_holds(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    at = app("curator").switch_page(CURATE).run()
    assert not at.exception, at.exception
    assert selected(at) == sql(cat, "SELECT count(*) FROM projections.images")[0][0]
    assert len(gallery(at)) == PAGE_SIZE

    at.multiselect(key="curate-line").set_value(["line1"])
    at.multiselect(key="curate-camera").set_value(["cam2"]).run()
    expected = sql(cat, "SELECT sha256 FROM projections.images WHERE line = 'line1' AND camera = 'cam2'"
                        " ORDER BY captured_at, sha256")
    assert selected(at) == len(expected) and gallery(at) == [s for (s,) in expected][:PAGE_SIZE]

    # The model's prediction: the class of the image's latest prediction; the fixture's predicted only some.
    at.multiselect(key="curate-prediction").set_value(["not predicted"]).run()
    unpredicted = sql(cat, "SELECT count(*) FROM projections.images i WHERE line = 'line1' AND camera = 'cam2'"
                           " AND NOT EXISTS (SELECT 1 FROM projections.latest_predictions p"
                           " WHERE p.sha256 = i.sha256)")[0][0]
    assert 0 < selected(at) == unpredicted < len(expected)

    at.multiselect(key="curate-prediction").set_value([])
    at.multiselect(key="curate-label").set_value(["ok"])
    at.date_input(key="curate-days").set_value((date(2026, 3, 3), date(2026, 3, 4)))
    at.radio(key="curate-excluded").set_value("included").run()
    count = sql(cat, "SELECT count(*) FROM projections.images WHERE line = 'line1' AND camera = 'cam2'"
                     " AND label = 'ok' AND NOT excluded AND captured_at >= %(a)s AND captured_at < %(b)s",
                a=datetime(2026, 3, 3, tzinfo=UTC), b=datetime(2026, 3, 5, tzinfo=UTC))[0][0]
    assert 0 < selected(at) == count == len(gallery(at))


def test_paging_walks_the_selection_in_capture_order(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    every = [s for (s,) in sql(cat, "SELECT sha256 FROM projections.images ORDER BY captured_at, sha256")]
    at = app("analyst").switch_page(CURATE).run()
    assert gallery(at) == every[:PAGE_SIZE]
    at.number_input(key="curate-page").set_value(2).run()
    assert gallery(at) == every[PAGE_SIZE:2 * PAGE_SIZE]
    at.number_input(key="curate-page").set_value(-(-len(every) // PAGE_SIZE)).run()
    assert gallery(at) == every[-(len(every) % PAGE_SIZE or PAGE_SIZE):]
    # A new filter starts at its first page.
    at.multiselect(key="curate-line").set_value(["line2"]).run()
    assert at.number_input(key="curate-page").value == 1


def test_an_image_opens_full_size_with_its_regions(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    sha, part, label = sql(cat, "SELECT l.sha256, i.part_id, l.label FROM projections.current_labels l"
                                " JOIN projections.images i USING (sha256) WHERE l.regions::text <> '[]'"
                                " ORDER BY i.captured_at LIMIT 1")[0]
    at = app("auditor").switch_page(CURATE).run()
    at.multiselect(key="curate-label").set_value(["scratch", "spot", "crack"]).run()
    at.button(key=f"open-{sha}").click().run()
    assert not at.exception, at.exception
    assert any(f"Label: **{label}**" in m.value for m in at.markdown)
    assert [link.proto.label for link in at.get("page_link")] == [f"part {part}"]  # to its trace
    assert any("human's regions" in (c or "") for image in at.image for c in image.captions)
    at.button(key="curate-close").click().run()
    assert "curate-close" not in keys(at)


@pytest.mark.parametrize("role", ["analyst", "auditor"])
def test_readers_see_no_write_controls(app, role) -> None:
    curate = app(role).switch_page(CURATE).run()
    assert not keys(curate) & {"curate-exclude", "curate-include", "curate-reason", "curate-review"}
    assert [b.key for b in curate.download_button] == ["curate-export"]  # they may export
    review = app(role).switch_page(REVIEW).run()
    assert not review.exception, review.exception
    assert not [k for k in keys(review) if k == "review-confirm" or k.startswith("review-as-")]
    assert any("does not label" in c.value for c in review.caption)


def test_an_annotator_cannot_curate_and_a_curator_cannot_label(app) -> None:
    curate = app("annotator").switch_page(CURATE).run()
    assert not keys(curate) & {"curate-exclude", "curate-include", "curate-review"}
    review = app("curator").switch_page(REVIEW).run()
    assert "review-confirm" not in keys(review)


def test_a_curator_excludes_a_selection_with_a_reason(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    window = {"a": datetime(2026, 3, 4, tzinfo=UTC), "b": datetime(2026, 3, 5, tzinfo=UTC)}
    chosen = {s for (s,) in sql(cat, "SELECT sha256 FROM projections.images WHERE line = 'line2'"
                                     " AND captured_at >= %(a)s AND captured_at < %(b)s", **window)}
    at = app("curator").switch_page(CURATE).run()
    at.multiselect(key="curate-line").set_value(["line2"])
    at.date_input(key="curate-days").set_value((date(2026, 3, 4), date(2026, 3, 4))).run()
    assert selected(at) == len(chosen) > 0

    head = cat.head()
    at.text_input(key="curate-password").input(PASSWORD)
    at.button(key="curate-exclude").click().run()  # no reason: refused, nothing written
    assert "reason" in at.error[0].value and cat.head() == head
    assert at.text_input(key="curate-password").value == ""  # the password is never kept

    at.text_input(key="curate-reason").input("lamp failed on line2")
    at.button(key="curate-exclude").click().run()  # not signed: refused, nothing written
    assert "enter your password to sign" in at.error[0].value and cat.head() == head

    at.text_input(key="curate-password").input(PASSWORD)
    at.button(key="curate-exclude").click().run()
    assert not at.exception, at.exception
    assert f"Excluded {len(chosen)} of {len(chosen)}" in at.success[0].value
    events = [e for e in cat.store.read(after=head) if e.type == "ImageExcluded"]
    assert {e.payload["sha256"] for e in events} == chosen
    assert {(e.metadata["actor"], e.payload["reason"]) for e in events} == {("user:cora", "lamp failed on line2")}
    assert {(e.metadata["signer"], e.metadata["meaning"]) for e in events} == {("cora", "approved")}
    assert sql(cat, "SELECT count(*) FROM projections.images WHERE excluded")[0][0] == len(chosen)

    at.radio(key="curate-excluded").set_value("excluded").run()
    assert set(gallery(at)) == chosen
    assert all("EXCLUDED" in c for image in at.image for c in image.captions)


def test_a_curator_sends_a_selection_to_review(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    at = app("curator").switch_page(CURATE).run()
    at.text_input(key="curate-parts").input("line1-20260302-0001 line1-20260302-0002").run()
    chosen = {s for (s,) in sql(cat, "SELECT sha256 FROM projections.images WHERE part_id = ANY(%(p)s)",
                                p=["line1-20260302-0001", "line1-20260302-0002"])}
    assert selected(at) == len(chosen) > 0
    head = cat.head()
    at.text_input(key="curate-review-reason").input("odd reflections")
    at.button(key="curate-review").click().run()
    assert not at.exception, at.exception
    events = cat.store.read(after=head)
    assert {e.type for e in events} == {"ReviewRequested"}
    assert {e.payload["sha256"] for e in events} == chosen
    assert {(e.payload["queue"], e.payload["strategy"], e.payload["reason"], e.metadata["actor"]) for e in events} \
        == {("curator", "curator-selection", "odd reflections", "user:cora")}

    at.button(key="curate-review").click().run()  # already waiting: not queued twice
    assert cat.head() == head + len(chosen)
    review = app("annotator").switch_page(REVIEW).run()
    review.selectbox(key="review-queue").set_value("curator").run()
    assert selected(review) == len(chosen)


def test_an_annotator_corrects_from_review_and_the_next_image_comes(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    first = sql(cat, "SELECT q.sha256, l.label FROM projections.review_queue q JOIN projections.current_labels l"
                     " USING (sha256) ORDER BY q.score DESC LIMIT 1")[0]
    sha, label = first
    new_label = next(c for c in ("crack", "spot") if c != label)
    at = app("annotator").switch_page(REVIEW).run()
    assert not at.exception, at.exception
    assert selected(at) == 6
    assert at.button(key="review-confirm").label == f"Confirm {label}"

    head = cat.head()
    at.text_input(key="review-password").input(PASSWORD)
    at.button(key=f"review-as-{new_label}").click().run()
    assert not at.exception, at.exception
    [event] = cat.store.read(after=head)
    assert event.type == "CorrectionRecorded" and event.metadata["actor"] == "user:anna"
    assert (event.metadata["signer"], event.metadata["meaning"]) == ("anna", "reviewed")
    assert (event.payload["sha256"], event.payload["old_label"], event.payload["new_label"],
            event.payload["corrected_by"]) == (sha, label, new_label, "anna")
    assert sql(cat, "SELECT label, annotator FROM projections.current_labels WHERE sha256 = %(s)s", s=sha) \
        == [(new_label, "anna")]
    assert selected(at) == 5  # decided: it waits no more, and the next image is shown
    assert f"Corrected {label} → {new_label}" in at.success[0].value

    # Confirming keeps the class (and the regions the label had), as a label by the reviewer.
    second = sql(cat, "SELECT q.sha256, l.label, l.regions FROM projections.review_queue q"
                      " JOIN projections.current_labels l USING (sha256) ORDER BY q.score DESC OFFSET 1 LIMIT 1")[0]
    head = cat.head()
    at.button(key="review-confirm").click().run()
    [event] = cat.store.read(after=head)  # a confirmation changes nothing a person said: not signed
    assert event.type == "LabelRecorded" and event.metadata["actor"] == "user:anna"
    assert "signer" not in event.metadata
    assert (event.payload["sha256"], event.payload["label"]) == second[:2]
    assert sql(cat, "SELECT label, regions FROM projections.current_labels WHERE sha256 = %(s)s", s=second[0]) \
        == [second[1:]]
    assert selected(at) == 4


def test_skipping_shows_the_next_image_and_comes_back(app) -> None:
    at = app("annotator").switch_page(REVIEW).run()
    shown = at.markdown[0].value
    at.button(key="review-skip").click().run()
    assert at.markdown[0].value != shown
    at.button(key="review-restart").click().run()
    assert at.markdown[0].value == shown


@pytest.mark.parametrize("role", ["analyst", "auditor"])
def test_the_database_refuses_the_readers_appends(ui_catalog, role) -> None:
    """What the page hides, the database refuses: the catalog the app opens for a reader cannot append
    (the roles themselves are tested in tests/catalog/test_immutability.py)."""
    _, database, _ = ui_catalog
    settings = catalog.Settings.from_env(database.env())
    with catalog.open(settings, role=DATABASE_ROLE[role]) as reader:
        assert reader.head() > 0  # it reads
        with pytest.raises(PermissionDenied):
            reader.append([NewEvent(ImageIncluded(sha256="a" * 64, reason="sneaky"), datetime.now(UTC))])


def test_a_decision_on_a_label_changed_meanwhile_is_not_recorded(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    sha, label = sql(cat, "SELECT q.sha256, l.label FROM projections.review_queue q JOIN projections.current_labels l"
                          " USING (sha256) ORDER BY q.score DESC LIMIT 1")[0]
    at = app("annotator").switch_page(REVIEW).run()
    other = next(c for c in ("crack", "spot") if c != label)
    record_correction(cat, sha256=sha, new_label=other, corrected_by="ben", actor="user:ben")
    head = cat.head()
    at.button(key="review-confirm").click().run()
    assert cat.head() == head
    assert f"changed the label of {sha[:12]} to {other}" in at.warning[0].value


def test_a_wrong_signing_password_records_nothing_but_the_failure(app, ui_catalog) -> None:
    cat, _, _ = ui_catalog
    sha, label = sql(cat, "SELECT q.sha256, l.label FROM projections.review_queue q JOIN projections.current_labels l"
                          " USING (sha256) ORDER BY q.score DESC LIMIT 1")[0]
    at = app("annotator").switch_page(REVIEW).run()
    head = cat.head()
    at.text_input(key="review-password").input("not the password at all")
    at.button(key=f"review-as-{next(c for c in ('crack', 'spot') if c != label)}").click().run()
    assert not at.exception, at.exception
    assert "wrong user name or password" in at.error[0].value
    [failure] = cat.store.read(after=head)
    assert (failure.type, failure.payload["username"], failure.payload["reason"]) \
        == ("UserLoginFailed", "anna", "wrong_password")
    assert sql(cat, "SELECT label FROM projections.current_labels WHERE sha256 = %(s)s", s=sha) == [(label,)]
    assert selected(at) == 6  # still waiting

    curate = app("curator").switch_page(CURATE).run()
    curate.text_input(key="curate-parts").input("line1-20260302-0001").run()
    head = cat.head()
    curate.text_input(key="curate-reason").input("lamp failed on line1")
    curate.text_input(key="curate-password").input("not the password at all")
    curate.button(key="curate-exclude").click().run()
    assert "Nothing excluded: wrong user name or password" in curate.error[0].value
    assert [e.type for e in cat.store.read(after=head)] == ["UserLoginFailed"]
