"""The lineage read model of inference engines: each built engine's model, ONNX file, dataset version,
manifest hash, backend, precision, device and artifact.

Revision ID: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SCHEMAS = ("projections", "projections_scratch")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    for schema in SCHEMAS:
        op.create_table(
            "engines",
            sa.Column("engine_id", sa.Text, primary_key=True),
            sa.Column("model", sa.Text, nullable=False),
            sa.Column("model_id", sa.Text, nullable=False),
            sa.Column("onnx_sha256", sa.Text, nullable=False),
            sa.Column("dataset_version_id", sa.Text, nullable=False),
            sa.Column("manifest_hash", sa.Text, nullable=False),
            sa.Column("backend", sa.Text, nullable=False),
            sa.Column("precision", sa.Text, nullable=False),
            sa.Column("device", sa.Text, nullable=False),
            sa.Column("library_versions", JSONB, nullable=False),
            sa.Column("artifact_uri", sa.Text, nullable=False),
            sa.Column("built_at", TS, nullable=False),
            sa.Column("position", sa.BigInteger, nullable=False),
            schema=schema,
        )
        # The engine in service is the newest built from the champion model.
        op.create_index("engines_model_id", "engines", ["model_id", "position"], schema=schema)
        op.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {schema}.engines TO visionledger_writer")
        op.execute(f"GRANT SELECT ON {schema}.engines TO visionledger_reader")


def downgrade() -> None:
    for schema in SCHEMAS:
        op.drop_table("engines", schema=schema)
