"""Each line's time zone (LineTimeZoneSet): the factory's day and the times shown are the line's local ones.

Revision ID: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SCHEMAS = ("projections", "projections_scratch")


def upgrade() -> None:
    for schema in SCHEMAS:
        op.create_table(
            "line_time_zones",
            sa.Column("line", sa.Text, primary_key=True),
            sa.Column("time_zone", sa.Text, nullable=False),
            sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("position", sa.BigInteger, nullable=False),
            schema=schema,
        )
        op.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {schema}.line_time_zones TO visionledger_writer")
        op.execute(f"GRANT SELECT ON {schema}.line_time_zones TO visionledger_reader")


def downgrade() -> None:
    for schema in SCHEMAS:
        op.drop_table("line_time_zones", schema=schema)
