"""Hashing the events already stored, in position order, as the append does (``catalog.chain``): what a
migration runs when the chain's definition reaches events written before it (0010, which added the chain;
0014, which split it into a content digest and a link)."""

from __future__ import annotations

import psycopg
from alembic import op

from catalog.chain import GENESIS, stored_event_hash

PAGE = 10_000  # events hashed per fetch: memory stays bounded on a log of any size


def rehash_stored_events() -> None:
    """Set every stored event's hash to the chain's current definition, inside the running migration's
    transaction. The append-only trigger is lifted for the update alone: no other session can see it lifted."""
    conn: psycopg.Connection = op.get_bind().connection.driver_connection  # a server-side cursor and COPY
    conn.execute("CREATE TEMPORARY TABLE event_hashes (position bigint PRIMARY KEY, hash bytea NOT NULL)"
                 " ON COMMIT DROP")
    previous = GENESIS
    with conn.cursor(name="events_to_hash") as events:
        events.execute("SELECT position, event_id, stream_id, version, type, schema_version, payload::text,"
                       " metadata::text, occurred_at, recorded_at FROM catalog.events ORDER BY position")
        while rows := events.fetchmany(PAGE):
            hashes = []
            for position, *content in rows:
                previous = stored_event_hash(previous, position, *content)
                hashes.append((position, previous))
            with conn.cursor().copy("COPY event_hashes (position, hash) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "bytea"])
                for row in hashes:
                    copy.write_row(row)
    op.execute("ALTER TABLE catalog.events DISABLE TRIGGER events_append_only")
    op.execute("UPDATE catalog.events e SET hash = h.hash FROM event_hashes h WHERE e.position = h.position")
    op.execute("ALTER TABLE catalog.events ENABLE TRIGGER events_append_only")
    op.execute("DROP TABLE event_hashes")
