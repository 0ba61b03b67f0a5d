"""What the trace of a part needs of a published dataset version: the split and class of each image of its
manifest, and per class who labelled its training images (the label in force at the version's position).

Publishing keeps them by key (`store_facts`, migration 0016), so a trace reads a few rows instead of a
million-row manifest and a scan of the label history. A version published without them (before 0016, or
its event appended by other means) has them computed from its manifest on every read (`ManifestFacts`), until
it is published again (the same spec at the same position), which keeps them.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Connection

from catalog import Catalog

EXAMPLES = 5  # training labels shown per class
TRAIN = "train"

# Who labelled each class's training images (``training``: sha256, class): the label of each in force at the
# position, counted per annotator, and the latest few. That label is the image's current one unless a label
# came later (the current row is the latest of the history); only those few look back into the history.
_CLASS_LABELS_SQL = """
    WITH t AS MATERIALIZED ({training}),
    l AS MATERIALIZED (
        SELECT t.class, t.sha256, coalesce(h.label, c.label) AS label, coalesce(h.annotator, c.annotator) AS annotator,
               coalesce(h.source, c.source) AS source, coalesce(h.labeled_at, c.labeled_at) AS labeled_at
        FROM t JOIN projections.current_labels c USING (sha256)
        LEFT JOIN LATERAL (SELECT h.label, h.annotator, h.source, h.labeled_at FROM projections.label_history h
                           WHERE c.position > %(as_of)s AND h.sha256 = t.sha256 AND h.position <= %(as_of)s
                           ORDER BY h.position DESC LIMIT 1) h ON true),
    a AS (
        SELECT class, annotator, count(*) AS images, count(*) FILTER (WHERE source = 'correction') AS corrections
        FROM l GROUP BY class, annotator)
    SELECT class, sum(images)::integer AS training_images,
           jsonb_agg(jsonb_build_object('annotator', annotator, 'images', images, 'corrections', corrections)
                     ORDER BY images DESC, annotator) AS annotators,
           (SELECT jsonb_agg(jsonb_build_object(
                'sha256', e.sha256, 'part_id', (SELECT part_id FROM projections.images i WHERE i.sha256 = e.sha256),
                'label', e.label, 'annotator', e.annotator, 'source', e.source, 'labeled_at', e.labeled_at)
                ORDER BY e.labeled_at DESC, e.sha256)
            FROM (SELECT * FROM l WHERE l.class = a.class ORDER BY labeled_at DESC, sha256 LIMIT {examples}) e
           ) AS examples
    FROM a GROUP BY class"""
# The version's kept members, when it is published.
_KEPT_TRAINING = "SELECT sha256, class FROM catalog.manifest_members WHERE manifest_id = %(m)s AND split = 'train'"
# One class's images from the manifest, as one bytea of 32-byte digests: tens of thousands of hex strings (the
# good class of a large catalog) take ~20 times longer to send as a text array.
_GIVEN_TRAINING = ("SELECT encode(substring(%(ids)s::bytea FROM g * 32 + 1 FOR 32), 'hex') AS sha256, %(c)s AS class"
                   " FROM generate_series(0, %(n)s - 1) g")


@dataclass(frozen=True)
class ClassLabels:
    """The training images of one class of a version: how many, who labelled them, a few examples."""

    training_images: int
    annotators: list[dict[str, Any]]  # annotator, images, corrections; most images first
    examples: list[dict[str, Any]]  # sha256, part_id, label, annotator, source, labeled_at; latest first


class VersionFacts(Protocol):
    """What a trace asks of one dataset version."""

    def membership(self, shas: Sequence[str]) -> dict[str, tuple[str, str]]:
        """(split, class) of those of ``shas`` the version holds."""

    def class_labels(self, predicted_class: str) -> ClassLabels:
        """Who labelled the version's training images of ``predicted_class``."""

    def relabelled_since(self, predicted_class: str) -> int:
        """How many of those images have a label recorded after the version's position."""


