"""A simulated factory's deliveries taken into the catalog in the order a real site sends them: the
ontology, the images (bad files quarantined), the labels, then the corrections. Used by tests and benchmarks
that need a catalog with real pixels behind it (the demo delivers day by day itself, in the same order)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from catalog import Catalog
from ingestion.ingest import IngestReport, ingest
from ingestion.labels import ImportReport, import_corrections, import_labels
from ingestion.ontology_publish import PublishReport, publish_ontology

Progress = Callable[[int, int], None]
ProgressFactory = Callable[[str], AbstractContextManager[Progress | None]]


@dataclass(frozen=True)
class FactoryDelivery:
    ontology: PublishReport
    images: IngestReport
    labels: ImportReport
    corrections: ImportReport


def no_progress(description: str) -> AbstractContextManager[None]:
    return nullcontext()


def deliver_factory(cat: Catalog, folder: Path, *, actor: str, progress: ProgressFactory = no_progress,
                    workers: int | None = None) -> FactoryDelivery:
    """Take everything ``simulate_factory`` wrote in ``folder`` into ``cat``. Idempotent: a second call
    records nothing new."""
    folder = Path(folder)
    ontology = publish_ontology(cat, folder / "ontology.yaml", actor=actor)
    with progress("ingesting images") as update:
        images = ingest(cat, folder / "manifest.csv", actor=actor, progress=update, workers=workers)
    with progress("importing labels") as update:
        labels = import_labels(cat, folder / "labels.csv", actor=actor, progress=update)
    with progress("importing corrections") as update:
        corrections = import_corrections(cat, folder / "corrections.csv", actor=actor, progress=update)
    return FactoryDelivery(ontology, images, labels, corrections)
