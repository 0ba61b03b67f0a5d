"""The high-volume read models as SQL over a range of the log, so that their events never travel through Python.

Images, their sightings, parts, current labels, label history, latest predictions and part dispositions hold a
row per ImageIngested, LabelRecorded, PredictionRecorded or PartDispositioned, the bulk of the log. For them a
page of the log, positions ``(after, upto]``, is folded by the statements below, run in the page's
transaction on the server. The Python folds in `read_models` stay their specification: a test folds the same
generated log both ways and compares every row (`tests/catalog/test_set_based_read_models.py`).

Order. A Python fold applies a page's events one by one in position order; a statement here sees the page at
once, so it says what that order leaves standing. Each row is the outcome of its key's events, and every
column is decided by the latest (highest position) event of the kind that writes it: the latest verdict sets
an image's label, the latest exclusion or inclusion its curation, its first ingestion its capture facts, and
the number of ingestions its sightings. One sort of the page by key and position serves a window over each
key's events (`_latest` of each kind) and the ``DISTINCT ON (key)`` that keeps one row per key. The
low-volume events that share these rows (ImageExcluded, ImageIncluded, CorrectionRecorded) are folded by the
same statements, so they take their place among the bulk ones by position without splitting a page. One
rule depends on the row as it stood before the page: curation and verdicts of an image not yet ingested
change nothing, so for an image new to the table only its events after its first ingestion count.

Schema versions. The statements read payloads at the versions in `SQL_READS`. The runner
(`runner.ProjectionRunner`) surveys each page first (the type and schema version of its events, no
payloads): a page holding an event of another version (an old one, lifted by its upcasters in Python) is
folded in Python by the read models that fold its type, and so is every page while `SQL_READS` lags behind
the code's current version. Any page can be folded in Python instead, wherever it was read from.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql

from catalog.events import event_class

# The schema version of each event type whose payload the statements below read (a test holds it to the
# code's current versions: raising a version means revisiting the SQL that reads that type).
SQL_READS: dict[str, int] = {
    "ImageIngested": 1, "ImageExcluded": 1, "ImageIncluded": 1, "LabelRecorded": 1, "CorrectionRecorded": 1,
    "PredictionRecorded": 1, "PartDispositioned": 1,
}

# Each read model's server time on the same pages of the synthetic factory's log (seconds for 200,000 events,
# bench/bench_projections.py): how `ProjectionRunner.catch_up` spreads them over several connections.
SERVER_TIME: dict[str, float] = {
    "images": 1.77, "image_sightings": 0.75, "current_labels": 0.67, "latest_predictions": 0.60,
    "label_history": 0.47, "parts": 0.33, "part_dispositions": 0.17,
}


def folds_in_sql(types: Iterable[str], kinds_in_page: Iterable[tuple[str, int]]) -> bool:
    """Whether the SQL folds a page for a read model of event ``types``: it reads each type's current version
    and the page holds no event of those types at any other (``kinds_in_page``: the type and schema version of
    each kind of event in the page)."""
    types = set(types)
    if any(SQL_READS.get(t) != event_class(t).schema_version for t in types):
        return False
    return all(SQL_READS[t] == v for t, v in kinds_in_page if t in types)


def _page(*types: str, columns: str = "position, type, payload, occurred_at") -> str:
    """The page's events of ``types`` (``%(after)s`` and ``%(upto)s`` bound its positions)."""
    listed = ", ".join(f"'{t}'" for t in types)
    return (f"SELECT {columns} FROM catalog.events"
            f" WHERE position > %(after)s AND position <= %(upto)s AND type IN ({listed})")


_LABEL = "CASE type WHEN 'LabelRecorded' THEN payload->>'label' ELSE payload->>'new_label' END"
_CAPTURED = "(payload->>'captured_at')::timestamptz"

IMAGE_SIGHTINGS = (
    "INSERT INTO {table} (position, sha256, source_path, part_id, line, station, camera, captured_at)"
    " SELECT position, payload->>'sha256', payload->>'source_path', payload->>'part_id', payload->>'line',"
    f" payload->>'station', payload->>'camera', {_CAPTURED}"
    f" FROM ({_page('ImageIngested')}) page",
)

_CURATION = "type IN ('ImageExcluded', 'ImageIncluded')"
_VERDICT = "type IN ('LabelRecorded', 'CorrectionRecorded')"


def _whole(key: str, order: str) -> str:
    """A window over all the page's events of one ``key``, in ``order``: one sort of the page serves every
    aggregate over it and the DISTINCT ON that keeps one row per key."""
    return f"(PARTITION BY {key} ORDER BY {order} ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"


def _latest(value: str, among: str) -> str:
    """``value`` of the image's latest event among those ``among`` picks (NULL if none), over ``newest_first``."""
    return f"(array_agg({value}) FILTER (WHERE {among}) OVER newest_first)[1]"


