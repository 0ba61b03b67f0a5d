"""The lineage read model of dataset versions: each published version's spec, position, counts and manifest.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMAS = ("projections", "projections_scratch")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    for schema in SCHEMAS:
        op.create_table(
            "dataset_versions",
            sa.Column("version_id", sa.Text, primary_key=True),
            sa.Column("dataset", sa.Text, nullable=False),
            sa.Column("spec", JSONB, nullable=False),
            sa.Column("as_of_position", sa.BigInteger, nullable=False),
            sa.Column("counts", JSONB, nullable=False),
            sa.Column("manifest_hash", sa.Text, nullable=False),
            sa.Column("manifest_uri", sa.Text, nullable=False),
            sa.Column("published_at", TS, nullable=False),
            sa.Column("position", sa.BigInteger, nullable=False),
            schema=schema,
        )
        op.create_index("dataset_versions_dataset", "dataset_versions", ["dataset", "position"], schema=schema)
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {schema}.dataset_versions TO visionledger_writer")
        op.execute(f"GRANT SELECT ON {schema}.dataset_versions TO visionledger_reader")


def downgrade() -> None:
    for schema in SCHEMAS:
        op.drop_table("dataset_versions", schema=schema)
