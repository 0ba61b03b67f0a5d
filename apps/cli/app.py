"""`visionledger app`: the Streamlit app over this catalog. People log in with their own accounts
(`visionledger users add`); `--dev-as ROLE:USER` turns the login off, for development only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from apps.cli.common import console
from apps.ui.roles import DEV_VIEWER, ROLES, RoleError, dev_viewer

APP = Path(__file__).resolve().parents[1] / "ui" / "app.py"


@click.command()
@click.option("--dev-as", metavar="ROLE:USER", default=None,
              help="DEVELOPMENT ONLY: no login; anyone reaching the port acts as USER with ROLE "
                   f"({', '.join(ROLES)}), and the app shows the details of its errors")
@click.option("--port", default=8501, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
def app(dev_as: str | None, port: int, host: str) -> None:
    """Open the Streamlit app (Overview, Curate, Review, Day, Performance, Trace, Lineage) on this catalog.
    Each person logs in with their account (`visionledger users add`); sessions end after 30 idle minutes or
    12 hours (VISIONLEDGER_SESSION_IDLE_MINUTES, VISIONLEDGER_SESSION_MAX_HOURS)."""
    env = {key: value for key, value in os.environ.items() if key != DEV_VIEWER}
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
               "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "viewer"]  # no "Deploy" button: this app is deployed already
    if dev_as:
        env[DEV_VIEWER] = dev_as
        command += ["--client.showErrorDetails", "full"]  # apps/ui/.streamlit/config.toml hides them otherwise
        try:
            who = dev_viewer(env)
        except RoleError as exc:
            raise click.BadParameter(str(exc), param_hint="--dev-as") from None
        console.print(f"[bold red]DEVELOPMENT MODE: no login. Anyone who reaches http://{host}:{port} acts as "
                      f"{who.name} ({who.role}), and their events name {who.actor}. Never run it this way where "
                      "anyone else can connect.[/]")
    else:
        console.print(f"visionledger app on http://{host}:{port} (log in with a `visionledger users` account)")
    raise SystemExit(subprocess.call(command, env=env))
