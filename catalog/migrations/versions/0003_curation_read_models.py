"""Read models for curation: where each image was seen, its label on the images row (for the curator's
filters), the history of exclusions, the review queue and the ontology's versions.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMAS = ("projections", "projections_scratch")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    for schema in SCHEMAS:
        # The label as recorded, and the ontology version it was recorded under: a query for a current class
        # asks for every (version, name) that maps to it, so ontology changes never rewrite rows.
        op.add_column("images", sa.Column("label", sa.Text), schema=schema)
        op.add_column("images", sa.Column("label_ontology_version", sa.Integer), schema=schema)
        op.create_index("images_line_label_captured", "images", ["line", "label", "captured_at"], schema=schema)
        op.create_index("images_captured", "images", ["captured_at"], schema=schema)
        op.create_table(
            "image_sightings",
            sa.Column("position", sa.BigInteger, primary_key=True),
            sa.Column("sha256", sa.Text, nullable=False),
            sa.Column("source_path", sa.Text, nullable=False),
            sa.Column("part_id", sa.Text, nullable=False),
            sa.Column("line", sa.Text, nullable=False),
            sa.Column("station", sa.Text, nullable=False),
            sa.Column("camera", sa.Text, nullable=False),
            sa.Column("captured_at", TS, nullable=False),
            schema=schema,
        )
        op.create_index("image_sightings_path", "image_sightings", ["source_path"], schema=schema)
        op.create_index("image_sightings_part", "image_sightings", ["part_id"], schema=schema)
        op.create_index("image_sightings_image", "image_sightings", ["sha256"], schema=schema)
        op.create_table(
            "curation_history",
            sa.Column("position", sa.BigInteger, primary_key=True),
            sa.Column("sha256", sa.Text, nullable=False),
            sa.Column("excluded", sa.Boolean, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            schema=schema,
        )
        op.create_index("curation_history_image", "curation_history", ["sha256", "position"], schema=schema)
        op.create_table(
            "review_queue",
            sa.Column("queue", sa.Text, primary_key=True),
            sa.Column("sha256", sa.Text, primary_key=True),
            sa.Column("strategy", sa.Text, nullable=False),
            sa.Column("score", sa.Float, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("requested_at", TS, nullable=False),
            sa.Column("position", sa.BigInteger, nullable=False),
            schema=schema,
        )
        op.create_table(
            "ontology_versions",
            sa.Column("version", sa.Integer, primary_key=True),
            sa.Column("classes", JSONB, nullable=False),
            sa.Column("changes", JSONB, nullable=False),
            sa.Column("published_at", TS, nullable=False),
            sa.Column("position", sa.BigInteger, nullable=False),
            schema=schema,
        )
        for table in ("image_sightings", "curation_history", "review_queue", "ontology_versions"):
            op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {schema}.{table} TO visionledger_writer")
            op.execute(f"GRANT SELECT ON {schema}.{table} TO visionledger_reader")


def downgrade() -> None:
    for schema in SCHEMAS:
        for table in ("ontology_versions", "review_queue", "curation_history", "image_sightings"):
            op.drop_table(table, schema=schema)
        op.drop_index("images_captured", "images", schema=schema)
        op.drop_index("images_line_label_captured", "images", schema=schema)
        op.drop_column("images", "label_ontology_version", schema=schema)
        op.drop_column("images", "label", schema=schema)
