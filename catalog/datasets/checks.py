"""What must hold of any dataset version, checked against the manifest and the catalog: no part in two
splits, class shares as the spec asked, no image newer than the position, no excluded image. Dagster runs
them as asset checks; anyone can run them on a published manifest."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import psycopg
import pyarrow as pa

from catalog.datasets.spec import DatasetSpec

if TYPE_CHECKING:
    from catalog import Catalog

EXAMPLES = 10  # offending rows listed in a failed check's details


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    detail: str
    metadata: dict[str, Any] = field(default_factory=dict)


def check_manifest(cat: Catalog, manifest: pa.Table, spec: DatasetSpec, position: int) -> list[CheckOutcome]:
    return [
        check_no_part_in_two_splits(manifest),
        check_class_proportions(manifest, spec),
        *check_against_catalog(cat, manifest, position),
    ]


def check_no_part_in_two_splits(manifest: pa.Table) -> CheckOutcome:
    con = duckdb.connect()
    con.register("manifest", manifest)
    leaks = con.execute("SELECT part_id, list(DISTINCT split ORDER BY split) FROM manifest GROUP BY part_id"
                        " HAVING count(DISTINCT split) > 1 ORDER BY part_id").fetchall()
    if leaks:
        return CheckOutcome("no_part_in_two_splits", False, f"{len(leaks)} parts have images in more than one split",
                            {"parts": [f"{p}: {', '.join(s)}" for p, s in leaks[:EXAMPLES]]})
    return CheckOutcome("no_part_in_two_splits", True, "every part lies in one split")


def check_class_proportions(manifest: pa.Table, spec: DatasetSpec) -> CheckOutcome:
    """Each class's share within ``sampling.tolerance`` of its target share; for counts, exactly its count."""
    sampling = spec.sampling
    counts = dict(zip(*_value_counts(manifest, "class"), strict=True))
    total = sum(counts.values())
    shares = {c: (counts.get(c, 0) / total if total else 0.0) for c in sampling.classes}
    if sampling.proportions is not None:
        off = {c: (shares[c], p) for c, p in sampling.proportions.items() if abs(shares[c] - p) > sampling.tolerance}
        if sampling.total is not None and total != sampling.total:
            off["total"] = (total, sampling.total)
        detail = ", ".join(f"{c} {got:.3f} for {want:.3f}" if c != "total" else f"total {got} for {want}"
                           for c, (got, want) in off.items())
    else:
        off = {c: (counts.get(c, 0), n) for c, n in (sampling.counts or {}).items() if n != "all" and counts.get(c, 0) != n}
        detail = ", ".join(f"{c} {got} for {want}" for c, (got, want) in off.items())
    metadata = {"counts": counts, "shares": {c: round(s, 4) for c, s in shares.items()}}
    if off:
        return CheckOutcome("class_proportions", False, f"outside the spec (tolerance {sampling.tolerance}): {detail}",
                            metadata)
    return CheckOutcome("class_proportions", True, "class shares as the spec asks", metadata)


def _value_counts(table: pa.Table, column: str) -> tuple[list[str], list[int]]:
    counted = table.column(column).value_counts().to_pylist()
    return [c["values"] for c in counted], [c["counts"] for c in counted]


def check_against_catalog(cat: Catalog, manifest: pa.Table, position: int) -> list[CheckOutcome]:
    """The manifest's images as the catalog saw them at ``position``: each ingested by then and not excluded
    then. Images excluded since are reported, not failed: the version was right at its position."""
    with cat.read() as sa_conn:
        conn: psycopg.Connection = sa_conn.connection.driver_connection
        conn.execute("CREATE TEMP TABLE manifest_images (sha256 text PRIMARY KEY) ON COMMIT DROP")
        buffer = io.StringIO("".join(f"{sha}\n" for sha in manifest.column("sha256").to_pylist()))
        with conn.cursor().copy("COPY manifest_images (sha256) FROM STDIN") as copy:
            copy.write(buffer.getvalue())
        newer = conn.execute(
            "SELECT m.sha256, i.ingested_position FROM manifest_images m"
            " LEFT JOIN projections.images i USING (sha256)"
            " WHERE i.sha256 IS NULL OR i.ingested_position > %(p)s ORDER BY m.sha256", {"p": position}).fetchall()
        excluded = conn.execute(
            "SELECT m.sha256, c.position, c.reason FROM manifest_images m"
            " JOIN LATERAL (SELECT h.excluded, h.position, h.reason FROM projections.curation_history h"
            "   WHERE h.sha256 = m.sha256 AND h.position <= %(p)s ORDER BY h.position DESC LIMIT 1) c ON true"
            " WHERE c.excluded ORDER BY m.sha256", {"p": position}).fetchall()
        excluded_since = conn.execute(
            "SELECT count(*) FROM manifest_images m JOIN projections.images i USING (sha256) WHERE i.excluded"
        ).fetchone()[0] - len(excluded)
        sa_conn.rollback()
    outcomes = []
    if newer:
        outcomes.append(CheckOutcome(
            "no_image_newer_than_position", False,
            f"{len(newer)} images were not in the catalog at position {position}",
            {"images": [f"{sha[:12]}… ingested at {p if p is not None else 'never'}" for sha, p in newer[:EXAMPLES]]}))
    else:
        outcomes.append(CheckOutcome("no_image_newer_than_position", True,
                                     f"every image was ingested by position {position}"))
    if excluded:
        outcomes.append(CheckOutcome(
            "no_excluded_image", False, f"{len(excluded)} images were excluded at position {position}",
            {"images": [f"{sha[:12]}… excluded at {p}: {r}" for sha, p, r in excluded[:EXAMPLES]]}))
    else:
        outcomes.append(CheckOutcome("no_excluded_image", True, f"no image was excluded at position {position}",
                                     {"excluded_since": excluded_since}))
    return outcomes
