"""Dataset versions: a selection spec applied to the catalog at a position gives a manifest (which images,
their class as of that position, their split and weight), written to the lake and published as an event.

A version is a pure function of (spec, position): the same pair gives the same manifest, byte for byte,
and the manifest's hash names the version.
"""

from catalog.datasets.build import DatasetVersion, build_dataset_version
from catalog.datasets.checks import CheckOutcome, check_manifest
from catalog.datasets.publish import PublishedDataset, load_manifest, publish_dataset_version
from catalog.datasets.spec import DatasetSpec, DatasetSpecError

__all__ = [
    "CheckOutcome", "DatasetSpec", "DatasetSpecError", "DatasetVersion", "PublishedDataset",
    "build_dataset_version", "check_manifest", "load_manifest", "publish_dataset_version",
]
