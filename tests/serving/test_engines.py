"""Engines against a real catalog: built once and recorded with their lineage, loaded only while that lineage
holds, and giving the ONNX file's own outputs."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import uuid
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

import catalog
from apps.cli.main import cli
from assets.learn_loop import classifier_engine
from assets.resources import CatalogResource
from catalog.events import EngineBuilt, ModelExported, ModelPromoted, ModelRegistered
from catalog.lineage import CLASSIFIER, dataset_version, model_row
from catalog.store import NewEvent
from imaging.gray import decode_gray8
from models.data import to_input
from serving.engines import (
    BackendUnavailable,
    EngineError,
    EngineRecord,
    LineageError,
    build_engine,
    engine_record,
    engine_to_serve,
    list_engines,
    load_engine,
)
from serving.engines.artifact import EngineArtifact
from serving.engines.build import calibration_set
from tests.builders import crafted, record_engine

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_CUDA = torch.cuda.is_available()
NO_CUDA_EP = "CUDAExecutionProvider" not in ort.get_available_providers()


def tiles_of(cat: catalog.Catalog, n: int) -> np.ndarray:
    """``n`` labelled images, defective ones first: whole 128 px images are the engine's tiles."""
    with cat.db.connect() as conn:
        shas = [s for (s,) in conn.exec_driver_sql(
            "SELECT sha256 FROM projections.images WHERE label IS NOT NULL ORDER BY label = 'ok', sha256"
            " LIMIT %(n)s", {"n": n})]
    return np.stack([decode_gray8(cat.blobs.read(s)) for s in shas])


