"""Every time zone each line was set to, at its position (``line_time_zone_history``, a read model): a dataset
version reads each line's zone as it was at the version's position, and the events that set it may be archived
(0017), out of the event table's reach. The first catch-up after this migration folds it from the whole log,
the archive included.

Revision ID: 0021
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

SCHEMAS = ("projections", "projections_scratch")


def upgrade() -> None:
    for schema in SCHEMAS:
        op.create_table(
            "line_time_zone_history",
            sa.Column("line", sa.Text, primary_key=True),
            sa.Column("position", sa.BigInteger, primary_key=True),
            sa.Column("time_zone", sa.Text, nullable=False),
            sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
            schema=schema,
        )
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {schema}.line_time_zone_history"
                   " TO visionledger_writer")
        op.execute(f"GRANT SELECT ON {schema}.line_time_zone_history TO visionledger_reader")


def downgrade() -> None:
    for schema in SCHEMAS:
        op.drop_table("line_time_zone_history", schema=schema)