# An image new to the table comes into being at its first ingestion: its curation and verdict count only when
# they come after it (``…_at``, the position of the latest); an image already in the table takes them all.
IMAGES = (
    f"""
    MERGE INTO {{table}} i
    USING (
        SELECT *, ingested[cardinality(ingested)] AS first FROM (  -- newest first: the first ingestion is last
            SELECT DISTINCT ON (sha256) sha256, position AS last_position,
                   array_agg(payload) FILTER (WHERE type = 'ImageIngested') OVER newest_first AS ingested,
                   min(position) FILTER (WHERE type = 'ImageIngested') OVER newest_first AS first_position,
                   max(position) FILTER (WHERE {_CURATION}) OVER newest_first AS curated_at,
                   {_latest("type = 'ImageExcluded'", _CURATION)} AS excluded,
                   {_latest("CASE type WHEN 'ImageExcluded' THEN payload->>'reason' END", _CURATION)} AS reason,
                   max(position) FILTER (WHERE {_VERDICT}) OVER newest_first AS verdict_at,
                   {_latest(_LABEL, _VERDICT)} AS label,
                   {_latest("(payload->>'ontology_version')::int", _VERDICT)} AS ontology_version
            FROM ({_page('ImageIngested', 'ImageExcluded', 'ImageIncluded', 'LabelRecorded', 'CorrectionRecorded',
                         columns="position, type, payload, payload->>'sha256' AS sha256")}) page
            WINDOW newest_first AS {_whole('sha256', 'position DESC')}
            ORDER BY sha256, position DESC
        ) image
    ) s ON i.sha256 = s.sha256
    WHEN MATCHED THEN UPDATE SET
        sightings = i.sightings + coalesce(cardinality(s.ingested), 0),
        excluded = coalesce(s.excluded, i.excluded),
        exclusion_reason = CASE WHEN s.excluded IS NULL THEN i.exclusion_reason ELSE s.reason END,
        label = coalesce(s.label, i.label),
        label_ontology_version = coalesce(s.ontology_version, i.label_ontology_version),
        last_position = s.last_position
    WHEN NOT MATCHED AND s.first_position IS NOT NULL THEN INSERT (
        sha256, part_id, line, station, camera, captured_at, width, height, channels, bit_depth, byte_size,
        blob_uri, thumbnail_uri, source_path, metadata, sightings, excluded, exclusion_reason, ingested_position,
        last_position, label, label_ontology_version
    ) VALUES (
        s.sha256, s.first->>'part_id', s.first->>'line', s.first->>'station', s.first->>'camera',
        (s.first->>'captured_at')::timestamptz, (s.first->>'width')::int, (s.first->>'height')::int,
        (s.first->>'channels')::int, (s.first->>'bit_depth')::int, (s.first->>'byte_size')::bigint,
        s.first->>'blob_uri', s.first->>'thumbnail_uri', s.first->>'source_path',
        coalesce(s.first->'metadata', jsonb_build_object()), cardinality(s.ingested),
        coalesce(s.curated_at > s.first_position AND s.excluded, false),
        CASE WHEN s.curated_at > s.first_position THEN s.reason END,
        s.first_position, s.last_position,
        CASE WHEN s.verdict_at > s.first_position THEN s.label END,
        CASE WHEN s.verdict_at > s.first_position THEN s.ontology_version END
    )
    """,
)

# A part's line is the one its first sighting names.
PARTS = (
    f"""
    INSERT INTO {{table}} AS p (part_id, line, first_captured_at, last_captured_at, image_count, last_position)
    SELECT DISTINCT ON (part_id) part_id, payload->>'line', min(captured_at) OVER oldest_first,
           max(captured_at) OVER oldest_first, count(*) OVER oldest_first, max(position) OVER oldest_first
    FROM (SELECT position, payload, payload->>'part_id' AS part_id, {_CAPTURED} AS captured_at
          FROM ({_page('ImageIngested')}) e) page
    WINDOW oldest_first AS {_whole('part_id', 'position')}
    ORDER BY part_id, position
    ON CONFLICT (part_id) DO UPDATE SET
        first_captured_at = least(p.first_captured_at, EXCLUDED.first_captured_at),
        last_captured_at = greatest(p.last_captured_at, EXCLUDED.last_captured_at),
        image_count = p.image_count + EXCLUDED.image_count, last_position = EXCLUDED.last_position
    """,
)

