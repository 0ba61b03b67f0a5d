"""Reserved for the server-side append (issue 17): a no-op until that work lands, so that parallel branches keep one revision chain.

Revision ID: 0014
"""

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
