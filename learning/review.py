"""What humans should look at next: the classifier's scores and embeddings of every curated image (LanceDB,
one table per model, with a near-duplicate report), and the active-learning queue built from them."""

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from catalog import Catalog
from catalog.datasets import load_manifest
from catalog.embeddings import EmbeddingStore
from catalog.events import ReviewRequested
from catalog.ontology import OK_CLASS
from catalog.queries import curated_images
from catalog.review_queue import label_sides
from catalog.store import NewEvent, event_id_for
from learning.registry import CLASSIFIER, dataset_version, load_checkpoint, load_image, model_row
from models import active_learning
from models.classifier import classify

STRATEGIES = ("wrong_labels", "disagreement", "uncertainty", "diversity", "rare_classes")
# A wrong label misleads every model trained on it and every evaluation that counts it, so finding one is
# worth more than one more label near the boundary: by default the label audit takes half the batch.
DEFAULT_WEIGHTS = {"wrong_labels": 4.0, "disagreement": 1.0, "uncertainty": 1.0, "diversity": 1.0,
                   "rare_classes": 1.0}
CHUNK = 64  # images decoded and classified at a time: memory stays flat whatever the catalog's size


def scores_uri(model_id: str) -> str:
    return f"predictions/{model_id}/scores.parquet"


def embed_catalog(cat: Catalog, store: EmbeddingStore, model_id: str | None, *, near_duplicate_distance: float,
                  log) -> dict:
    """Classify every curated image with the model: its scores into the lake, its embedding into LanceDB."""
    row = model_row(cat, CLASSIFIER, model_id)
    model = load_checkpoint(cat, row.artifact_uri).model
    version = dataset_version(cat, row.dataset_version_id)
    split_of = dict(zip(*load_manifest(cat.lake, version.manifest_uri).select(["sha256", "split"]).to_pydict().values(),
                        strict=True))
    images = curated_images(cat)
    shas = images["sha256"].to_pylist()
    probabilities, embeddings = [], []
    for start in range(0, len(shas), CHUNK):
        result = classify(model, [load_image(cat, sha) for sha in shas[start:start + CHUNK]])
        probabilities.append(result.probabilities)
        embeddings.append(result.embeddings)
        log(f"classified {min(start + CHUNK, len(shas)):,} / {len(shas):,} images")
    probs = np.concatenate(probabilities) if probabilities else np.zeros((0, len(model.classes)), np.float32)
    vectors = np.concatenate(embeddings) if embeddings else np.zeros((0, model.embedding_size), np.float32)
    scores = pa.table({"sha256": shas, "predicted": [model.classes[i] for i in probs.argmax(axis=1)]}
                      | {f"p_{c}": pa.array(probs[:, i], pa.float32()) for i, c in enumerate(model.classes)})
    cat.lake.write_parquet(scores_uri(row.model_id), scores)
    rows = images.drop_columns(["corrected"]).append_column(
        "split", pa.array([split_of.get(s) for s in shas], pa.string())).append_column(
        "vector", pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1]))
    written = store.write(row.model_id, rows) if len(shas) else 0
    indexed = store.ensure_index(row.model_id) if written else False
    duplicates = store.near_duplicates(row.model_id, max_distance=near_duplicate_distance) if written else None
    report = f"embeddings/{row.model_id}/near_duplicates.parquet"
    if duplicates is not None:
        cat.lake.write_parquet(report, duplicates)
    return {"model_id": row.model_id, "images": len(shas), "indexed": indexed,
            "near_duplicates": 0 if duplicates is None else duplicates.num_rows,
            "near_duplicates_other_part": 0 if duplicates is None else
            int(sum(1 for same in duplicates["same_part"].to_pylist() if not same)),
            "scores": str(cat.lake.root / scores_uri(row.model_id)), "report": str(cat.lake.root / report)}


class EmbeddingConfig(BaseModel):
    """The model (default: the latest classifier) and the cosine distance under which two images count as
    near-duplicates (the same part photographed twice, or a re-delivered file)."""

    model_id: str | None = None
    near_duplicate_distance: float = 0.001


def build_review_queue(cat: Catalog, store: EmbeddingStore, model_id: str | None, *, budget: int,
                       strategies: list[str], queue: str, weights: dict[str, float] | None = None
                       ) -> list[active_learning.Candidate]:
    """Rank the curated images by each strategy, merge them into one batch of ``budget`` (shares by
    ``weights``, equal when None) and append a ``ReviewRequested`` for each (idempotent per queue, model and
    image)."""
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    row = model_row(cat, CLASSIFIER, model_id)
    images = curated_images(cat)
    scores = pq.read_table(cat.lake.root / scores_uri(row.model_id))
    if scores["sha256"].to_pylist() != images["sha256"].to_pylist():
        raise ValueError(f"the catalog changed since {row.model_id} scored it: materialize `embeddings` again")
    classes = [c.removeprefix("p_") for c in scores.column_names if c.startswith("p_")]
    probs = np.column_stack([scores[f"p_{c}"].to_numpy() for c in classes]).astype(np.float64)
    shas, labels = images["sha256"].to_pylist(), images["label"].to_pylist()
    corrected = images["corrected"].to_numpy(zero_copy_only=False)
    unlabelled = any(label is None for label in labels)
    ranked: dict[str, list[active_learning.Candidate]] = {}
    for name in strategies:
        if name == "wrong_labels":
            sides = label_sides(cat)
            rates = active_learning.LabelErrorRates.from_counts(
                ok_labels=sides.ok_labels, ok_moved=sides.ok_moved, defect_labels=sides.defect_labels,
                defect_moved=sides.defect_moved)
            ranked[name] = active_learning.wrong_labels(shas, probs, classes, labels, corrected, rates,
                                                        ok_class=OK_CLASS, limit=budget)
        elif name == "uncertainty":  # unlabelled images first; when all are labelled, a second look at the unsure
            ranked[name] = active_learning.uncertainty(shas, probs, classes, labels=labels if unlabelled else None,
                                                       limit=budget)
        elif name == "disagreement":
            ranked[name] = active_learning.disagreement(shas, probs, classes, labels, corrected, limit=budget)
        elif name == "rare_classes":
            ranked[name] = active_learning.rare_classes(shas, probs, classes, limit=budget)
        elif name == "diversity":
            stored, vectors = store.vectors(row.model_id)
            position = {s: i for i, s in enumerate(stored)}
            order = [position[s] for s in shas]
            labelled = [s for s, label in zip(shas, labels, strict=True) if label is not None] if unlabelled else []
            ranked[name] = active_learning.diversity(shas, vectors[order], budget=budget, already_selected=labelled)
    shares = {name: weight for name, weight in weights.items() if name in ranked} if weights else None
    batch = active_learning.combine(ranked, budget, weights=shares)
    now = datetime.now(UTC)
    cat.append([NewEvent(
        ReviewRequested(sha256=c.sha256, queue=queue, strategy=c.strategy, score=float(c.score),
                        reason=f"{c.reason} (model {row.model_id})"),
        now, event_id=event_id_for("review", queue, row.model_id, c.sha256),
        metadata={"actor": "dagster", "source": "learning.review"}) for c in batch])
    return batch


class ReviewQueueConfig(BaseModel):
    """How many images to queue, by which strategies (their turns in this order), into which queue."""

    model_id: str | None = None
    budget: int = 50
    strategies: list[str] = list(STRATEGIES)
    weights: dict[str, float] = DEFAULT_WEIGHTS  # share of the batch by strategy, one for each of `strategies`
    queue: str = "active-learning"
