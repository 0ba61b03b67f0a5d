"""Reserved for the trace at volume (issue 17): a no-op until that work lands, so that parallel branches keep one revision chain.

Revision ID: 0016
"""

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
