"""The embeddings store: one LanceDB table of image embeddings per model, for similarity search, near-duplicate
detection and the diversity side of active learning. Derived data: it can be rebuilt from the images and models.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import IvfFlat

from catalog.errors import CatalogError

KEY = "sha256"
VECTOR = "vector"
INDEX_NAME = "vector_idx"
METADATA_COLUMNS: dict[str, pa.DataType] = {
    "part_id": pa.string(), "line": pa.string(), "station": pa.string(), "camera": pa.string(),
    "day": pa.date32(),
}
HUMAN_COLUMNS: dict[str, pa.DataType] = {"label": pa.string(), "split": pa.string()}  # optional: null when absent
# Below this many rows an exact (brute-force) search over every vector takes milliseconds, and an index would
# only trade exactness for nothing.
DEFAULT_INDEX_MIN_ROWS = 5_000
_PAIR_TILE = 2048  # rows and columns of one tile of the near-duplicate search: 16 MiB of float32 products
_FLOAT32_SLACK = 1e-5  # rounding of a float32 dot product of unit vectors; pairs are re-checked in float64
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TABLE_NAME_REFUSED = re.compile(r"[^A-Za-z0-9_.-]")  # LanceDB accepts only these characters in table names


class EmbeddingError(CatalogError, ValueError):
    """Embeddings that cannot be stored or queried as given (wrong dimension, non-finite values, bad rows)."""


class EmbeddingTableNotFound(CatalogError, LookupError):
    """No embeddings were ever written for this model."""


def embedding_schema(dimension: int) -> pa.Schema:
    """The schema of every embeddings table; only the vector's dimension differs between models."""
    return pa.schema(
        [(KEY, pa.string()), (VECTOR, pa.list_(pa.float32(), dimension))]
        + list(METADATA_COLUMNS.items()) + list(HUMAN_COLUMNS.items())
    )


