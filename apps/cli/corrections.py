"""Commands over human corrections of labels: importing a corrections CSV."""

from __future__ import annotations

import click

from apps.cli.labels import import_command
from identity.roles import Action
from identity.signatures import Meaning
from ingestion.labels import import_corrections


@click.group()
def corrections() -> None:
    """Human corrections of labels, each checked against the label it corrects, signed by who reviewed them."""


import_command(corrections, import_corrections, "corrections",
               "Rows apply in order; a row whose old_label is not the image's current label is a conflict. ",
               signed=(Meaning.REVIEWED, Action.LABEL))
