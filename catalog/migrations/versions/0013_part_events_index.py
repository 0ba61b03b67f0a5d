"""An index of the log's events by the part they name, for the server's part decisions: each image it judges
reads every image, prediction and disposition of its part from the log (`catalog.lookups.part_events`).

Revision ID: 0013
"""

from alembic import op

from catalog.lookups import PART_EVENT_TYPES_SQL

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# The query's own list (catalog/lookups.py): PostgreSQL uses a partial index only for a query whose condition
# implies the index's, and 0017 gives the partitioned table the same definition so that it adopts this index.


def upgrade() -> None:
    op.execute(f"CREATE INDEX events_part ON catalog.events ((payload->>'part_id'), position)"
               f" WHERE type IN {PART_EVENT_TYPES_SQL}")


def downgrade() -> None:
    op.execute("DROP INDEX catalog.events_part")