class EmbeddingStore:
    """A LanceDB directory (or object-store URI) holding one embeddings table per model, keyed by image sha256.

    Distances are cosine distances (0 = same direction, 2 = opposite), the measure embeddings are compared by.
    """

    def __init__(self, uri: str | Path):
        self.uri = str(uri)
        self._db = lancedb.connect(self.uri)

    # -- tables ------------------------------------------------------------------------------------------

    @staticmethod
    def table_name(model_id: str) -> str:
        """``embeddings_<model_id>``; when characters LanceDB refuses had to be replaced, a short hash of the
        model id is appended so that two ids differing only in those characters never share a table."""
        if not model_id:
            raise EmbeddingError("model_id is empty: name the model whose embeddings these are")
        safe = _TABLE_NAME_REFUSED.sub("_", model_id)
        if safe != model_id:
            safe += "-" + hashlib.sha256(model_id.encode()).hexdigest()[:8]
        return f"embeddings_{safe}"

    def has(self, model_id: str) -> bool:
        return self.table_name(model_id) in self._db

    def count(self, model_id: str) -> int:
        return self._open(model_id).count_rows()

    def dimension(self, model_id: str) -> int:
        return self._open(model_id).schema.field(VECTOR).type.list_size

    def _open(self, model_id: str) -> lancedb.table.Table:
        lance_table = self._open_if_stored(model_id)
        if lance_table is None:
            raise EmbeddingTableNotFound(
                f"no embeddings stored for model {model_id!r} (table {self.table_name(model_id)!r} in "
                f"{self.uri}): write them first with EmbeddingStore.write"
            )
        return lance_table

    def _open_if_stored(self, model_id: str) -> lancedb.table.Table | None:
        name = self.table_name(model_id)
        return self._db.open_table(name) if name in self._db else None

    # -- writing -----------------------------------------------------------------------------------------

    def write(self, model_id: str, table: pa.Table) -> int:
        """Store the embeddings in ``table`` (columns of :func:`embedding_schema`; ``label`` and ``split`` may
        be left out); returns how many images were written.

        Idempotent by sha256: an image written again replaces its row. Within one batch the last row of an
        image wins. Uses LanceDB's merge-insert (an upsert in one commit), so a reader or a crash never sees
        an image deleted but not yet re-added, as delete-then-add (two commits) would allow.
        """
        if table.num_rows == 0:
            return 0
        existing = self._open_if_stored(model_id)
        expected = existing.schema.field(VECTOR).type.list_size if existing is not None else None
        rows = _last_row_per_image(_conform(table, _vector_matrix(table, expected_dimension=expected)))
        if existing is None:
            try:
                self._db.create_table(self.table_name(model_id), data=rows, mode="create")
                return rows.num_rows
            except ValueError:
                existing = self._open_if_stored(model_id)
                if existing is None:
                    raise
                # Another writer created the table meanwhile: upsert into theirs.
        existing.merge_insert(KEY).when_matched_update_all().when_not_matched_insert_all().execute(rows)
        return rows.num_rows

    # -- index -------------------------------------------------------------------------------------------

    def ensure_index(self, model_id: str, *, min_rows: int = DEFAULT_INDEX_MIN_ROWS) -> bool:
        """Build the cosine ANN index once the table has ``min_rows`` rows, fold rows written since the last
        build into an existing one, and return whether an index exists.

        The index is IVF_FLAT: it groups the vectors into partitions but keeps them uncompressed, so its
        distances are exact, and with LanceDB's defaults (partitions of ~8k rows, 20 probed per query) it
        still compares every vector up to ~160k rows per model. IVF_PQ compresses vectors into approximate
        codes (training needs at least 256 rows) and pays off only at millions of rows, with a refine step.
        """
        if min_rows < 1:
            raise EmbeddingError(f"min_rows must be at least 1, not {min_rows}")
        lance_table = self._open(model_id)
        stats = lance_table.index_stats(INDEX_NAME)
        if stats is not None:
            if stats.num_unindexed_rows:
                lance_table.optimize()  # unindexed rows are still searched, but by a slower exhaustive scan
            return True
        if lance_table.count_rows() < min_rows:
            return False
        lance_table.create_index(VECTOR, config=IvfFlat(distance_type="cosine"), name=INDEX_NAME)
        return True

    def has_index(self, model_id: str) -> bool:
        return self._open(model_id).index_stats(INDEX_NAME) is not None

    # -- reading -----------------------------------------------------------------------------------------

    def nearest(self, model_id: str, vector: np.ndarray | list[float], k: int, *,
                where: str | None = None) -> pa.Table:
        """The ``k`` images closest to ``vector`` (cosine), optionally among those matching the SQL filter
        ``where`` (e.g. ``"line = 'B' AND label IS NULL"``): the stored columns but the vector, plus
        ``_distance``, nearest first (ties by sha256)."""
        if k < 1:
            raise EmbeddingError(f"k must be at least 1, not {k}")
        lance_table = self._open(model_id)
        query = _query_vector(vector, lance_table.schema.field(VECTOR).type.list_size)
        columns = [name for name in lance_table.schema.names if name != VECTOR]
        search = lance_table.search(query, vector_column_name=VECTOR).distance_type("cosine").select(columns)
        if where is not None:
            search = search.where(where, prefilter=True)  # filter first, so k matches are returned when they exist
        try:
            result = search.limit(k).to_arrow()
        except ValueError as error:
            raise EmbeddingError(f"the filter {where!r} is not valid for {columns}: {error}") from error
        return result.sort_by([("_distance", "ascending"), (KEY, "ascending")])

    def vectors(self, model_id: str) -> tuple[list[str], np.ndarray]:
        """Every stored image's sha256 and its vector (float32, one row each), in sha256 order."""
        shas, _, matrix = self._read_vectors(model_id, extra=[])
        return shas, matrix

    def near_duplicates(self, model_id: str, *, max_distance: float, limit_per_image: int = 5) -> pa.Table:
        """Pairs of images at cosine distance ``max_distance`` or less: columns ``sha_a < sha_b``,
        ``distance``, ``part_a``, ``part_b`` and ``same_part`` (a pair across parts hints at a re-ingested
        or mislabelled image; within a part, at repeated shots). Each image keeps at most
        ``limit_per_image`` of its nearest partners (ties by sha256); each pair appears once, closest first.

        Reads all vectors once and compares them by tiled matrix products of unit vectors, each pair once:
        dense arithmetic instead of one index query per image. Exact, and quadratic in the rows (about 9 s
        for 50,000 vectors of 128 dimensions on two cores).
        """
        if not 0 <= max_distance <= 2:
            raise EmbeddingError(f"max_distance is a cosine distance in [0, 2], not {max_distance}")
        if limit_per_image < 1:
            raise EmbeddingError(f"limit_per_image must be at least 1, not {limit_per_image}")
        shas, columns, matrix = self._read_vectors(model_id, extra=["part_id"])
        first, second = _candidate_pairs(_unit_rows(matrix), max_distance + _FLOAT32_SLACK)
        distance = _pair_distances(matrix, first, second)
        within = distance <= max_distance
        first, second, distance = _nearest_partners(first[within], second[within], distance[within],
                                                     limit_per_image)
        keys, parts = pa.array(shas, pa.string()), columns.column("part_id")
        part_a, part_b = parts.take(pa.array(first)), parts.take(pa.array(second))
        pairs = pa.table({
            "sha_a": keys.take(pa.array(first)),
            "sha_b": keys.take(pa.array(second)),
            "distance": pa.array(distance, pa.float64()),
            "part_a": part_a,
            "part_b": part_b,
            "same_part": pc.fill_null(pc.equal(part_a, part_b), False),  # unknown parts are not the same part
        })
        return pairs.sort_by([("distance", "ascending"), ("sha_a", "ascending"), ("sha_b", "ascending")])

    def _read_vectors(self, model_id: str, *, extra: list[str]) -> tuple[list[str], pa.Table, np.ndarray]:
        lance_table = self._open(model_id)
        rows = lance_table.search().select([KEY, VECTOR, *extra]).limit(None).to_arrow()
        rows = rows.sort_by(KEY)  # sha order makes every result independent of LanceDB's storage order
        dimension = lance_table.schema.field(VECTOR).type.list_size
        vectors = rows.column(VECTOR).combine_chunks()
        matrix = vectors.flatten().to_numpy(zero_copy_only=False).reshape(-1, dimension)
        return rows.column(KEY).to_pylist(), rows.select(extra), matrix


