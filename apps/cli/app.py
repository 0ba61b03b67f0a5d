"""`visionledger app`: the Streamlit app over this catalog, as a role."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from apps.cli.common import console
from apps.ui.roles import ROLES

APP = Path(__file__).resolve().parents[1] / "ui" / "app.py"


@click.command()
@click.option("--role", type=click.Choice(list(ROLES)), default="auditor", show_default=True,
              help="what the viewer may do; analysts and auditors read through read-only database logins")
@click.option("--user", default=lambda: os.environ.get("USER", "anonymous"), show_default="$USER",
              help="the viewer's name, recorded as the actor of every event they cause")
@click.option("--port", default=8501, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
def app(role: str, user: str, port: int, host: str) -> None:
    """Open the Streamlit app (Overview, Curate, Review, Day, Performance, Trace, Lineage) on this catalog."""
    env = {**os.environ, "VISIONLEDGER_ROLE": role, "VISIONLEDGER_USER": user}
    console.print(f"visionledger app for {user} ({role}) on http://{host}:{port}")
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
               "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "viewer"]  # no "Deploy" button: this app is deployed already
    raise SystemExit(subprocess.call(command, env=env))
