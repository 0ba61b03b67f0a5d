"""Reserved for the partitioned event table (issue 17): a no-op until that work lands, so that parallel branches keep one revision chain.

Revision ID: 0017
"""

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