# -- validation -------------------------------------------------------------------------------------------


def _vector_matrix(table: pa.Table, *, expected_dimension: int | None) -> np.ndarray:
    """The ``vector`` column as an N x D float32 matrix, refused when ragged, null, of the wrong dimension,
    non-finite or zero (a zero vector has no direction, so no cosine distance)."""
    if VECTOR not in table.column_names:
        raise EmbeddingError(f"the embeddings have no {VECTOR!r} column (columns: {table.column_names})")
    column = table.column(VECTOR).combine_chunks()
    if not (pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type)
            or pa.types.is_large_list(column.type)):
        raise EmbeddingError(f"column {VECTOR!r} must hold lists of floats, not {column.type}")
    if column.null_count:
        raise EmbeddingError(f"{column.null_count} rows have no vector: every image needs its embedding")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    dimension = int(lengths[0])
    if (lengths != dimension).any():
        raise EmbeddingError(f"vectors of different lengths in one batch ({sorted(set(lengths.tolist()))})")
    if expected_dimension is not None and dimension != expected_dimension:
        raise EmbeddingError(
            f"vectors have dimension {dimension}, but this model's table holds dimension {expected_dimension}: "
            "a model's embeddings all come from one layer; store a different model under its own id"
        )
    matrix = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dimension)
    _check_values(matrix, what="embeddings")
    return matrix


def _query_vector(vector: np.ndarray | list[float], dimension: int) -> np.ndarray:
    query = np.asarray(vector, dtype=np.float32)
    if query.ndim != 1 or query.shape[0] != dimension:
        raise EmbeddingError(f"the query vector has shape {query.shape}, but this model's vectors have "
                             f"dimension {dimension}")
    _check_values(query[None, :], what="the query vector")
    return query