# The latest verdict sets the label; a correction keeps the label id it does not name and the regions and mask
# of the latest label before it.
CURRENT_LABELS = (
    f"""
    MERGE INTO {{table}} c
    USING (
        SELECT DISTINCT ON (sha256) sha256, {_LABEL} AS label,
               {_latest("payload->>'label_id'", "payload->>'label_id' IS NOT NULL")} AS label_id,
               CASE type WHEN 'LabelRecorded' THEN payload->>'annotator' ELSE payload->>'corrected_by' END AS annotator,
               (payload->>'ontology_version')::int AS ontology_version,
               CASE type WHEN 'LabelRecorded' THEN 'label' ELSE 'correction' END AS source,
               bool_or(type = 'LabelRecorded') OVER newest_first AS drawn,
               {_latest("coalesce(payload->'regions', jsonb_build_array())", "type = 'LabelRecorded'")} AS regions,
               {_latest("payload->>'mask_uri'", "type = 'LabelRecorded'")} AS mask_uri,
               occurred_at AS labeled_at, position
        FROM ({_page('LabelRecorded', 'CorrectionRecorded',
                     columns="position, type, payload, occurred_at, payload->>'sha256' AS sha256")}) page
        WINDOW newest_first AS {_whole('sha256', 'position DESC')}
        ORDER BY sha256, position DESC
    ) s ON c.sha256 = s.sha256
    WHEN MATCHED THEN UPDATE SET
        label = s.label, label_id = coalesce(s.label_id, c.label_id), annotator = s.annotator,
        ontology_version = s.ontology_version, source = s.source,
        regions = CASE WHEN s.drawn THEN s.regions ELSE c.regions END,
        mask_uri = CASE WHEN s.drawn THEN s.mask_uri ELSE c.mask_uri END,
        labeled_at = s.labeled_at, position = s.position
    WHEN NOT MATCHED THEN INSERT (
        sha256, label, label_id, annotator, ontology_version, source, regions, mask_uri, labeled_at, position
    ) VALUES (
        s.sha256, s.label, s.label_id, s.annotator, s.ontology_version, s.source,
        coalesce(s.regions, jsonb_build_array()), s.mask_uri, s.labeled_at, s.position
    )
    """,
)

LABEL_HISTORY = (
    "INSERT INTO {table} (position, sha256, label, label_id, annotator, ontology_version, source, regions, mask_uri,"
    " labeled_at)"
    f" SELECT position, payload->>'sha256', {_LABEL}, payload->>'label_id',"
    " CASE type WHEN 'LabelRecorded' THEN payload->>'annotator' ELSE payload->>'corrected_by' END,"
    " (payload->>'ontology_version')::int,"
    " CASE type WHEN 'LabelRecorded' THEN 'label' ELSE 'correction' END,"
    " CASE type WHEN 'LabelRecorded' THEN coalesce(payload->'regions', jsonb_build_array()) END,"
    " CASE type WHEN 'LabelRecorded' THEN payload->>'mask_uri' END, occurred_at"
    f" FROM ({_page('LabelRecorded', 'CorrectionRecorded')}) page",
)

# The prediction that happened last stands (a replay of history may be logged after newer live predictions);
# between two of the same moment, the later logged, as the fold's "replace unless strictly newer" leaves it.
LATEST_PREDICTIONS = (
    "INSERT INTO {table} AS l (sha256, engine_id, predicted_class, scores, part_id, heatmap_uri, predicted_at, position)"
    " SELECT DISTINCT ON (payload->>'sha256', payload->>'engine_id') payload->>'sha256', payload->>'engine_id',"
    " payload->>'predicted_class', payload->'scores', payload->>'part_id', payload->>'heatmap_uri', occurred_at,"
    f" position FROM ({_page('PredictionRecorded')}) page"
    " ORDER BY payload->>'sha256', payload->>'engine_id', occurred_at DESC, position DESC"
    " ON CONFLICT (sha256, engine_id) DO UPDATE SET predicted_class = EXCLUDED.predicted_class,"
    " scores = EXCLUDED.scores, part_id = EXCLUDED.part_id, heatmap_uri = EXCLUDED.heatmap_uri,"
    " predicted_at = EXCLUDED.predicted_at, position = EXCLUDED.position"
    " WHERE l.predicted_at <= EXCLUDED.predicted_at",
)

PART_DISPOSITIONS = (
    "INSERT INTO {table} (part_id, decision, decided_by, decider, rule, rules_version, engine_id, decided_at, position)"
    " SELECT DISTINCT ON (payload->>'part_id') payload->>'part_id', payload->>'decision', payload->>'decided_by',"
    " payload->>'decider', payload->>'rule', payload->>'rules_version', payload->>'engine_id', occurred_at, position"
    f" FROM ({_page('PartDispositioned')}) page ORDER BY payload->>'part_id', position DESC"
    " ON CONFLICT (part_id) DO UPDATE SET decision = EXCLUDED.decision, decided_by = EXCLUDED.decided_by,"
    " decider = EXCLUDED.decider, rule = EXCLUDED.rule, rules_version = EXCLUDED.rules_version,"
    " engine_id = EXCLUDED.engine_id, decided_at = EXCLUDED.decided_at, position = EXCLUDED.position",
)


def apply(conn: psycopg.Connection, statements: tuple[str, ...], table: sql.Composable, *, after: int,
          upto: int) -> None:
    """Fold the log's events in positions ``(after, upto]`` into ``table`` with ``statements``."""
    for statement in statements:
        conn.execute(sql.SQL(statement).format(table=table), {"after": after, "upto": upto})
