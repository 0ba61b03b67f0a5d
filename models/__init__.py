"""Torch models for visual inspection: the defect classifier and U-Net, their training loops, ONNX export,
checkpoints and evaluation arithmetic. Pure functions over numpy arrays and callables; no catalog, no Dagster.

Typical use (the learn loop in `learning` does the same with a manifest read from the lake)::

    samples = SampleSet.from_manifest(manifest, load_image, load_mask)
    result = train_classifier(samples.split("train"), ClassifierParams(), validation=samples.split("validation"))
    sha = save_model("classifier.vlmodel", result.model, result.params)
    export_classifier(result.model, "classifier.onnx", input_size=(512, 512), metadata={"model_sha256": sha})
"""

from models.checkpoint import Checkpoint, load_model, model_bytes, save_model
from models.classifier import Classification, DefectClassifier, classify, grad_cam
from models.data import GRAY_MEAN, GRAY_STD, Box, ManifestError, Sample, SampleSet, to_input
from models.evaluation import evaluate_classifier, evaluate_segmenter
from models.export import ExportParityError, ExportReport, export_classifier, export_segmenter, read_metadata
from models.segmenter import DefectSegmenter, segment
from models.training import (
    ClassifierParams,
    SegmenterParams,
    TrainingResult,
    TrainParams,
    train_classifier,
    train_segmenter,
)

__all__ = [
    "GRAY_MEAN",
    "GRAY_STD",
    "Box",
    "Checkpoint",
    "Classification",
    "ClassifierParams",
    "DefectClassifier",
    "DefectSegmenter",
    "ExportParityError",
    "ExportReport",
    "ManifestError",
    "Sample",
    "SampleSet",
    "SegmenterParams",
    "TrainParams",
    "TrainingResult",
    "classify",
    "evaluate_classifier",
    "evaluate_segmenter",
    "export_classifier",
    "export_segmenter",
    "grad_cam",
    "load_model",
    "model_bytes",
    "read_metadata",
    "save_model",
    "segment",
    "to_input",
    "train_classifier",
    "train_segmenter",
]