def onnx_outputs(cat: catalog.Catalog, onnx_sha256: str, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, defect cells N x h x w) of the ONNX file itself through ONNX Runtime."""
    session = ort.InferenceSession(cat.blobs.read(onnx_sha256), providers=["CPUExecutionProvider"])
    probabilities, _, cells = session.run(None, {"image": to_input(tiles).numpy()})
    return probabilities, cells[:, 0]


def register_model(cat: catalog.Catalog, record: EngineRecord) -> None:
    """Record the model ``record`` names and its export, as the assets would, without training."""
    no_bytes = "0" * 64
    cat.append([
        NewEvent(ModelRegistered(model=CLASSIFIER, model_id=record.model_id,
                                 dataset_version_id=record.dataset_version_id,
                                 manifest_hash=record.manifest_hash, artifact_sha256=no_bytes,
                                 artifact_uri=f"blob:{no_bytes}"), datetime.now(UTC)),
        NewEvent(ModelExported(model=CLASSIFIER, model_id=record.model_id, onnx_sha256=record.onnx_sha256,
                               onnx_uri=f"blob:{record.onnx_sha256}", opset=20, parity_max_abs_diff=0,
                               parity_tolerance=1e-4), datetime.now(UTC)),
    ])


def test_building_records_the_engine_once_with_its_full_lineage(built_engine):
    cat, engine_id = built_engine
    (event,) = cat.store.read_stream(f"engine:{engine_id}")
    built = event.data
    model = model_row(cat, CLASSIFIER, need_onnx=True)
    version = dataset_version(cat, model.dataset_version_id)
    assert isinstance(built, EngineBuilt) and event.metadata["actor"] == "test"
    assert (built.model, built.model_id, built.onnx_sha256) == (CLASSIFIER, model.model_id, model.onnx_sha256)
    assert (built.dataset_version_id, built.manifest_hash) == (version.version_id, version.manifest_hash)
    assert (built.backend, built.precision, built.device) == ("onnxruntime", "fp32", "cpu")
    assert built.library_versions["onnxruntime"] == ort.__version__
    assert built.artifact_uri == f"blob:{engine_id}"
    assert hashlib.sha256(cat.blobs.read(engine_id)).hexdigest() == engine_id
    assert engine_record(cat, engine_id) == EngineRecord(**built.model_dump())
    assert [r.engine_id for r in list_engines(cat)] == [engine_id]

    head = cat.head()
    again = build_engine(cat, model_id=model.model_id, actor="test")
    assert (again.new, again.record.engine_id, cat.head()) == (False, engine_id, head)


def test_the_backends_refuse_what_they_cannot_build_and_say_what_to_do(built_engine):
    cat, _ = built_engine
    model_id = model_row(cat, CLASSIFIER).model_id
    with pytest.raises(EngineError, match="runs the exported fp32 ONNX file, or int8 on the CPU, not fp16 on cpu: "
                                          "use --backend"):
        build_engine(cat, model_id=model_id, precision="fp16")
    with pytest.raises(EngineError, match="or int8 on the CPU, not int8 on cuda:0"):
        build_engine(cat, model_id=model_id, precision="int8", device="cuda:0")
    with pytest.raises(EngineError, match="unknown device 'gpu'"):
        build_engine(cat, model_id=model_id, device="gpu")
    with pytest.raises(EngineError, match="runs on a CUDA GPU: give --device cuda:0"):
        build_engine(cat, model_id=model_id, backend="torch_cuda")
    with pytest.raises(EngineError, match="int8 needs calibration, use --backend tensorrt"):
        build_engine(cat, model_id=model_id, backend="torch_cuda", precision="int8", device="cuda:0")
    if NO_CUDA_EP:
        with pytest.raises(BackendUnavailable, match="no CUDAExecutionProvider"):
            build_engine(cat, model_id=model_id, device="cuda:0")


def test_a_loaded_engine_gives_the_onnx_files_outputs(built_engine):
    cat, engine_id = built_engine
    engine = load_engine(cat, engine_id, threads=1)
    assert engine.record == engine_record(cat, engine_id)
    assert (engine.input_size, engine.cell_size, engine.ok_class) == ((128, 128), 16, "ok")
    tiles = tiles_of(cat, 5)
    output = engine.infer(tiles)
    assert output.probabilities.shape == (5, len(engine.classes)) and output.defect_cells.shape == (5, 8, 8)
    np.testing.assert_allclose(output.probabilities.sum(axis=1), 1.0, atol=1e-5)
    probabilities, cells = onnx_outputs(cat, engine.record.onnx_sha256, tiles)
    np.testing.assert_allclose(output.probabilities, probabilities, atol=1e-6)
    np.testing.assert_allclose(output.defect_cells, cells, atol=1e-6)
    with pytest.raises(ValueError, match=r"tiles N x 128 x 128 \(N >= 1\), got uint8 \(2, 64, 64\)"):
        engine.infer(tiles[:2, :64, :64])


def test_an_int8_engine_quantises_the_learned_convolutions_only_and_agrees_with_the_onnx_file(built_engine):
    cat, fp32_id = built_engine
    model_id = model_row(cat, CLASSIFIER).model_id
    built = build_engine(cat, model_id=model_id, precision="int8", actor="test")
    assert built.new and built.record.engine_id != fp32_id
    assert (built.record.backend, built.record.precision, built.record.device) == ("onnxruntime", "int8", "cpu")
    again = build_engine(cat, model_id=model_id, precision="int8", actor="test")  # the same calibration images
    assert (again.new, again.record.engine_id) == (False, built.record.engine_id)

    artifact = EngineArtifact.from_bytes(cat.blobs.read(built.record.engine_id), name="the int8 engine")
    graph = onnx.load_from_string(artifact.payload).graph
    made_by = {output: node.op_type for node in graph.node for output in node.output}
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    fed_int8 = [made_by.get(node.input[0]) == "DequantizeLinear" for node in convolutions]  # not by the input
    assert not fed_int8[0] and any(fed_int8)  # the stem sees the image itself; the learned layers int8
    fp32 = onnx.load_from_string(cat.blobs.read(model_row(cat, CLASSIFIER).onnx_sha256)).graph
    fp32_made_by = {output: node.op_type for node in fp32.node for output in node.output}
    assert sum(fed_int8) == sum(fp32_made_by.get(n.input[0]) == "Relu" for n in fp32.node if n.op_type == "Conv")

    tiles = tiles_of(cat, 8)
    output = load_engine(cat, built.record.engine_id, threads=1).infer(tiles)
    probabilities, cells = onnx_outputs(cat, built.record.onnx_sha256, tiles)
    assert np.abs(output.probabilities - probabilities).max() < 0.1
    assert np.abs(output.defect_cells - cells).max() < 0.1


def test_an_engine_whose_artifact_was_altered_or_lost_is_refused(built_engine):
    cat, engine_id = built_engine
    path = cat.blobs.path(engine_id)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(LineageError, match=f"hash to [0-9a-f]{{64}}, not to the engine id {engine_id}: the "
                                           "artifact was altered or replaced"):
        load_engine(cat, engine_id)
    path.unlink()
    with pytest.raises(LineageError, match="is not in the blob store"):
        load_engine(cat, engine_id)


@pytest.mark.parametrize("changes, message", [
    ({"model_id": "inspection-classifier-000000000000"},
     "names model inspection-classifier-000000000000 .* which the catalog has not registered"),
    ({"manifest_hash": "f" * 64}, "records manifest_hash f{64}, but model .* has [0-9a-f]{64}"),
    ({"onnx_sha256": "e" * 64}, "records onnx_sha256 e{64}, but model"),
])
def test_an_engine_that_does_not_match_its_model_is_refused(built_engine, changes, message):
    cat, engine_id = built_engine
    record = crafted(engine_record(cat, engine_id), **changes)
    record_engine(cat, record)
    with pytest.raises(LineageError, match=message):
        load_engine(cat, record.engine_id)


@pytest.mark.parametrize("dataset, message", [
    (None, "records manifest hash a{64}, but dataset version inspection-all-[0-9a-f]+ was published with "
           "[0-9a-f]{64}: the model did not learn from the version it names"),
    ("inspection-all-000000000000",
     "names dataset version inspection-all-000000000000, which is not published"),
])
def test_an_engine_whose_model_did_not_learn_from_a_published_version_is_refused(built_engine, dataset,
                                                                                 message):
    cat, engine_id = built_engine
    real = engine_record(cat, engine_id)
    record = crafted(real, model_id="inspection-classifier-elsewhere000", onnx_sha256="b" * 64,
                     dataset_version_id=dataset or real.dataset_version_id, manifest_hash="a" * 64)
    register_model(cat, record)
    record_engine(cat, record)
    with pytest.raises(LineageError, match=message):
        load_engine(cat, record.engine_id)


def test_a_record_that_does_not_describe_its_artifact_is_refused(built_engine):
    cat, engine_id = built_engine
    real = engine_record(cat, engine_id)
    artifact = EngineArtifact.from_bytes(cat.blobs.read(engine_id), name="the engine")
    other = cat.blobs.put(dataclasses.replace(artifact, device="cuda:0").to_bytes())
    record_engine(cat, dataclasses.replace(real, engine_id=other.sha256, artifact_uri=other.uri))
    with pytest.raises(LineageError, match=r"built with device cuda:0 \(record: cpu\): the record does not"):
        load_engine(cat, other.sha256)
    with pytest.raises(LineageError, match="no EngineBuilt records engine"):
        load_engine(cat, "0" * 64)


def test_the_engine_to_serve_is_the_newest_of_the_champion(built_engine):
    cat, engine_id = built_engine
    real = engine_record(cat, engine_id)
    assert engine_to_serve(cat) == engine_id  # no champion: the newest
    newer = crafted(real, model_id="inspection-classifier-candidate000")
    record_engine(cat, newer)
    assert [r.engine_id for r in list_engines(cat)] == [newer.engine_id, engine_id]
    assert engine_to_serve(cat) == newer.engine_id
    cat.append([NewEvent(ModelPromoted(model=CLASSIFIER, model_id=real.model_id, replay_event_id=uuid.uuid4(),
                                       reason="test"), datetime.now(UTC))])
    assert engine_to_serve(cat) == engine_id
    with pytest.raises(EngineError, match="no tensorrt engine is recorded: build one with `visionledger "
                                          "engines build --backend tensorrt`"):
        engine_to_serve(cat, backend="tensorrt")


def test_int8_calibration_draws_training_images_of_the_input_size(built_engine):
    cat, engine_id = built_engine
    version = dataset_version(cat, engine_record(cat, engine_id).dataset_version_id)
    images = calibration_set(cat, version, (128, 128), count=8)
    assert images.dtype == np.uint8 and images.shape == (8, 128, 128)
    with pytest.raises(EngineError, match="no training image of 64 x 64 px"):
        calibration_set(cat, version, (64, 64))


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed: its absence cannot be shown")
def test_without_tensorrt_its_backend_says_so_and_what_to_use(built_engine):
    cat, _ = built_engine
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed here .* --backend torch_cuda"):
        build_engine(cat, model_id=model_row(cat, CLASSIFIER).model_id, backend="tensorrt", device="cuda:0")


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is present: its absence cannot be shown")
def test_without_a_gpu_the_torch_backend_says_so_and_what_to_use(built_engine):
    cat, _ = built_engine
    with pytest.raises(BackendUnavailable, match="needs a CUDA GPU, and torch .* sees none here: use "
                                                 "--backend onnxruntime --device cpu"):
        build_engine(cat, model_id=model_row(cat, CLASSIFIER).model_id, backend="torch_cuda", device="cuda:0")


def _agrees_with_the_onnx_file(cat: catalog.Catalog, engine_id: str, tolerance: float) -> None:
    engine = load_engine(cat, engine_id)
    tiles = tiles_of(cat, 12)
    output = engine.infer(tiles)
    probabilities, cells = onnx_outputs(cat, engine.record.onnx_sha256, tiles)
    np.testing.assert_allclose(output.probabilities, probabilities, atol=tolerance)
    np.testing.assert_allclose(output.defect_cells, cells, atol=tolerance)
    engine.close()


# The mark nearest the function is evaluated first: without TensorRT, that is the reason given.
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU: TensorRT engines run only on one")
@pytest.mark.skipif(not HAS_TENSORRT, reason="TensorRT is not installed (it needs an NVIDIA GPU)")
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-3), ("fp16", 2e-2), ("int8", 0.15)])
def test_tensorrt_engines_agree_with_the_onnx_file(built_engine, precision, tolerance):
    cat, _ = built_engine
    built = build_engine(cat, model_id=model_row(cat, CLASSIFIER).model_id, backend="tensorrt",
                         precision=precision, device="cuda:0")
    assert built.record.library_versions["tensorrt"]
    _agrees_with_the_onnx_file(cat, built.record.engine_id, tolerance)


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU: the torch_cuda backend runs only on one")
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_torch_cuda_engines_agree_with_the_onnx_file(built_engine, precision, tolerance):
    cat, _ = built_engine
    model_id = model_row(cat, CLASSIFIER).model_id
    built = build_engine(cat, model_id=model_id, backend="torch_cuda", precision=precision, device="cuda:0")
    other = "fp16" if precision == "fp32" else "fp32"
    twin = build_engine(cat, model_id=model_id, backend="torch_cuda", precision=other, device="cuda:0")
    assert built.record.engine_id != twin.record.engine_id  # one checkpoint, two engines
    _agrees_with_the_onnx_file(cat, built.record.engine_id, tolerance)


def test_the_cli_builds_and_lists_engines(built_engine):
    cat, engine_id = built_engine
    settings = cat.settings
    env = {"VISIONLEDGER_HOME": str(settings.home), "VISIONLEDGER_DATABASE_URL": settings.database_url,
           "VISIONLEDGER_ADMIN_DATABASE_URL": settings.admin_database_url,
           "COLUMNS": "200"}  # room for the whole engine id in the table
    runner = CliRunner()
    built = runner.invoke(cli, ["engines", "build", "--json"], env=env)  # the latest export: no champion yet
    assert built.exit_code == 0, built.output
    record = json.loads(built.stdout)
    assert (record["engine_id"], record["new"], record["backend"]) == (engine_id, False, "onnxruntime")
    listed = runner.invoke(cli, ["engines", "list", "--json"], env=env)
    assert [json.loads(line) for line in listed.stdout.splitlines()] == [
        dataclasses.asdict(engine_record(cat, engine_id)) | {"in_service": True}]
    assert f"* {engine_id}" in runner.invoke(cli, ["engines", "list"], env=env).stdout
    refused = runner.invoke(cli, ["engines", "build", "--precision", "fp16"], env=env)
    assert refused.exit_code == 1
    assert "EngineError: the onnxruntime backend runs the exported fp32 ONNX file, or int8 on the CPU" in refused.output


def test_the_asset_builds_the_engine_of_the_latest_export(built_engine):
    cat, engine_id = built_engine
    resource = CatalogResource(home=str(cat.settings.home), database_url=cat.settings.database_url)
    result = dg.materialize([classifier_engine], resources={"catalog": resource},
                            instance=dg.DagsterInstance.ephemeral())
    (materialization,) = result.asset_materializations_for_node("classifier_engine")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert (metadata["engine_id"], metadata["new"], metadata["backend"]) == (engine_id, False, "onnxruntime")