def version_facts(conn: Connection, manifest_hash: str, as_of_position: int,
                  manifest: Callable[[], pa.Table]) -> VersionFacts:
    """The facts kept for the manifest ``manifest_hash``, else computed from ``manifest()`` (its verified
    table), read through ``conn`` (a connection to fresh read models: `Catalog.read`)."""
    manifest_id = _stored(conn, manifest_hash)
    if manifest_id is None:
        return ManifestFacts(conn, manifest(), as_of_position)
    return StoredFacts(conn, manifest_id, as_of_position)


def store_facts(cat: Catalog, manifest_hash: str, manifest: pa.Table, as_of_position: int) -> bool:
    """Keep the facts of ``manifest`` (published as of ``as_of_position``) in one transaction; False when
    they were kept already. The read models must have reached the position: the publisher has caught up."""
    with cat.db.begin() as sa_conn:
        if _stored(sa_conn, manifest_hash) is not None:
            return False
        conn: psycopg.Connection = sa_conn.connection.driver_connection
        inserted = conn.execute(
            "INSERT INTO catalog.manifests (manifest_hash, as_of_position) VALUES (%s, %s)"
            " ON CONFLICT (manifest_hash) DO NOTHING RETURNING manifest_id", (manifest_hash, as_of_position)).fetchone()
        if inserted is None:  # another publisher kept them meanwhile
            return False
        manifest_id = inserted[0]
        members = manifest.select(["sha256", "split", "class"])
        members = members.add_column(0, "manifest_id", pa.repeat(pa.scalar(manifest_id, pa.int32()), len(members)))
        csv = io.BytesIO()
        pacsv.write_csv(members, csv, pacsv.WriteOptions(include_header=False))
        with conn.cursor().copy("COPY catalog.manifest_members (manifest_id, sha256, split, class)"
                                " FROM STDIN (FORMAT csv)") as copy:
            copy.write(csv.getvalue())
        _class_labels_rows(sa_conn, "INSERT INTO catalog.manifest_class_labels (class, training_images, annotators,"
                           " examples, manifest_id) SELECT x.*, %(m)s FROM ({}) x", _KEPT_TRAINING,
                           {"m": manifest_id, "as_of": as_of_position})
    return True


