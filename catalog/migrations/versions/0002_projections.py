"""Read models derived from the events, in schema ``projections``, and an identical ``projections_scratch``
schema where ``projections rebuild --check`` replays the log to compare with the live tables.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMAS = ("projections", "projections_scratch")
TS = sa.DateTime(timezone=True)


def _tables(schema: str) -> None:
    op.create_table(
        "checkpoints",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        schema=schema,
    )
    op.create_table(
        "images",
        sa.Column("sha256", sa.Text, primary_key=True),
        sa.Column("part_id", sa.Text, nullable=False),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("station", sa.Text, nullable=False),
        sa.Column("camera", sa.Text, nullable=False),
        sa.Column("captured_at", TS, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("channels", sa.Integer, nullable=False),
        sa.Column("bit_depth", sa.Integer, nullable=False),
        sa.Column("byte_size", sa.BigInteger, nullable=False),
        sa.Column("blob_uri", sa.Text, nullable=False),
        sa.Column("thumbnail_uri", sa.Text),
        sa.Column("source_path", sa.Text, nullable=False),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("sightings", sa.Integer, nullable=False),
        sa.Column("excluded", sa.Boolean, nullable=False),
        sa.Column("exclusion_reason", sa.Text),
        sa.Column("ingested_position", sa.BigInteger, nullable=False),
        sa.Column("last_position", sa.BigInteger, nullable=False),
        schema=schema,
    )
    op.create_index("images_line_captured", "images", ["line", "captured_at"], schema=schema)
    op.create_index("images_part", "images", ["part_id"], schema=schema)
    op.create_table(
        "parts",
        sa.Column("part_id", sa.Text, primary_key=True),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("first_captured_at", TS, nullable=False),
        sa.Column("last_captured_at", TS, nullable=False),
        sa.Column("image_count", sa.Integer, nullable=False),
        sa.Column("last_position", sa.BigInteger, nullable=False),
        schema=schema,
    )
    op.create_table(
        "current_labels",
        sa.Column("sha256", sa.Text, primary_key=True),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("label_id", sa.Text),
        sa.Column("annotator", sa.Text, nullable=False),
        sa.Column("ontology_version", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),  # 'label' or 'correction'
        sa.Column("regions", JSONB, nullable=False),
        sa.Column("mask_uri", sa.Text),
        sa.Column("labeled_at", TS, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        schema=schema,
    )
    op.create_index("current_labels_label", "current_labels", ["label"], schema=schema)
    op.create_table(
        "label_history",
        sa.Column("position", sa.BigInteger, primary_key=True),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("label_id", sa.Text),
        sa.Column("annotator", sa.Text, nullable=False),
        sa.Column("ontology_version", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("labeled_at", TS, nullable=False),
        schema=schema,
    )
    op.create_index("label_history_image", "label_history", ["sha256", "position"], schema=schema)
    op.create_table(
        "corrections",
        sa.Column("correction_id", sa.Text, primary_key=True),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("label_id", sa.Text),
        sa.Column("prediction_event_id", sa.Text),
        sa.Column("old_label", sa.Text, nullable=False),
        sa.Column("new_label", sa.Text, nullable=False),
        sa.Column("corrected_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("corrected_at", TS, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        schema=schema,
    )
    op.create_index("corrections_image", "corrections", ["sha256"], schema=schema)
    op.create_table(
        "latest_predictions",
        sa.Column("sha256", sa.Text, primary_key=True),
        sa.Column("engine_id", sa.Text, primary_key=True),
        sa.Column("predicted_class", sa.Text, nullable=False),
        sa.Column("scores", JSONB, nullable=False),
        sa.Column("part_id", sa.Text),
        sa.Column("heatmap_uri", sa.Text),
        sa.Column("predicted_at", TS, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        schema=schema,
    )
    op.create_table(
        "part_dispositions",
        sa.Column("part_id", sa.Text, primary_key=True),
        sa.Column("decision", sa.Text, nullable=False),
        sa.Column("decided_by", sa.Text, nullable=False),
        sa.Column("decider", sa.Text, nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("rules_version", sa.Text),
        sa.Column("engine_id", sa.Text),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        schema=schema,
    )


def upgrade() -> None:
    for schema in SCHEMAS:
        op.execute(f"CREATE SCHEMA {schema}")
        _tables(schema)
        op.execute(f"GRANT USAGE ON SCHEMA {schema} TO visionledger_writer, visionledger_reader")
        op.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {schema} TO visionledger_writer"
        )
        op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO visionledger_reader")


def downgrade() -> None:
    for schema in SCHEMAS:
        op.execute(f"DROP SCHEMA {schema} CASCADE")