def _check_values(matrix: np.ndarray, *, what: str) -> None:
    bad = ~np.isfinite(matrix).all(axis=1)
    if bad.any():
        raise EmbeddingError(f"{what}: {int(bad.sum())} vectors hold NaN or infinite values (first at row "
                             f"{int(np.flatnonzero(bad)[0])}); check the model's output for these images")
    zero = ~matrix.any(axis=1)
    if zero.any():
        raise EmbeddingError(f"{what}: {int(zero.sum())} vectors are all zeros (first at row "
                             f"{int(np.flatnonzero(zero)[0])}), which have no cosine distance to anything")


def _conform(table: pa.Table, vectors: np.ndarray) -> pa.Table:
    """The batch in the store's schema: checked keys, float32 fixed-size vectors, optional columns filled."""
    missing = [name for name in (KEY, *METADATA_COLUMNS) if name not in table.column_names]
    if missing:
        raise EmbeddingError(f"the embeddings lack the columns {missing}; give them (null where unknown)")
    keys = table.column(KEY).cast(pa.string())
    valid = pc.fill_null(pc.match_substring_regex(keys, _SHA256.pattern), False)
    if not pc.all(valid).as_py():
        first = keys.filter(pc.invert(valid))[0].as_py()
        raise EmbeddingError(f"{KEY} values must be 64 lowercase hex characters; found {first!r}")
    schema = embedding_schema(vectors.shape[1])
    columns: list[pa.Array | pa.ChunkedArray] = [
        keys, pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])
    ]
    for name, kind in {**METADATA_COLUMNS, **HUMAN_COLUMNS}.items():
        if name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, kind))
            continue
        try:
            columns.append(table.column(name).cast(kind))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise EmbeddingError(f"column {name!r} ({table.column(name).type}) cannot be read as {kind}: "
                                 f"{error}") from error
    return pa.Table.from_arrays(columns, schema=schema)


def _last_row_per_image(rows: pa.Table) -> pa.Table:
    """One row per sha256, the last given: LanceDB refuses a merge where two source rows match one image."""
    keys = rows.column(KEY).to_pylist()
    last = {key: index for index, key in enumerate(keys)}
    if len(last) == len(keys):
        return rows
    return rows.take(pa.array(sorted(last.values())))


# -- near-duplicate search ----------------------------------------------------------------------------------


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _candidate_pairs(unit: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a < b) of unit rows within ``max_distance``, by float32 matrix products over square tiles
    on and above the diagonal: each pair is computed once, and a tile's products stay in cache (with only
    128-odd dimensions, writing a wide product out to memory would cost more than computing it)."""
    n, tile = unit.shape[0], _PAIR_TILE
    columns = np.ascontiguousarray(unit.T)
    min_similarity = 1.0 - max_distance
    firsts, seconds = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for row_start in range(0, n, tile):
        rows = unit[row_start:row_start + tile]
        for col_start in range(row_start, n, tile):
            product = rows @ columns[:, col_start:col_start + tile]
            hits = np.flatnonzero(product >= min_similarity)  # 2-D np.nonzero is ten times slower here
            row, col = hits // product.shape[1] + row_start, hits % product.shape[1] + col_start
            firsts.append(row[col > row])
            seconds.append(col[col > row])
    return np.concatenate(firsts), np.concatenate(seconds)


def _pair_distances(matrix: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cosine distances of the given pairs in float64, rounded to 1e-9: float32 products put identical images
    ~1e-7 apart, and what noise float64 leaves must neither move a pair across the threshold nor break a tie."""
    unit = _unit_rows(matrix.astype(np.float64))
    return np.round(np.clip(1.0 - np.einsum("ij,ij->i", unit[first], unit[second]), 0.0, 2.0), 9)


def _nearest_partners(first: np.ndarray, second: np.ndarray, distance: np.ndarray,
                      per_image: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs in which one image is among the other's ``per_image`` nearest partners; rows are in sha
    order, so distance ties go to the partner with the smaller sha."""
    image, partner = np.concatenate([first, second]), np.concatenate([second, first])
    order = np.lexsort((partner, np.concatenate([distance, distance]), image))
    ranked_image = image[order]
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size) - np.searchsorted(ranked_image, ranked_image, side="left")
    keep = (rank[:first.size] < per_image) | (rank[first.size:] < per_image)
    return first[keep], second[keep], distance[keep]
