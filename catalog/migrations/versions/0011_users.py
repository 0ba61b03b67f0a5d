"""People: users, their roles and state, folded from the User* events; login failures for lock-out.

Revision ID: 0011
"""

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder: filled in by the change that introduces it


def downgrade() -> None:
    pass
