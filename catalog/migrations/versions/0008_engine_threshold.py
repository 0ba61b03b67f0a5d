"""Engines carry their model's operating threshold (chosen on the validation split).

Revision ID: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SCHEMAS = ("projections", "projections_scratch")


def upgrade() -> None:
    for schema in SCHEMAS:
        op.add_column("engines", sa.Column("threshold", sa.Float, nullable=True), schema=schema)


def downgrade() -> None:
    for schema in SCHEMAS:
        op.drop_column("engines", "threshold", schema=schema)
