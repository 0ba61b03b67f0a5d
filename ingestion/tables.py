"""Reading the CSV files a curator receives (manifests, labels, corrections) under canonical column names,
with a ``--map canonical=theirs`` for files that name their columns otherwise."""

from __future__ import annotations

import csv
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from catalog.errors import CatalogError
from catalog.events import name_problem, printable, text_problem


class TableError(CatalogError):
    """A file that cannot be read as the expected table at all (not one bad row: the whole file)."""


@dataclass(frozen=True)
class TableRow:
    number: int  # line number in the file, for messages a person can follow
    values: dict[str, str]  # canonical name -> value (stripped); unknown columns keep their own names


def parse_column_map(pairs: Sequence[str]) -> dict[str, str]:
    """``["path=file", "part_id=serial"]`` -> ``{"path": "file", "part_id": "serial"}``."""
    mapping = {}
    for pair in pairs:
        canonical, sep, theirs = pair.partition("=")
        if not sep or not canonical.strip() or not theirs.strip():
            raise TableError(f"--map {pair!r}: write it as canonical=theirs, e.g. --map captured_at=timestamp")
        mapping[canonical.strip()] = theirs.strip()
    return mapping


def read_table(path: Path, *, required: Sequence[str], one_of: Sequence[Sequence[str]] = (),
               column_map: Mapping[str, str] | None = None, known: Sequence[str] | None = None) -> Iterator[TableRow]:
    """Rows of a CSV file with canonical column names. ``required`` columns must all be present, and at
    least one column of each group in ``one_of`` (e.g. ``path`` or ``sha256``). With ``known``, a
    ``column_map`` naming another canonical column is refused (a typo would otherwise go unnoticed)."""
    unknown = sorted(set(column_map or {}) - set(known)) if known is not None else []
    if unknown:
        raise TableError(f"--map {', '.join(unknown)}: not a column of this file; the canonical columns are "
                         f"{', '.join(known)}")
    renames = {theirs: canonical for canonical, theirs in (column_map or {}).items()}
    try:
        handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed in finally
    except OSError as exc:
        raise TableError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        reader = csv.reader(handle, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise TableError(f"{path} is empty: expected a header line with {', '.join(required)}") from None
        columns = [renames.get(name.strip(), name.strip()) for name in header]
        duplicated = sorted({c for c in columns if columns.count(c) > 1})
        if duplicated:
            raise TableError(f"{path}: column(s) {', '.join(duplicated)} appear twice")
        missing = [c for c in required if c not in columns]
        missing += [" or ".join(group) for group in one_of if not any(c in columns for c in group)]
        if missing:
            hint = " (rename with --map canonical=theirs)" if not column_map else ""
            raise TableError(f"{path} lacks column(s) {', '.join(missing)}; it has {', '.join(columns)}{hint}")
        for values in reader:
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(columns):
                # A ragged row is reported as a row with missing fields rather than guessed at.
                values = (values + [""] * len(columns))[: len(columns)]
            yield TableRow(reader.line_num, {c: v.strip() for c, v in zip(columns, values, strict=True)})
    except csv.Error as exc:
        raise TableError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    finally:
        handle.close()


def field_problem(values: Mapping[str, str], *, names: Collection[str]) -> str | None:
    """Why a row cannot be stored as it is, naming the first field at fault, or None. The ``names`` columns are
    identifiers (a part, a line, a label id: no control character, at most MAX_NAME_LENGTH characters); every
    other column is free text (line breaks and tabs allowed)."""
    for column, value in values.items():
        if (problem := name_problem(column)) is not None:
            return f"the column name {printable(column, 80)!r} {problem}"
        if (problem := (name_problem if column in names else text_problem)(value)) is not None:
            return f"{column} {problem}"
    return None


def parse_aware_timestamp(value: str) -> datetime:
    """An ISO 8601 timestamp with a UTC offset; a naive or unparseable one is refused, never guessed."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset (write e.g. 2026-03-02T08:15:00+01:00)")
    return moment
