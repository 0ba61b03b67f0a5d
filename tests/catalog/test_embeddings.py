"""The embeddings store on a real LanceDB directory: idempotent writes, exact nearest neighbours, near-duplicate
pairs, the ANN index and the errors a caller can make."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from catalog import embeddings
from catalog.embeddings import INDEX_NAME, EmbeddingError, EmbeddingStore, EmbeddingTableNotFound
from catalog.errors import CatalogError

MODEL = "classifier/v1"


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def batch(names: list[str], vectors: np.ndarray, *, parts: list[str] | None = None, line: str = "A",
          labels: list[str | None] | None = None) -> pa.Table:
    n = len(names)
    return pa.table({
        "sha256": [sha(name) for name in names],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(vectors, np.float32).ravel()),
                                                    np.asarray(vectors).shape[1]),
        "part_id": parts or [f"part-{name}" for name in names],
        "line": [line] * n,
        "station": ["s1"] * n,
        "camera": ["cam0"] * n,
        "day": pa.array([date(2024, 3, 4)] * n, pa.date32()),
        "label": pa.array(labels or [None] * n, pa.string()),
    })


@pytest.fixture
def store(tmp_path: Path) -> EmbeddingStore:
    return EmbeddingStore(tmp_path / "lancedb")


def angles(degrees: list[float], scale: list[float] | None = None) -> np.ndarray:
    """4-d vectors in the first plane at the given angles from (1, 0, 0, 0); scale changes no cosine."""
    radians = np.deg2rad(degrees)
    vectors = np.stack([np.cos(radians), np.sin(radians), np.zeros_like(radians), np.zeros_like(radians)], axis=1)
    return vectors * np.asarray(scale or [1.0] * len(degrees))[:, None]


def test_table_names_are_valid_and_distinct():
    assert EmbeddingStore.table_name("clf-1.2_b") == "embeddings_clf-1.2_b"
    slash, colon = EmbeddingStore.table_name("a/b"), EmbeddingStore.table_name("a:b")
    assert slash.startswith("embeddings_a_b-") and colon.startswith("embeddings_a_b-")
    assert slash != colon


def test_rewriting_images_replaces_them(store: EmbeddingStore):
    assert store.write(MODEL, batch(["a", "b", "c"], angles([0, 10, 20]))) == 3
    assert store.count(MODEL) == 3

    again = batch(["b", "c", "d"], angles([40, 50, 60]), labels=["crack", None, "ok"])
    assert store.write(MODEL, again) == 3
    assert store.count(MODEL) == 4
    shas, vectors = store.vectors(MODEL)
    assert shas == sorted(sha(name) for name in "abcd")
    rewritten = dict(zip(shas, vectors, strict=True))[sha("b")]
    np.testing.assert_allclose(rewritten, angles([40])[0], atol=1e-6)

    # Within one batch, the last row of an image wins.
    twice = pa.concat_tables([batch(["e"], angles([70])), batch(["e"], angles([80]), labels=["scratch"])])
    assert store.write(MODEL, twice) == 1
    assert store.count(MODEL) == 5
    row = store.nearest(MODEL, angles([80])[0], 1)
    assert row["sha256"].to_pylist() == [sha("e")] and row["label"].to_pylist() == ["scratch"]


def test_nearest_orders_by_cosine_distance_and_filters(store: EmbeddingStore):
    names = ["deg90", "deg0", "deg30", "deg10", "deg180", "deg60"]
    store.write(MODEL, batch(names, angles([90, 0, 30, 10, 180, 60], scale=[5, 0.1, 2, 7, 1, 3]),
                             labels=[None, "ok", None, None, "crack", None]))
    store.write(MODEL, batch(["deg5"], angles([5]), line="B"))

    result = store.nearest(MODEL, [2.0, 0.0, 0.0, 0.0], 4)
    assert result["sha256"].to_pylist() == [sha(n) for n in ["deg0", "deg5", "deg10", "deg30"]]
    np.testing.assert_allclose(result["_distance"].to_pylist(),
                               1 - np.cos(np.deg2rad([0, 5, 10, 30])), atol=1e-5)
    assert "vector" not in result.column_names and result["line"].to_pylist() == ["A", "B", "A", "A"]

    unlabelled_on_a = store.nearest(MODEL, [1.0, 0.0, 0.0, 0.0], 10, where="line = 'A' AND label IS NULL")
    assert unlabelled_on_a["sha256"].to_pylist() == [sha(n) for n in ["deg10", "deg30", "deg60", "deg90"]]


@pytest.mark.parametrize("tile", [2048, 3], ids=["one-tile", "many-tiles"])
def test_near_duplicates_finds_each_close_pair_once(store: EmbeddingStore, monkeypatch: pytest.MonkeyPatch,
                                                    tile: int):
    monkeypatch.setattr(embeddings, "_PAIR_TILE", tile)  # small tiles put pairs across tile boundaries
    rng = np.random.default_rng(7)
    base = rng.normal(size=(6, 32))  # random 32-d directions are far apart (cosine distance near 1)
    vectors = np.concatenate([
        base,
        base[[0]] + rng.normal(scale=1e-3, size=(1, 32)),  # a reshot of image 0, same part
        base[[1]] * 3.0,  # image 1 again at another exposure: same direction, different part
        base[[2]] + rng.normal(scale=1e-3, size=(2, 32)),  # two more shots of image 2
    ])
    names = ["img0", "img1", "img2", "img3", "img4", "img5", "img0-again", "img1-copy", "img2-b", "img2-c"]
    parts = ["p0", "p1", "p2", "p3", "p4", "p5", "p0", "p9", "p2", "p2"]
    store.write(MODEL, batch(names, vectors, parts=parts))

    pairs = store.near_duplicates(MODEL, max_distance=0.01)
    found = {(a, b) for a, b in zip(pairs["sha_a"].to_pylist(), pairs["sha_b"].to_pylist(), strict=True)}
    expected_names = [("img0", "img0-again"), ("img1", "img1-copy"), ("img2", "img2-b"), ("img2", "img2-c"),
                      ("img2-b", "img2-c")]
    expected = {tuple(sorted((sha(x), sha(y)))) for x, y in expected_names}
    assert found == expected and pairs.num_rows == len(expected)
    assert all(a < b for a, b in found)
    assert pairs["distance"].to_pylist() == sorted(pairs["distance"].to_pylist())
    same_part = dict(zip(zip(pairs["sha_a"].to_pylist(), pairs["sha_b"].to_pylist(), strict=True),
                         pairs["same_part"].to_pylist(), strict=True))
    assert same_part[tuple(sorted((sha("img1"), sha("img1-copy"))))] is False
    assert same_part[tuple(sorted((sha("img0"), sha("img0-again"))))] is True
    assert store.near_duplicates(MODEL, max_distance=0.01).equals(pairs)  # deterministic


def test_near_duplicates_keeps_each_images_nearest_partners_ties_by_sha(store: EmbeddingStore):
    names = ["w", "x", "y", "z"]
    store.write(MODEL, batch(names, np.ones((4, 8))))  # four identical images: every distance is 0
    pairs = store.near_duplicates(MODEL, max_distance=0.0, limit_per_image=1)
    smallest, *others = sorted(sha(name) for name in names)
    # Each image keeps one partner, the smallest other sha; the union holds three pairs, not six.
    assert list(zip(pairs["sha_a"].to_pylist(), pairs["sha_b"].to_pylist(), strict=True)) == [
        (smallest, other) for other in others
    ]
    assert pairs["distance"].to_pylist() == [0.0, 0.0, 0.0]


def test_index_is_built_above_the_threshold_and_search_stays_exact(store: EmbeddingStore):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(400, 16))
    names = [f"img{i}" for i in range(400)]
    store.write(MODEL, batch(names[:300], vectors[:300]))
    assert store.ensure_index(MODEL, min_rows=301) is False and not store.has_index(MODEL)
    assert store.ensure_index(MODEL, min_rows=300) is True and store.has_index(MODEL)

    store.write(MODEL, batch(names[300:], vectors[300:]))  # rows written after the build
    assert store.ensure_index(MODEL, min_rows=300) is True  # folds them into the index
    stats = lancedb.connect(store.uri).open_table(store.table_name(MODEL)).index_stats(INDEX_NAME)
    assert (stats.index_type, stats.distance_type) == ("IVF_FLAT", "cosine")
    assert (stats.num_indexed_rows, stats.num_unindexed_rows) == (400, 0)

    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for query in rng.normal(size=(5, 16)):
        distances = 1 - unit @ (query / np.linalg.norm(query))
        expected = [sha(names[i]) for i in np.argsort(distances)[:10]]
        result = store.nearest(MODEL, query, 10)
        assert result["sha256"].to_pylist() == expected
        np.testing.assert_allclose(result["_distance"].to_pylist(), np.sort(distances)[:10], atol=1e-5)


def test_errors_say_what_is_wrong(store: EmbeddingStore):
    with pytest.raises(EmbeddingTableNotFound, match="no embeddings stored for model 'missing'"):
        store.nearest("missing", [1.0, 0.0], 3)
    with pytest.raises(CatalogError):
        store.near_duplicates("missing", max_distance=0.1)

    store.write(MODEL, batch(["a"], angles([0])))
    with pytest.raises(EmbeddingError, match="dimension 3, but this model's table holds dimension 4"):
        store.write(MODEL, batch(["b"], np.ones((1, 3))))
    with pytest.raises(EmbeddingError, match="dimension 4"):
        store.nearest(MODEL, [1.0, 0.0, 0.0], 1)
    with pytest.raises(EmbeddingError, match="NaN or infinite"):
        store.write(MODEL, batch(["b", "c"], np.array([[1.0, 0, 0, 0], [np.nan, 0, 0, 0]])))
    with pytest.raises(EmbeddingError, match="NaN or infinite"):
        store.nearest(MODEL, [np.inf, 0.0, 0.0, 0.0], 1)
    with pytest.raises(EmbeddingError, match="all zeros"):
        store.write(MODEL, batch(["b"], np.zeros((1, 4))))
    with pytest.raises(EmbeddingError, match=r"lack the columns \['camera'\]"):
        store.write(MODEL, batch(["b"], angles([10])).drop_columns(["camera"]))
    with pytest.raises(EmbeddingError, match="64 lowercase hex"):
        store.write(MODEL, batch(["b"], angles([10])).set_column(0, "sha256", pa.array(["not-a-sha"])))
    with pytest.raises(EmbeddingError, match="filter"):
        store.nearest(MODEL, angles([0])[0], 1, where="no_such_column = 1")
    assert store.count(MODEL) == 1  # nothing refused was stored
