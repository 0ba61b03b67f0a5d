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
from catalog.store import APPEND_LOCK_KEY

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


# One partition more, for first_position <= position < end_position, as the owner: created on its own and then
# attached (ATTACH takes SHARE UPDATE EXCLUSIVE on the parent, which neither reads nor appends wait for, where
# CREATE TABLE … PARTITION OF takes ACCESS EXCLUSIVE), with its per-partition unique constraints (see
# catalog.partitions) and its own append-only trigger (the parent's statement triggers do not fire for a
# statement that names the partition). Named as catalog.partitions.partition_name names them.
CREATE_EVENT_PARTITION = """
CREATE FUNCTION catalog.create_event_partition(first_position bigint, end_position bigint) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    name text := 'events_from_' || first_position;
BEGIN
    EXECUTE format('CREATE TABLE catalog.%I (LIKE catalog.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
    EXECUTE format('ALTER TABLE catalog.%I ADD CONSTRAINT %I UNIQUE (event_id),'
                   ' ADD CONSTRAINT %I UNIQUE (stream_id, version)',
                   name, name || '_event_id_key', name || '_stream_version_key');
    EXECUTE format('CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON catalog.%I'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION catalog.refuse_event_change()', name);
    EXECUTE format('ALTER TABLE catalog.events ATTACH PARTITION catalog.%I FOR VALUES FROM (%s) TO (%s)',
                   name, first_position, end_position);
    RETURN name;
END
$fn$
"""

# What a writer calls when its append found no partition for its positions (catalog.store retries it once):
# partitions of the newest one's size, with the owner's rights (SECURITY DEFINER: writers hold no DDL rights),
# until the head's next ``batch`` positions fit with a whole partition to spare. It takes the append lock, so no
# append runs meanwhile, and decides every size itself: a writer can make the log no other shape.
ADD_EVENT_PARTITIONS = rf"""
CREATE FUNCTION catalog.add_event_partitions(batch bigint) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    head bigint;
    last_end bigint;
    size bigint;
    made integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock({APPEND_LOCK_KEY});
    SELECT coalesce(max(position), 0) INTO head FROM catalog.events;
    SELECT b.m[2]::bigint, b.m[2]::bigint - b.m[1]::bigint INTO last_end, size
      FROM (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''?(\d+)''?\) TO \(''?(\d+)''?\)') AS m
              FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'catalog.events'::regclass) b
     ORDER BY b.m[2]::bigint DESC LIMIT 1;
    WHILE last_end <= head + greatest(batch, 0) + size LOOP
        PERFORM catalog.create_event_partition(last_end, last_end + size);
        last_end := last_end + size;
        made := made + 1;
    END LOOP;
    RETURN made;
END
$fn$
"""


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
    op.execute(CREATE_EVENT_PARTITION)
    op.execute(ADD_EVENT_PARTITIONS)
    op.execute("REVOKE ALL ON FUNCTION catalog.create_event_partition(bigint, bigint) FROM PUBLIC")
    op.execute("REVOKE ALL ON FUNCTION catalog.add_event_partitions(bigint) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION catalog.add_event_partitions(bigint) TO visionledger_writer")
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
