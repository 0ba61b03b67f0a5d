"""The curator's index ends with sha256, the query's tie-breaker, so that a page of results is read in index
order and the scan stops after the page (cold, each row read is a random disk read).

Revision ID: 0004
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMAS = ("projections", "projections_scratch")


def upgrade() -> None:
    for schema in SCHEMAS:
        op.drop_index("images_line_label_captured", "images", schema=schema)
        op.create_index("images_line_label_captured", "images", ["line", "label", "captured_at", "sha256"],
                        schema=schema)


def downgrade() -> None:
    for schema in SCHEMAS:
        op.drop_index("images_line_label_captured", "images", schema=schema)
        op.create_index("images_line_label_captured", "images", ["line", "label", "captured_at"], schema=schema)
