"""An index of the log's events by the part they name, for the server's part decisions: each image it judges
reads every image, prediction and disposition of its part from the log (`catalog.lookups.part_events`).

Revision ID: 0013
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# The same list as the query in catalog/lookups.py: PostgreSQL uses a partial index only for a query whose
# condition implies the index's.
PART_EVENT_TYPES = "('ImageIngested', 'PredictionRecorded', 'PartDispositioned')"


def upgrade() -> None:
    op.execute(f"CREATE INDEX events_part ON catalog.events ((payload->>'part_id'), position)"
               f" WHERE type IN {PART_EVENT_TYPES}")


def downgrade() -> None:
    op.execute("DROP INDEX catalog.events_part")