def _class_labels_rows(conn: Connection, statement: str, training: str,
                       params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run ``statement`` around the class labels of the images ``training`` selects (its ``{}``)."""
    # The images to count are new (kept in this transaction) or given: the planner has no statistics of them
    # and, taking them for a handful, would look each one up in the labels (seconds for a large version)
    # rather than hash them once. And the sorts of a large version stay in memory. Both for this statement only.
    settings = {"enable_nestloop": "off", "work_mem": "64MB"}
    before = {name: conn.exec_driver_sql("SELECT current_setting(%(n)s)", {"n": name}).scalar() for name in settings}
    _set_locally(conn, settings)
    try:
        result = conn.exec_driver_sql(statement.format(
            _CLASS_LABELS_SQL.format(training=training, examples=EXAMPLES)), params)
        return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        _set_locally(conn, before)


def _set_locally(conn: Connection, settings: dict[str, str]) -> None:
    for name, value in settings.items():
        conn.exec_driver_sql("SELECT set_config(%(n)s, %(v)s, true)", {"n": name, "v": value})


def _class_labels(rows: list[tuple[Any, ...]]) -> ClassLabels:
    """A class's (training_images, annotators, examples) row, if it has one, as a `ClassLabels`."""
    if not rows:  # no training image of this class
        return ClassLabels(0, [], [])
    training_images, annotators, examples = rows[0]
    return ClassLabels(training_images, annotators,
                       [e | {"labeled_at": datetime.fromisoformat(e["labeled_at"])} for e in examples])


def _stored(conn: Connection, manifest_hash: str) -> int | None:
    """The key of the manifest's kept facts, None when none are kept."""
    return conn.exec_driver_sql("SELECT manifest_id FROM catalog.manifests WHERE manifest_hash = %(h)s",
                                {"h": manifest_hash}).scalar()


# Labels only accumulate, so which of a version's training images were relabelled since its position only grows:
# each process keeps it per kept manifest with the label history's position it was read through, and reads
# only the labels recorded since (usually none) rather than every label since the version (O(labels since)).
_RELABELLED: dict[tuple[str, int], tuple[int, dict[str, frozenset[str]]]] = {}
_RELABELLED_KEPT = 16


def forget_relabelled() -> None:
    """Forget what this process read of the images relabelled since each version."""
    _RELABELLED.clear()


class StoredFacts:
    """The facts kept when the version was published: each question is one indexed read."""

    def __init__(self, conn: Connection, manifest_id: int, as_of_position: int):
        self._conn, self._id, self._as_of = conn, manifest_id, as_of_position

    def membership(self, shas: Sequence[str]) -> dict[str, tuple[str, str]]:
        return {sha: (split, cls) for sha, split, cls in self._rows(
            "SELECT sha256, split, class FROM catalog.manifest_members WHERE manifest_id = %(m)s"
            " AND sha256 = ANY(%(s)s)", s=list(shas))}

    def class_labels(self, predicted_class: str) -> ClassLabels:
        return _class_labels(self._rows(
            "SELECT training_images, annotators, examples FROM catalog.manifest_class_labels"
            " WHERE manifest_id = %(m)s AND class = %(c)s", c=predicted_class))

    def relabelled_since(self, predicted_class: str) -> int:
        return len(self._relabelled().get(predicted_class, ()))

    def _relabelled(self) -> dict[str, frozenset[str]]:
        """The version's training images with a label recorded since its position, by class: brought up to
        date from the labels recorded since this process last looked, each looked up among the members."""
        key = (self._conn.engine.url.render_as_string(hide_password=True), self._id)
        through, found = _RELABELLED.get(key, (self._as_of, {}))
        head = self._rows("SELECT coalesce(max(position), 0) FROM projections.label_history")[0][0]
        if head <= through:
            return found
        found = dict(found)
        for cls, sha in self._rows(
                "SELECT class, sha256 FROM catalog.manifest_members WHERE manifest_id = %(m)s AND split = %(t)s"
                " AND sha256 = ANY(ARRAY(SELECT DISTINCT sha256 FROM projections.label_history"
                "                        WHERE position > %(after)s AND position <= %(head)s))",
                t=TRAIN, after=through, head=head):
            found[cls] = found.get(cls, frozenset()) | {sha}
        while len(_RELABELLED) >= _RELABELLED_KEPT:
            del _RELABELLED[next(iter(_RELABELLED))]
        _RELABELLED[key] = head, found
        return found

    def _rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._conn.exec_driver_sql(sql, {"m": self._id, **params})]


class ManifestFacts:
    """The facts computed from a verified manifest: a scan of its table and of the training images' labels."""

    def __init__(self, conn: Connection, manifest: pa.Table, as_of_position: int):
        self._conn, self._manifest, self._as_of = conn, manifest, as_of_position

    def membership(self, shas: Sequence[str]) -> dict[str, tuple[str, str]]:
        found = self._manifest.filter(pc.is_in(self._manifest["sha256"], value_set=pa.array(list(shas), pa.string())))
        return {r["sha256"]: (r["split"], r["class"]) for r in found.select(["sha256", "split", "class"]).to_pylist()}

    def class_labels(self, predicted_class: str) -> ClassLabels:
        shas = self._training(predicted_class)["sha256"].to_pylist()
        params = {"ids": b"".join(bytes.fromhex(sha) for sha in shas), "n": len(shas), "c": predicted_class,
                  "as_of": self._as_of}
        return _class_labels([r[1:] for r in _class_labels_rows(self._conn, "{}", _GIVEN_TRAINING, params)])

    def relabelled_since(self, predicted_class: str) -> int:
        # The labels recorded since are read (a range of the history's key) and matched against the images here.
        since = self._conn.exec_driver_sql(
            "SELECT DISTINCT sha256 FROM projections.label_history WHERE position > %(p)s",
            {"p": self._as_of}).scalars().all()
        if not since:
            return 0
        shas = self._training(predicted_class)["sha256"]
        return pc.sum(pc.is_in(shas, value_set=pa.array(since, pa.string()))).as_py() or 0

    def _training(self, predicted_class: str) -> pa.Table:
        m = self._manifest
        return m.filter(pc.and_(pc.equal(m["split"], TRAIN), pc.equal(m["class"], predicted_class)))
