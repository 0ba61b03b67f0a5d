"""The event table partitioned by RANGE (position), so that old ranges can be archived to the lake and dropped
(catalog.partitions, catalog.archive).

No event is copied: the table as it was is renamed and attached as the first partition, holding exactly the
positions stored so far (an empty table: the first DEFAULT_PARTITION_SIZE positions), with its indexes,
constraints and append-only trigger; a new parent takes the old name with the same columns, checks, indexes,
triggers and grants, so every reader and writer goes on naming ``catalog.events``. Partitions ahead of the head
are created here too. ``archived_streams`` and ``archived_parts`` index what the archive holds, for the appends'
stream versions and the reads that must look there (written only by the owner, as a partition is dropped), and
``catalog.append_events`` (0014) reads a stream's version from the first as well.

Revision ID: 0017
"""

from alembic import op

from catalog.lookups import PART_EVENT_TYPES_SQL
from catalog.partitions import DEFAULT_PARTITION_SIZE, ensure_partitions, partition_name

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

FIRST = partition_name(1)

# The one statement of catalog.append_events (0014) that reads the streams' versions, and what it becomes.
STREAM_VERSIONS = """
      LEFT JOIN LATERAL (SELECT e.version FROM catalog.events e WHERE e.stream_id = s.stream_id
                          ORDER BY e.version DESC LIMIT 1) v ON true;"""
STREAM_VERSIONS_ACROSS_ARCHIVE = """
      LEFT JOIN LATERAL (SELECT greatest(
                                  (SELECT e.version FROM catalog.events e WHERE e.stream_id = s.stream_id
                                    ORDER BY e.version DESC LIMIT 1),
                                  -- a stream whose events were archived goes on from its last archived version
                                  (SELECT a.last_version FROM catalog.archived_streams a
                                    WHERE a.stream_id = s.stream_id)) AS version) v ON true;"""


def upgrade() -> None:
    conn = op.get_bind().connection.driver_connection
    head = conn.execute("SELECT coalesce(max(position), 0) FROM catalog.events").fetchone()[0]
    end = head + 1 if head else 1 + DEFAULT_PARTITION_SIZE
    # Index and constraint names are per schema: the old table's give theirs up to the parent.
    op.execute(f"ALTER TABLE catalog.events RENAME TO {FIRST}")
    for constraint in ("pkey", "event_id_key", "stream_version_key"):
        op.execute(f"ALTER TABLE catalog.{FIRST} RENAME CONSTRAINT events_{constraint} TO {FIRST}_{constraint}")
    for index in ("recorded_at_brin", "part"):
        op.execute(f"ALTER INDEX catalog.events_{index} RENAME TO {FIRST}_{index}")
    # Statement triggers fire for the table a statement names: the parent's own, from now on.
    op.execute(f"DROP TRIGGER events_notify ON catalog.{FIRST}")
    # The checks come with their names, which ATTACH matches against the partition's.
    op.execute(f"CREATE TABLE catalog.events (LIKE catalog.{FIRST} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
               " PARTITION BY RANGE (position)")
    op.execute("ALTER TABLE catalog.events ADD CONSTRAINT events_pkey PRIMARY KEY (position)")
    op.execute("CREATE INDEX events_recorded_at_brin ON catalog.events USING brin (recorded_at)")
    # The same definition as 0013's, so that ATTACH adopts the old table's index instead of building one.
    op.execute(f"CREATE INDEX events_part ON catalog.events ((payload->>'part_id'), position)"
               f" WHERE type IN {PART_EVENT_TYPES_SQL}")
    op.execute("CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON catalog.events"
               " FOR EACH STATEMENT EXECUTE FUNCTION catalog.refuse_event_change()")
    op.execute("CREATE TRIGGER events_notify AFTER INSERT ON catalog.events"
               " FOR EACH STATEMENT EXECUTE FUNCTION catalog.notify_events()")
    op.execute("REVOKE ALL ON catalog.events FROM PUBLIC")
    op.execute("GRANT SELECT, INSERT ON catalog.events TO visionledger_writer")
    op.execute("GRANT SELECT ON catalog.events TO visionledger_reader")
    op.execute(f"REVOKE ALL ON catalog.{FIRST} FROM visionledger_writer, visionledger_reader")
    op.execute(f"ALTER TABLE catalog.events ATTACH PARTITION catalog.{FIRST} FOR VALUES FROM (1) TO ({end})")
    ensure_partitions(conn)

    # Per stream and per part, what the archive holds: the last version and count, and the positions they span.
    op.execute(
        """
        CREATE TABLE catalog.archived_streams (
            stream_id      text   PRIMARY KEY,
            last_version   bigint NOT NULL,
            events         bigint NOT NULL,
            first_position bigint NOT NULL,
            last_position  bigint NOT NULL
        )
        """
    )
    op.execute(
        """
        CREATE TABLE catalog.archived_parts (
            part_id        text   PRIMARY KEY,
            first_position bigint NOT NULL,
            last_position  bigint NOT NULL
        )
        """
    )
    for table in ("archived_streams", "archived_parts"):
        op.execute(f"REVOKE ALL ON catalog.{table} FROM PUBLIC")
        op.execute(f"GRANT SELECT ON catalog.{table} TO visionledger_writer, visionledger_reader")
    # The function as installed, with that one statement changed (CREATE OR REPLACE keeps its grants).
    definition = conn.execute("SELECT pg_get_functiondef('catalog.append_events'::regproc)").fetchone()[0]
    if STREAM_VERSIONS not in definition:
        raise RuntimeError("catalog.append_events is not as migration 0014 wrote it: its stream versions cannot be"
                           " made to read the archive")
    conn.execute(definition.replace(STREAM_VERSIONS, STREAM_VERSIONS_ACROSS_ARCHIVE))


def downgrade() -> None:
    raise NotImplementedError("the event store is never downgraded: its history is the system of record")
