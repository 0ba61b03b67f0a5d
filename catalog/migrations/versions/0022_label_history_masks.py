"""Each label's mask and regions in ``label_history`` (a read model): a dataset version built as of a position
reads an image's mask and regions from the last label recorded by then, and the event that recorded it may be
archived (0017), out of the event table's reach. The history is emptied and its checkpoint set back to 0: the first
catch-up after this migration folds it again from the whole log, the archive included.

Revision ID: 0022
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

SCHEMAS = ("projections", "projections_scratch")


def upgrade() -> None:
    for schema in SCHEMAS:
        # null on a correction's row: a correction changes the class, not where the defect is
        op.add_column("label_history", sa.Column("regions", JSONB), schema=schema)
        op.add_column("label_history", sa.Column("mask_uri", sa.Text), schema=schema)
        op.execute(f"TRUNCATE {schema}.label_history")
        # at 0, not removed: readers wait for (or refuse) read models behind the position they need
        op.execute(f"UPDATE {schema}.checkpoints SET position = 0 WHERE name = 'label_history'")


def downgrade() -> None:
    for schema in SCHEMAS:
        op.drop_column("label_history", "mask_uri", schema=schema)
        op.drop_column("label_history", "regions", schema=schema)
