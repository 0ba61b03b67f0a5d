"""Each event's hash over its content and its predecessor's hash (the chain verified by visionledger check).

The events stored before the chain are hashed here, in position order, with the same canonical form as append
(``catalog.chain``: the one place it is defined, so this migration imports it). The append-only trigger is
lifted for the backfill alone, inside this migration's transaction: no other session can see it lifted.

Revision ID: 0010
"""

from alembic import op

from catalog.chain import GENESIS, canonical_value, event_hash

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

PAGE = 10_000  # events hashed per fetch: memory stays bounded on a log of any size


def upgrade() -> None:
    op.execute("ALTER TABLE catalog.events ADD COLUMN hash bytea CONSTRAINT events_hash_size"
               " CHECK (octet_length(hash) = 32)")
    conn = op.get_bind().connection.driver_connection  # psycopg: a server-side cursor and COPY
    conn.execute("CREATE TEMPORARY TABLE event_hashes (position bigint PRIMARY KEY, hash bytea NOT NULL)"
                 " ON COMMIT DROP")
    previous = GENESIS
    with conn.cursor(name="events_to_hash") as events:
        events.execute("SELECT position, event_id, stream_id, version, type, schema_version, payload::text,"
                       " metadata::text, occurred_at, recorded_at FROM catalog.events ORDER BY position")
        while rows := events.fetchmany(PAGE):
            hashes = []
            for (position, event_id, stream_id, version, event_type, schema_version, payload, metadata,
                 occurred_at, recorded_at) in rows:
                previous = event_hash(previous, position, event_id, stream_id, version, event_type, schema_version,
                                      canonical_value(payload), canonical_value(metadata), occurred_at,
                                      recorded_at)
                hashes.append((position, previous))
            with conn.cursor().copy("COPY event_hashes (position, hash) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "bytea"])
                for row in hashes:
                    copy.write_row(row)
    op.execute("ALTER TABLE catalog.events DISABLE TRIGGER events_append_only")
    op.execute("UPDATE catalog.events e SET hash = h.hash FROM event_hashes h WHERE e.position = h.position")
    op.execute("ALTER TABLE catalog.events ENABLE TRIGGER events_append_only")
    op.execute("ALTER TABLE catalog.events ALTER COLUMN hash SET NOT NULL")


def downgrade() -> None:
    raise NotImplementedError("the event store is never downgraded: its history is the system of record")
