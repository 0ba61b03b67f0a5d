"""Deriving a dataset version: the catalog's images as of a position → their class in the spec's ontology
version → per-part / per-day caps → class-stratified sampling → a split by part → class weights.

PostgreSQL answers "which images, with which label, as of the position" (one COPY); DuckDB does the
sampling over the Arrow table in process. Every choice is ordered by a hash of (seed, image) or
(seed, part), never by arrival order or a random generator's state, so the same spec at the same
position chooses the same images in any process.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Engine

from catalog.datasets.spec import SPLITS, DatasetSpec, DatasetSpecError
from catalog.factory_day import local_day_sql, zone_or_default, zones_as_of
from catalog.ontology import Ontology, OntologyError
from catalog.queries import where_conditions

MANIFEST_SCHEMA = pa.schema([
    ("sha256", pa.string()),
    ("class", pa.string()),  # the label as of the position, read in the spec's ontology version
    ("split", pa.string()),
    ("weight", pa.float64()),  # class-balancing weight for the loss: n_train / (classes × n_train of the class)
    ("part_id", pa.string()),
    ("day", pa.date32()),  # factory day of capture, in the line's time zone as of the version's position
    ("line", pa.string()),
    ("station", pa.string()),
    ("camera", pa.string()),
    ("captured_at", pa.timestamp("us", tz="UTC")),
    ("mask_uri", pa.string()),  # the defect mask of the label in force, if it has one
    ("regions", pa.string()),  # its regions, as JSON text
])

_CANDIDATE_COLUMNS = {
    "sha256": pa.string(), "part_id": pa.string(), "line": pa.string(), "station": pa.string(),
    "camera": pa.string(), "captured_us": pa.int64(), "day": pa.date32(), "label": pa.string(), "version": pa.int32(),
    "mask_uri": pa.string(), "regions": pa.string(),
}


@dataclass(frozen=True)
class DatasetVersion:
    """A derived dataset, before or after publication: its manifest (sorted by sha256) and its figures."""

    spec: DatasetSpec
    position: int
    ontology_version: int
    manifest: pa.Table
    counts: dict[str, int]
    shortfall: dict[str, int] = field(default_factory=dict)  # images a class lacked to meet its target
    left_out: dict[str, int] = field(default_factory=dict)  # candidates not eligible, by reason


def build_dataset_version(db: Engine, spec: DatasetSpec, *, position: int | None = None) -> DatasetVersion:
    """Derive ``spec`` from the catalog as of ``position`` (else ``spec.as_of``, else the projections' head).
    The projections must have reached the position: writers catch up before calling this."""
    with db.connect() as sa_conn:
        conn: psycopg.Connection = sa_conn.connection.driver_connection
        reached = min(r[0] for r in conn.execute("SELECT position FROM projections.checkpoints"))
        position = position if position is not None else spec.as_of if spec.as_of is not None else reached
        if position > reached:
            raise DatasetSpecError(
                f"the read models have reached position {reached}, not {position}: catch the projections up "
                "(`visionledger projections catch-up`) before building at a later position")
        ontology = Ontology.read(conn, as_of=position)
        candidates = _candidates(conn, spec, position)
        sa_conn.rollback()
    if candidates is None:
        raise DatasetSpecError(f"{spec.name}: no labelled, curated image passes the filters at position {position}")
    if not ontology.versions:
        raise DatasetSpecError(f"no ontology was published by position {position}: nothing has a class yet")
    target = spec.ontology_version or ontology.current.version
    if target not in ontology.versions:
        raise DatasetSpecError(f"ontology version {target} was not published by position {position} "
                               f"(versions then: {sorted(ontology.versions)})")
    unknown = [c for c in spec.sampling.classes if c not in ontology.versions[target].classes]
    if unknown:
        raise DatasetSpecError(f"{', '.join(unknown)}: not classes of ontology version {target} "
                               f"({', '.join(ontology.versions[target].classes)})")
    return _sample(spec, position, target, candidates, _class_map(candidates, ontology, target))


def _candidates(conn: psycopg.Connection, spec: DatasetSpec, position: int) -> pa.Table | None:
    """Labelled, not excluded images ingested by ``position`` that pass the filters, with their label then.

    Images untouched since the position (``last_position``: their last ingest, label or curation event)
    read their current row; only the others look back into the label and curation histories.
    """
    params: dict[str, Any] = {"p": position}
    filters = "".join(f" AND {c}" for c in where_conditions(spec.filters.image_filter(), params))
    columns = ("i.sha256, i.part_id, i.line, i.station, i.camera,"
               " (extract(epoch FROM i.captured_at) * 1000000)::bigint AS captured_us,"
               f" {local_day_sql('i.captured_at', zone_or_default('zn.time_zone'))} AS day")
    settled = (
        f"SELECT {columns}, i.label, i.label_ontology_version, cl.mask_uri, cl.regions::text"
        " FROM projections.images i LEFT JOIN projections.current_labels cl USING (sha256)"
        " LEFT JOIN zones zn ON zn.line = i.line"
        " WHERE i.ingested_position <= %(p)s AND i.last_position <= %(p)s AND NOT i.excluded"
        f" AND i.label IS NOT NULL{filters}"
    )
    changed = (
        f"SELECT {columns}, l.label, l.ontology_version, m.mask_uri, m.regions"
        " FROM projections.images i LEFT JOIN zones zn ON zn.line = i.line"
        " JOIN LATERAL (SELECT h.label, h.ontology_version FROM projections.label_history h"
        "   WHERE h.sha256 = i.sha256 AND h.position <= %(p)s ORDER BY h.position DESC LIMIT 1) l ON true"
        " LEFT JOIN LATERAL (SELECT c.excluded FROM projections.curation_history c"
        "   WHERE c.sha256 = i.sha256 AND c.position <= %(p)s ORDER BY c.position DESC LIMIT 1) c ON true"
        # a correction keeps the label's regions and mask: they come from the last label recorded by then
        " LEFT JOIN LATERAL (SELECT h.mask_uri, h.regions::text AS regions FROM projections.label_history h"
        "   WHERE h.sha256 = i.sha256 AND h.position <= %(p)s AND h.source = 'label'"
        "   ORDER BY h.position DESC LIMIT 1) m ON true"
        " WHERE i.ingested_position <= %(p)s AND i.last_position > %(p)s AND NOT coalesce(c.excluded, false)"
        f"{filters}"
    )
    buffer = io.BytesIO()
    zones = f"WITH zones AS MATERIALIZED {zones_as_of('%(p)s')} "
    with conn.cursor().copy(f"COPY ({zones}{settled} UNION ALL {changed}) TO STDOUT (FORMAT csv)", params) as copy:
        for chunk in copy:
            buffer.write(chunk)
    if not buffer.tell():
        return None
    buffer.seek(0)
    return pacsv.read_csv(
        buffer,
        read_options=pacsv.ReadOptions(column_names=list(_CANDIDATE_COLUMNS)),
        convert_options=pacsv.ConvertOptions(column_types=_CANDIDATE_COLUMNS, strings_can_be_null=True,
                                             quoted_strings_can_be_null=False),
    )


def _class_map(candidates: pa.Table, ontology: Ontology, target: int) -> pa.Table:
    """(label, version) → class in ontology version ``target``; class null where it has none (a split made
    the label ambiguous, or it was recorded under a later version than the spec reads)."""
    upto = Ontology([v for n, v in ontology.versions.items() if n <= target])
    pairs = sorted((r["label"], r["version"]) for r in candidates.group_by(["label", "version"]).aggregate([]).to_pylist())
    classes = []
    for label, version in pairs:
        try:
            classes.append(upto.resolve(label, version) if version <= target else None)
        except OntologyError:
            classes.append(None)
    return pa.table({"label": [p[0] for p in pairs], "version": pa.array([p[1] for p in pairs], pa.int32()),
                     "class": pa.array(classes, pa.string())})


def _sample(spec: DatasetSpec, position: int, ontology_version: int, candidates: pa.Table,
            class_map: pa.Table) -> DatasetVersion:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("candidates", candidates)
    con.register("class_map", class_map)
    con.register("wanted", pa.table({"class": spec.sampling.classes}))
    seed = str(spec.seed)
    cap_part = spec.balance.max_per_part or 2**62
    cap_day = spec.balance.max_per_day or 2**62
    con.execute(
        """CREATE TEMP TABLE resolved AS
           SELECT c.sha256, m.class, c.part_id, c.line, c.station, c.camera,
                  make_timestamptz(c.captured_us) AS captured_at,
                  c.day, c.mask_uri, c.regions,
                  md5($seed || ':' || c.sha256) AS k
           FROM candidates c JOIN class_map m USING (label, version)""", {"seed": seed})
    left_out = {
        "unresolved_label": con.execute("SELECT count(*) FROM resolved WHERE class IS NULL").fetchone()[0],
        "class_not_sampled": con.execute("SELECT count(*) FROM resolved WHERE class IS NOT NULL"
                                         " AND class NOT IN (SELECT class FROM wanted)").fetchone()[0],
    }
    # Caps within each class: a part's many ok images must not crowd out its one defect image.
    con.execute(
        """CREATE TEMP TABLE eligible AS
           WITH by_part AS (
               SELECT *, row_number() OVER (PARTITION BY class, part_id ORDER BY k) AS part_rank
               FROM resolved WHERE class IN (SELECT class FROM wanted)),
           by_day AS (
               SELECT *, row_number() OVER (PARTITION BY class, day ORDER BY k) AS day_rank
               FROM by_part WHERE part_rank <= $cap_part)
           SELECT * FROM by_day WHERE day_rank <= $cap_day""", {"cap_part": cap_part, "cap_day": cap_day})
    capped = con.execute("SELECT count(*) FROM resolved WHERE class IN (SELECT class FROM wanted)").fetchone()[0]
    available = dict(con.execute("SELECT class, count(*) FROM eligible GROUP BY class").fetchall())
    left_out["over_cap"] = capped - sum(available.values())
    targets, shortfall = _targets(spec, available)
    con.register("targets", pa.table({"class": list(targets), "n": pa.array(list(targets.values()), pa.int64())}))
    # Drawing a class down takes each day's first image (by hash), then each day's second...: spread evenly.
    con.execute(
        """CREATE TEMP TABLE selected AS
           SELECT e.* FROM eligible e JOIN targets t USING (class)
           QUALIFY row_number() OVER (PARTITION BY e.class ORDER BY e.day_rank, e.k) <= t.n""")
    shares = spec.split.shares()
    # A part's stratum is its rarest selected class, so that each split gets its share of the rare defects.
    con.execute(
        """CREATE TEMP TABLE part_split AS
           WITH totals AS (SELECT class, count(*) AS n FROM selected GROUP BY class),
           strata AS (
               SELECT s.part_id, arg_min(s.class, lpad(t.n::VARCHAR, 20, '0') || s.class) AS stratum
               FROM selected s JOIN totals t USING (class) GROUP BY s.part_id),
           ranked AS (
               SELECT part_id,
                      (row_number() OVER (PARTITION BY stratum ORDER BY md5($seed || ':part:' || part_id)) - 0.5)
                      / count(*) OVER (PARTITION BY stratum) AS u
               FROM strata)
           SELECT part_id, CASE WHEN u < $train THEN 'train' WHEN u < $train + $validation THEN 'validation'
                                ELSE 'test' END AS split
           FROM ranked""",
        {"seed": seed, "train": shares["train"], "validation": shares["validation"]})
    weights = _weights(dict((c, (n_train, n)) for c, n_train, n in con.execute(
        "SELECT class, count(*) FILTER (WHERE split = 'train'), count(*) FROM selected JOIN part_split USING (part_id)"
        " GROUP BY class").fetchall()))
    con.register("weights", pa.table({"class": list(weights), "weight": pa.array(list(weights.values()))}))
    manifest = con.sql(
        """SELECT s.sha256, s.class, p.split, w.weight, s.part_id, s.day, s.line, s.station, s.camera,
                  s.captured_at, s.mask_uri, s.regions
           FROM selected s JOIN part_split p USING (part_id) JOIN weights w USING (class)
           ORDER BY s.sha256""").to_arrow_table().cast(MANIFEST_SCHEMA)
    return DatasetVersion(spec=spec, position=position, ontology_version=ontology_version, manifest=manifest,
                          counts=_counts(con), shortfall=shortfall, left_out=left_out)


def _targets(spec: DatasetSpec, available: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """How many images each class gets, and how many it lacked to meet the spec."""
    sampling = spec.sampling
    if sampling.counts is not None:
        wanted = {c: available.get(c, 0) if n == "all" else n for c, n in sampling.counts.items()}
    else:
        shares = sampling.proportions or {}
        total = sampling.total
        if total is None:  # the largest total the scarcest class allows
            total = min(int(available.get(c, 0) / p) for c, p in shares.items())
        wanted = _apportion(total, shares)
    targets = {c: min(n, available.get(c, 0)) for c, n in sorted(wanted.items())}
    shortfall = {c: wanted[c] - targets[c] for c in targets if wanted[c] > targets[c]}
    return targets, shortfall


def _apportion(total: int, shares: dict[str, float]) -> dict[str, int]:
    """``total`` divided in proportion to ``shares`` in whole images (largest remainders, ties by name)."""
    exact = {c: total * p for c, p in shares.items()}
    counts = {c: int(x) for c, x in exact.items()}
    for c in sorted(exact, key=lambda c: (counts[c] - exact[c], c))[: total - sum(counts.values())]:
        counts[c] += 1
    return counts


def _weights(counts: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Inverse class frequency in the training split, scaled so that a balanced set has weight 1. A class
    with no training image (all its few parts drawn into other splits) is weighed by its share overall."""
    train = {c: n for c, (n, _) in counts.items() if n}
    total = sum(train.values()) or sum(n for _, n in counts.values())
    present = len(train) or len(counts)
    return {c: total / (present * (n_train or n)) for c, (n_train, n) in counts.items()}


def _counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    counts = {"images": 0, "parts": 0} | dict.fromkeys(SPLITS, 0)
    rows = con.execute("SELECT p.split, s.class, count(*) FROM selected s JOIN part_split p USING (part_id)"
                       " GROUP BY ALL ORDER BY ALL").fetchall()
    for split, cls, n in rows:
        counts["images"] += n
        counts[split] += n
        counts[cls] = counts.get(cls, 0) + n
        counts[f"{split}/{cls}"] = n
    counts["parts"] = con.execute("SELECT count(*) FROM part_split").fetchone()[0]
    for split in SPLITS:
        counts[f"{split}/parts"] = con.execute("SELECT count(*) FROM part_split WHERE split = $s",
                                               {"s": split}).fetchone()[0]
    return counts
