"""`visionledger datasets build|list` against a real catalog."""

from __future__ import annotations

import json
from pathlib import Path

from tests.builders import run_cli

SPECS = Path(__file__).resolve().parents[2] / "assets" / "dataset_specs"


def test_build_publishes_once_and_lists_the_version(factory_cat, database):
    env = database.env()
    first = json.loads(run_cli("datasets", "build", str(SPECS / "inspection_all.yaml"), "--json", env=env).stdout)
    assert first["version_id"].startswith("inspection-all-") and not first["already_published"]
    assert all(c["passed"] for c in first["checks"].values())
    assert Path(first["manifest"]).is_file()
    again = json.loads(run_cli("datasets", "build", str(SPECS / "inspection_all.yaml"), "--json", env=env).stdout)
    assert again["already_published"] and again["version_id"] == first["version_id"]
    listed = run_cli("datasets", "list", env=env).stdout
    assert first["version_id"] in listed


def test_a_bad_spec_is_refused_with_the_field_named(factory_cat, database, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nsampling:\n  proportions: {ok: 0.5, crack: 0.2}\n")
    result = run_cli("datasets", "build", str(spec), env=database.env(), check=False)
    assert result.returncode == 1
    assert "sampling: Value error, sampling.proportions must add up to 1, not 0.7" in result.stderr
    assert "Traceback" not in result.stderr
