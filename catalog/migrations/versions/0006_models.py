"""Lineage read models of the learn loop: models (registration, ONNX export, evaluation, promotion) and the
regression replays that decided promotions.

Revision ID: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMAS = ("projections", "projections_scratch")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    for schema in SCHEMAS:
        op.create_table(
            "models",
            sa.Column("model_id", sa.Text, primary_key=True),
            sa.Column("model", sa.Text, nullable=False),
            sa.Column("dataset_version_id", sa.Text, nullable=False),
            sa.Column("manifest_hash", sa.Text, nullable=False),
            sa.Column("hyperparameters", JSONB, nullable=False),
            sa.Column("metrics", JSONB, nullable=False),
            sa.Column("artifact_sha256", sa.Text, nullable=False),
            sa.Column("artifact_uri", sa.Text, nullable=False),
            sa.Column("onnx_sha256", sa.Text),
            sa.Column("onnx_uri", sa.Text),
            sa.Column("evaluation", JSONB),  # {split, metrics, threshold, cost_ratio, report_uri}
            sa.Column("registered_at", TS, nullable=False),
            sa.Column("promoted_at", TS),
            sa.Column("position", sa.BigInteger, nullable=False),
            schema=schema,
        )
        op.create_index("models_model", "models", ["model", "registered_at"], schema=schema)
        op.create_table(
            "regression_replays",
            sa.Column("position", sa.BigInteger, primary_key=True),
            sa.Column("model", sa.Text, nullable=False),
            sa.Column("candidate_model_id", sa.Text, nullable=False),
            sa.Column("champion_model_id", sa.Text),
            sa.Column("passed", sa.Boolean, nullable=False),
            sa.Column("images", sa.Integer, nullable=False),
            sa.Column("summary", JSONB, nullable=False),
            sa.Column("report_uri", sa.Text, nullable=False),
            sa.Column("replayed_at", TS, nullable=False),
            schema=schema,
        )
        op.create_table(
            "model_promotions",
            sa.Column("position", sa.BigInteger, primary_key=True),
            sa.Column("model", sa.Text, nullable=False),
            sa.Column("model_id", sa.Text, nullable=False),
            sa.Column("previous_model_id", sa.Text),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("promoted_at", TS, nullable=False),
            schema=schema,
        )
        op.create_index("model_promotions_model", "model_promotions", ["model", "position"], schema=schema)
        for table in ("models", "regression_replays", "model_promotions"):
            op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {schema}.{table} TO visionledger_writer")
            op.execute(f"GRANT SELECT ON {schema}.{table} TO visionledger_reader")


def downgrade() -> None:
    for schema in SCHEMAS:
        for table in ("model_promotions", "regression_replays", "models"):
            op.drop_table(table, schema=schema)
