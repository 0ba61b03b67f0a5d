"""Each event's hash over its content and its predecessor's hash (the chain verified by visionledger check).

Revision ID: 0010
"""

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # placeholder: filled in by the change that introduces it


def downgrade() -> None:
    pass
