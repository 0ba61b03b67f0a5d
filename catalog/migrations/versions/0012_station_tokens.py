"""Line stations' API tokens (hashes only), their scope, expiry and revocation, folded from the Token* events.

Revision ID: 0012
"""

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder: filled in by the change that introduces it


def downgrade() -> None:
    pass
