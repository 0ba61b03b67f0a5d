"""Dagster's own run and event storage: the instance beside the catalog (``<VISIONLEDGER_HOME>/dagster``,
local files as ``dagster.yaml`` says, where `make dagster` opens the UI and the demo records its runs). Its
variant on the catalog's PostgreSQL server (``dagster.postgres.yaml``) gets its URL from
`catalog.database.dagster_database_url`."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
from dagster._core.instance import InstanceRef  # among Dagster's documented internals

from catalog.settings import Settings

INSTANCE_CONFIG = Path(__file__).resolve().parents[1] / "dagster.yaml"


def instance_home(settings: Settings) -> Path:
    """The Dagster instance's folder (its ``DAGSTER_HOME``) beside the catalog of ``settings``."""
    return settings.home / "dagster"


def local_instance(settings: Settings) -> dg.DagsterInstance:
    """The persistent Dagster instance beside the catalog, for runs in this process (the demo's), created
    with the repository's ``dagster.yaml`` when missing; a ``dagster.yaml`` already there (the PostgreSQL
    variant, say) is kept. Close it when done.

    Its runs leave this process's stdout and stderr alone: capturing them would redirect the caller's own
    console through two `tail` and two watcher processes a run, late and dear on a small machine, and the
    assets' log lines are in the event log anyway."""
    home = instance_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(INSTANCE_CONFIG, home / "dagster.yaml")
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides={"compute_logs": {
        "module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}}))
