"""The Dagster resources: the catalog, the lake and LanceDB, configured from the same settings as the CLI
(``VISIONLEDGER_HOME``, ``VISIONLEDGER_DATABASE_URL``; see catalog.settings). A field left empty falls back
to the environment, so `dagster dev` and `visionledger` look at the same catalog."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import dagster as dg

import catalog
from catalog.lake import Lake
from catalog.settings import Settings


class CatalogResource(dg.ConfigurableResource):
    """The catalog's event store and projections (the embedded PostgreSQL unless a URL is given)."""

    home: str | None = None
    database_url: str | None = None

    def settings(self) -> Settings:
        settings = Settings.from_env()
        if self.home:
            settings = replace(settings, home=Path(self.home).expanduser().resolve())
        if self.database_url:
            settings = replace(settings, database_url=self.database_url)
        return settings

    @contextmanager
    def open(self, role: str = "app") -> Iterator[catalog.Catalog]:
        cat = catalog.open(self.settings(), role=role)
        try:
            yield cat
        finally:
            cat.close()


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake: the event mirror, dataset manifests, breakdowns and drift tables."""

    root: str | None = None

    @property
    def lake(self) -> Lake:
        return Lake(Path(self.root) if self.root else Settings.from_env().lake_root)


class LanceDBResource(dg.ConfigurableResource):
    """The LanceDB directory that holds one embeddings table per model."""

    uri: str | None = None

    def location(self) -> str:
        return self.uri or str(Settings.from_env().home / "lancedb")

    def connect(self):
        import lancedb  # noqa: PLC0415 - LanceDB loads a large native library; only embedding assets need it

        return lancedb.connect(self.location())
