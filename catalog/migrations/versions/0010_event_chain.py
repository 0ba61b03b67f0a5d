"""Each event's hash over its content and its predecessor's hash (the chain verified by visionledger check).

The events stored before the chain are hashed here, in position order, as append hashes (``catalog.chain``, the
one place the chain is defined, through ``catalog.migrations.stored_chain``).

Revision ID: 0010
"""

from alembic import op

from catalog.migrations.stored_chain import rehash_stored_events

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE catalog.events ADD COLUMN hash bytea CONSTRAINT events_hash_size"
               " CHECK (octet_length(hash) = 32)")
    rehash_stored_events()
    op.execute("ALTER TABLE catalog.events ALTER COLUMN hash SET NOT NULL")


def downgrade() -> None:
    raise NotImplementedError("the event store is never downgraded: its history is the system of record")
