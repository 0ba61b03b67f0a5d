"""Reserved for set-based read models (issue 17): a no-op until that work lands, so that parallel branches keep one revision chain.

Revision ID: 0015
"""

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
