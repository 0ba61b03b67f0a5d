"""The prediction filter, the review queue as people work through it, a curator's review request, one image as a
reviewer sees it, the CSV of a selection and the choices a filter form offers."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

import catalog
from catalog import events as ev
from catalog.errors import CatalogError
from catalog.queries import (
    NOT_PREDICTED,
    ImageFilter,
    count_images,
    filter_choices,
    query_images,
    selection_csv,
)
from catalog.review_queue import (
    LabelSides,
    count_waiting_reviews,
    image_view,
    label_sides,
    request_review,
    review_queues,
    waiting_reviews,
)
from catalog.store import NewEvent

DAY = datetime(2026, 3, 2, tzinfo=UTC)
ENGINE_A, ENGINE_B = "a" * 64, "b" * 64


def sha(n: int) -> str:
    return f"{n:064x}"


def ingested(n: int, line: str = "A") -> NewEvent:
    at = DAY + timedelta(minutes=n)
    return NewEvent(ev.ImageIngested(
        sha256=sha(n), part_id=f"P-{n}", line=line, station="st-1", camera=f"cam-{n % 2}", captured_at=at, width=8,
        height=8, channels=1, bit_depth=8, byte_size=10, blob_uri=f"blob:{sha(n)}", source_path=f"{n}.png"), at)


def predicted(n: int, cls: str, engine: str, minutes: int, **extra) -> NewEvent:
    scores = {c: (0.7 if c == cls else 0.1) for c in ("ok", "scratch", "spot", "crack")}
    return NewEvent(ev.PredictionRecorded(sha256=sha(n), engine_id=engine, scores=scores, predicted_class=cls,
                                          **extra), DAY + timedelta(hours=1, minutes=minutes))


def labelled(n: int, label: str, **extra) -> NewEvent:
    return NewEvent(ev.LabelRecorded(sha256=sha(n), label_id=f"L{n}-{uuid.uuid4().hex[:6]}", label=label,
                                     annotator="ana", ontology_version=1, **extra), DAY + timedelta(hours=2))


def queued(n: int, score: float, queue: str = "active-learning") -> NewEvent:
    return NewEvent(ev.ReviewRequested(sha256=sha(n), queue=queue, strategy="uncertainty", score=score),
                    DAY + timedelta(hours=3), event_id=uuid.uuid4())


@pytest.fixture
def line(cat: catalog.Catalog) -> catalog.Catalog:
    """Eight images; 1-3 predicted by engine A, 2 later by engine B too; 1-4 labelled; 1, 2, 5, 6 queued."""
    cat.append([
        NewEvent(ev.OntologyPublished(version=1, classes=["ok", "scratch", "spot", "crack"]), DAY),
        *[ingested(n, "A" if n <= 6 else "B") for n in range(1, 9)],
        predicted(1, "scratch", ENGINE_A, 1,
                  regions=[ev.Region(shape="box", x0=1, y0=1, x1=4, y1=4)]),
        predicted(2, "ok", ENGINE_A, 2), predicted(3, "ok", ENGINE_A, 3),
        predicted(2, "crack", ENGINE_B, 9),  # the latest of image 2, whichever engine
        labelled(1, "scratch", regions=[ev.Region(shape="ellipse", cx=3, cy=3, rx=2, ry=1, angle=10)]),
        labelled(2, "ok"), labelled(3, "ok"), labelled(4, "spot"),
        queued(1, 0.2), queued(2, 0.9), queued(5, 0.5), queued(6, 0.7, queue="ontology-split"),
    ])
    return cat


def shas(rows) -> list[str]:
    return [r["sha256"] for r in rows]


def test_the_prediction_filter_reads_the_latest_prediction_of_any_engine(line: catalog.Catalog) -> None:
    def find(*classes: str, **kwargs) -> list[str]:
        where = ImageFilter(predictions=classes, **kwargs)
        rows = query_images(line, where, limit=None)
        assert count_images(line, where) == len(rows)
        return shas(rows)

    assert find("crack") == [sha(2)]
    assert find("ok") == [sha(3)]  # image 2 said ok first, then crack
    assert find("scratch", "ok") == [sha(1), sha(3)]
    assert find(NOT_PREDICTED) == [sha(n) for n in range(4, 9)]
    assert find(NOT_PREDICTED, "crack", lines=("A",)) == [sha(2), *(sha(n) for n in range(4, 7))]
    assert find("ok", labels=("ok",)) == [sha(3)]
    assert ImageFilter(predictions=("crack",)).describe() == {"predictions": ["crack"]}


def test_the_prediction_filter_as_of_a_past_position(line: catalog.Catalog) -> None:
    before_b = max(e.position for e in line.store.read() if e.type == "PredictionRecorded"
                   and e.payload["engine_id"] == ENGINE_A)
    rows = query_images(line, ImageFilter(predictions=("ok",)), as_of=before_b, limit=None)
    assert shas(rows) == [sha(2), sha(3)]  # engine B had not judged image 2 yet
    assert count_images(line, ImageFilter(predictions=(NOT_PREDICTED,)), as_of=before_b) == 5
    assert count_images(line, ImageFilter(predictions=("ok", NOT_PREDICTED)), as_of=before_b) == 7


def test_waiting_reviews_come_best_score_first_until_someone_decides(line: catalog.Catalog) -> None:
    assert shas(waiting_reviews(line)) == [sha(2), sha(6), sha(5), sha(1)]
    assert review_queues(line) == {"active-learning": 3, "ontology-split": 1}
    first = waiting_reviews(line, queue="active-learning", limit=1)[0]
    assert (first["sha256"], first["label"], first["line"], first["score"]) == (sha(2), "ok", "A", 0.9)

    line.append([labelled(2, "crack")])  # decided: it waits no more
    assert shas(waiting_reviews(line, queue="active-learning")) == [sha(5), sha(1)]
    assert count_waiting_reviews(line, queue="active-learning") == 2
    assert review_queues(line) == {"active-learning": 2, "ontology-split": 1}

    line.append([queued(2, 0.1)])  # asked again: waits again
    assert shas(waiting_reviews(line, queue="active-learning")) == [sha(5), sha(1), sha(2)]


def test_waiting_reviews_narrowed_by_any_image_filter(line: catalog.Catalog) -> None:
    assert shas(waiting_reviews(line, ImageFilter(labels=("unlabelled",)))) == [sha(6), sha(5)]
    assert shas(waiting_reviews(line, ImageFilter(predictions=("scratch",)))) == [sha(1)]
    assert count_waiting_reviews(line, ImageFilter(cameras=("cam-0",))) == 2
    assert waiting_reviews(line, limit=2, offset=1)[0]["sha256"] == sha(6)


def test_a_curator_requests_review_of_a_selection(line: catalog.Catalog) -> None:
    where = ImageFilter(lines=("B",))
    head = line.head()
    assert request_review(line, where, actor="curator:cleo", reason="new supplier") == (2, 2)
    events = line.store.read(after=head)
    assert [(e.payload["sha256"], e.payload["queue"], e.payload["strategy"], e.metadata["actor"]) for e in events] \
        == [(sha(7), "curator", "curator-selection", "curator:cleo"), (sha(8), "curator", "curator-selection",
                                                                       "curator:cleo")]
    assert shas(waiting_reviews(line, queue="curator")) == [sha(7), sha(8)]  # capture order kept
    assert request_review(line, where, actor="curator:cleo") == (2, 0)  # already waiting
    with pytest.raises(CatalogError, match="narrow the filters"):
        request_review(line, ImageFilter(), actor="curator:cleo", limit=3)
    assert line.head() == head + 2


def test_an_image_as_a_reviewer_sees_it(line: catalog.Catalog) -> None:
    one = image_view(line, sha(1))
    assert (one.image["part_id"], one.label["class"], one.label["held"], one.label["annotator"]) \
        == ("P-1", "scratch", "scratch", "ana")
    assert one.label["regions"][0]["shape"] == "ellipse"
    assert (one.prediction["predicted_class"], one.prediction["engine_id"]) == ("scratch", ENGINE_A)
    assert [(r["shape"], r["x0"], r["y1"]) for r in one.prediction["regions"]] == [("box", 1, 4)]
    assert isinstance(one.prediction["event_id"], uuid.UUID) and one.heatmap_uri is None
    assert image_view(line, sha(2)).prediction["engine_id"] == ENGINE_B
    unseen = image_view(line, sha(7))
    assert unseen.label is None and unseen.prediction is None
    with pytest.raises(CatalogError, match="no image"):
        image_view(line, sha(99))


def test_the_heatmap_comes_from_the_prediction_or_the_engines_model(line: catalog.Catalog) -> None:
    line.append([predicted(3, "spot", ENGINE_A, 20, heatmap_uri="blob:" + "c" * 64)])
    assert image_view(line, sha(3)).heatmap_uri == "blob:" + "c" * 64
    # Else the heatmaps asset's table for the model the engine runs.
    line.append([NewEvent(ev.EngineBuilt(
        engine_id=ENGINE_B, model="inspection-classifier", model_id="m-1", onnx_sha256="d" * 64,
        dataset_version_id="ds-1", manifest_hash="e" * 64, backend="onnxruntime", precision="fp32", device="cpu",
        library_versions={}, artifact_uri="blob:" + "f" * 64), DAY)])
    assert image_view(line, sha(2)).heatmap_uri is None
    line.lake.write_parquet("heatmaps/m-1/heatmaps.parquet", pa.table({
        "sha256": [sha(2), sha(2)], "model_id": ["m-1", "seg"], "kind": ["grad_cam", "mask"],
        "class": ["crack", "defect"], "uri": ["blob:" + "1" * 64, "blob:" + "2" * 64]}))
    assert image_view(line, sha(2)).heatmap_uri == "blob:" + "1" * 64


def test_the_selection_as_csv(line: catalog.Catalog) -> None:
    rows = list(csv.DictReader(io.StringIO(selection_csv(line, ImageFilter(lines=("A",))))))
    assert [r["sha256"] for r in rows] == [sha(n) for n in range(1, 7)]
    assert [(r["label"], r["predicted_class"]) for r in rows[:2]] == [("scratch", "scratch"), ("ok", "crack")]
    assert rows[1]["prediction_engine"] == ENGINE_B and rows[4]["predicted_class"] == ""


def test_filter_choices(line: catalog.Catalog) -> None:
    choices = filter_choices(line)
    assert (choices.lines, choices.stations, choices.cameras) == (["A", "B"], ["st-1"], ["cam-0", "cam-1"])
    assert choices.classes == ["ok", "scratch", "spot", "crack"]
    assert (choices.first_captured, choices.last_captured) == (DAY + timedelta(minutes=1), DAY + timedelta(minutes=8))


def fixed(n: int, old: str, new: str, hours: int, target: str = "label") -> NewEvent:
    correction = ev.CorrectionRecorded(sha256=sha(n), correction_id=f"C{n}-{hours}", target=target, old_label=old,
                                       new_label=new, corrected_by="dana", ontology_version=1)
    return NewEvent(correction, DAY + timedelta(hours=hours))


def test_label_sides_count_first_labels_and_the_corrections_that_crossed(line: catalog.Catalog) -> None:
    """Labelled: 1 scratch, 2 ok, 3 ok, 4 spot; 5 ok but excluded. A move within the defect side does not
    count as crossing; a correction of a prediction is not one of a label."""
    line.append([
        labelled(5, "ok"),
        NewEvent(ev.ImageExcluded(sha256=sha(5), reason="blurred"), DAY + timedelta(hours=4)),
        fixed(2, "ok", "crack", 5),
        fixed(4, "spot", "scratch", 5), fixed(4, "scratch", "ok", 6),  # first labelled a defect, now ok
        fixed(1, "scratch", "crack", 5),
        fixed(3, "scratch", "ok", 5, target="prediction"),
    ])
    line.catch_up()
    assert label_sides(line) == LabelSides(ok_labels=2, ok_moved=1, defect_labels=2, defect_moved=1)
