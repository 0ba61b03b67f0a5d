"""What the trace of a part needs of a published dataset version, kept when the version is published so that
each trace reads it by key (`catalog.datasets.facts`): the split and class of every image of its manifest, and
per class who labelled its training images as of the version's position.

They are facts of a manifest, named by its hash, and never change: the writers' group may select and insert,
readers select, nobody updates or deletes. They live beside the log rather than among the read models because
no event carries them (they come from the manifest in the lake) and a rebuild of the read models must keep them.

Revision ID: 0016
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TABLES = ("manifests", "manifest_members", "manifest_class_labels")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE catalog.manifests (
            manifest_id    integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            manifest_hash  text NOT NULL UNIQUE CHECK (manifest_hash ~ '^[0-9a-f]{64}$'),
            as_of_position bigint NOT NULL
        )
        """
    )
    # A small key rather than the 64-character hash on each of a million members.
    op.execute(
        """
        CREATE TABLE catalog.manifest_members (
            manifest_id integer NOT NULL,
            sha256      text NOT NULL,
            split       text NOT NULL,
            class       text NOT NULL,
            PRIMARY KEY (manifest_id, sha256)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE catalog.manifest_class_labels (
            manifest_id     integer NOT NULL,
            class           text NOT NULL,
            training_images integer NOT NULL,
            annotators      jsonb NOT NULL,
            examples        jsonb NOT NULL,
            PRIMARY KEY (manifest_id, class)
        )
        """
    )
    for table in TABLES:
        op.execute(f"REVOKE ALL ON catalog.{table} FROM PUBLIC")
        op.execute(f"GRANT SELECT, INSERT ON catalog.{table} TO visionledger_writer")
        op.execute(f"GRANT SELECT ON catalog.{table} TO visionledger_reader")


def downgrade() -> None:
    for table in reversed(TABLES):
        op.execute(f"DROP TABLE catalog.{table}")
