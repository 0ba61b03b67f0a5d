"""The append as one server-side function, ``catalog.append_events``: under the append lock it dedups the batch
against the stored ids, checks the expected stream versions, numbers positions and versions, links each event
into the hash chain (``catalog.chain_link``, the SQL spelling of ``catalog.chain.chain_link``) and inserts the
batch with one INSERT … SELECT. The stored events are re-hashed under the chain's new definition (a content
digest the writer computes, linked under the lock).

The function checks ids and versions itself, rather than trusting the unique indexes to fail: once the table
is partitioned by position range those indexes hold within a partition only. It is SECURITY INVOKER: it acts
with the caller's privileges, and only the writers' group may call it.

Revision ID: 0014
"""

from alembic import op

from catalog.migrations.stored_chain import rehash_stored_events
from catalog.store import APPEND_LOCK_KEY

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


# catalog.chain.chain_link, byte for byte (tests/catalog/test_append_function.py compares the two).
CHAIN_LINK = """
CREATE FUNCTION catalog.chain_link(previous bytea, event_position bigint, stream_version bigint,
                                   recorded_micros bigint, digest bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN sha256(previous || int8send(event_position) || int8send(stream_version) || int8send(recorded_micros) || digest)
"""

# The arrays describe one event each, in the order given (all of one length); expected_streams[i] must be at
# expected_versions[i]. Returns each given event's position (its stored one for an id already stored) and
# whether it was already stored. Errors, by SQLSTATE: VL001 an id stored with other content, VL002 a stream not
# at its expected version (DETAIL: its id, the expected and the actual version, as JSON), VL003 an id given
# twice. Nothing is appended when any is raised.
APPEND_EVENTS = f"""
CREATE FUNCTION catalog.append_events(
    event_ids uuid[], stream_ids text[], event_types text[], schema_versions integer[], payloads jsonb[],
    metadatas jsonb[], occurred_times timestamptz[], digests bytea[], expected_streams text[],
    expected_versions bigint[], OUT positions bigint[], OUT duplicates boolean[])
LANGUAGE plpgsql SECURITY INVOKER
-- A session plans each statement once and keeps the plan: one made while the log was small (a sequential scan
-- comparing every row with every given id) would be kept as it grows. Every lookup here has an index.
SET enable_seqscan = off
AS $fn$
DECLARE
    batch integer := coalesce(cardinality(event_ids), 0);
    stored bigint[];  -- each given event's stored position; 0 for a new one
    conflict_at integer;  -- the first given event whose id is stored with other content
    head_position bigint;
    previous bytea;  -- the hash the next event links to
    recorded timestamptz;
    recorded_micros bigint;
    -- every stream involved and its version before this append: a map rather than a table to join, as plans
    -- cached for one-event appends would join a large batch row by row
    stream_versions jsonb;
    behind record;
    versions bigint[];  -- each given event's stream version; 0 for a stored one
    hashes bytea[] := '{{}}';  -- each given event's hash; null for a stored one
    digest bytea;
    i integer := 0;
    linked integer := 0;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- A snapshot taken before the lock would miss the appends committed while it waited.
        RAISE EXCEPTION 'catalog.append_events must run at READ COMMITTED, not %',
            current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    END IF;
    IF EXISTS (SELECT FROM unnest(ARRAY[cardinality(stream_ids), cardinality(event_types),
                   cardinality(schema_versions), cardinality(payloads), cardinality(metadatas),
                   cardinality(occurred_times), cardinality(digests)]) length WHERE length IS DISTINCT FROM batch)
       OR cardinality(expected_streams) IS DISTINCT FROM cardinality(expected_versions) THEN
        RAISE EXCEPTION 'catalog.append_events: the arrays of one batch differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF batch = 0 THEN
        positions := '{{}}';
        duplicates := '{{}}';
        RETURN;
    END IF;
    IF (SELECT count(*) FROM (SELECT DISTINCT unnest(event_ids)) ids) <> batch THEN
        RAISE EXCEPTION 'the same event_id appears twice in one append' USING ERRCODE = 'VL003';
    END IF;

    PERFORM pg_advisory_xact_lock({APPEND_LOCK_KEY});
    -- Each statement from here takes a new snapshot, which sees every append committed before the lock was
    -- granted: positions follow commit order with no holes. recorded_at is this moment, never before the
    -- head's (a clock stepped back by NTP), so it never decreases along positions.
    SELECT e.position, e.hash, greatest(clock_timestamp(), e.recorded_at) INTO head_position, previous, recorded
      FROM catalog.events e ORDER BY e.position DESC LIMIT 1;
    IF NOT FOUND THEN
        head_position := 0;
        previous := decode(repeat('00', 32), 'hex');  -- catalog.chain.GENESIS
        recorded := clock_timestamp();
    END IF;

    -- The same id with the same stream, type and payload (jsonb equality: numbers by value, keys in any
    -- order) is a duplicate, reported at its stored position; with other content it is refused. Most
    -- batches hold no stored id: one index probe each tells.
    IF EXISTS (SELECT FROM catalog.events e WHERE e.event_id = ANY(event_ids)) THEN
        SELECT array_agg(coalesce(e.position, 0) ORDER BY g.n),
               min(g.n) FILTER (WHERE e.position IS NOT NULL AND (e.stream_id, e.type, e.payload)
                                      IS DISTINCT FROM (g.stream_id, g.event_type, g.payload))
          INTO stored, conflict_at
          FROM unnest(event_ids, stream_ids, event_types, payloads) WITH ORDINALITY
               g(event_id, stream_id, event_type, payload, n)
          LEFT JOIN (SELECT s.event_id, s.position, s.stream_id, s.type, s.payload FROM catalog.events s
                      WHERE s.event_id = ANY(event_ids)) e ON e.event_id = g.event_id;
        IF conflict_at IS NOT NULL THEN
            SELECT e.type, e.stream_id INTO behind FROM catalog.events e WHERE e.event_id = event_ids[conflict_at];
            RAISE EXCEPTION 'event % is already stored as a different % on %; give a new event a new id',
                event_ids[conflict_at], behind.type, behind.stream_id USING ERRCODE = 'VL001';
        END IF;
    ELSE
        stored := array_fill(0::bigint, ARRAY[batch]);
    END IF;
    duplicates := ARRAY(SELECT unnest(stored) > 0);
    IF NOT (0 = ANY(stored)) THEN  -- a retry of an append that went through: its expectations held back then
        positions := stored;
        RETURN;
    END IF;

    SELECT jsonb_object_agg(s.stream_id, coalesce(v.version, 0)) INTO stream_versions
      FROM (SELECT DISTINCT unnest(stream_ids || expected_streams) AS stream_id) s
      LEFT JOIN LATERAL (SELECT e.version FROM catalog.events e WHERE e.stream_id = s.stream_id
                          ORDER BY e.version DESC LIMIT 1) v ON true;
    SELECT x.stream_id, x.expected, (stream_versions ->> x.stream_id)::bigint AS actual INTO behind
      FROM unnest(expected_streams, expected_versions) WITH ORDINALITY x(stream_id, expected, n)
     WHERE (stream_versions ->> x.stream_id)::bigint IS DISTINCT FROM x.expected ORDER BY x.n LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'stream % is at version %, not the expected %', behind.stream_id, behind.actual,
            behind.expected USING ERRCODE = 'VL002', DETAIL = json_build_object(
                'stream_id', behind.stream_id, 'expected', behind.expected, 'actual', behind.actual)::text;
    END IF;

    -- Each new event takes its stream's next version, in the given order.
    SELECT array_agg(f.version ORDER BY f.n) INTO versions
      FROM (SELECT g.n, CASE WHEN g.at = 0 THEN (stream_versions ->> g.stream_id)::bigint + count(*)
                                 FILTER (WHERE g.at = 0) OVER (PARTITION BY g.stream_id ORDER BY g.n
                                                               ROWS UNBOUNDED PRECEDING) ELSE 0 END AS version
              FROM (SELECT unnest(stream_ids) AS stream_id, unnest(stored) AS at, generate_series(1, batch) AS n) g) f;

    -- The new events take head + 1 … in the given order; each link needs its predecessor's hash, so this is
    -- one sha256 a new event, in position order.
    recorded_micros := (extract(epoch FROM recorded) * 1000000)::bigint;
    positions := stored;
    FOREACH digest IN ARRAY digests LOOP
        i := i + 1;
        IF stored[i] = 0 THEN
            linked := linked + 1;
            positions[i] := head_position + linked;
            previous := catalog.chain_link(previous, head_position + linked, versions[i], recorded_micros, digest);
            hashes[i] := previous;
        ELSE
            hashes[i] := NULL;
        END IF;
    END LOOP;

    -- unnest in the select list walks the arrays in step without materialising them (in FROM it would)
    INSERT INTO catalog.events (position, event_id, stream_id, version, type, schema_version, payload, metadata,
                                occurred_at, recorded_at, hash)
    SELECT g.position, g.event_id, g.stream_id, g.version, g.event_type, g.schema_version, g.payload, g.metadata,
           g.occurred_at, recorded, g.hash
      FROM (SELECT unnest(positions) AS position, unnest(event_ids) AS event_id, unnest(stream_ids) AS stream_id,
                   unnest(versions) AS version, unnest(event_types) AS event_type,
                   unnest(schema_versions) AS schema_version, unnest(payloads) AS payload,
                   unnest(metadatas) AS metadata, unnest(occurred_times) AS occurred_at, unnest(hashes) AS hash) g
     WHERE g.hash IS NOT NULL;
END
$fn$
"""


def upgrade() -> None:
    op.execute(CHAIN_LINK)
    op.execute(APPEND_EVENTS)
    for function in ("catalog.chain_link(bytea, bigint, bigint, bigint, bytea)",
                     "catalog.append_events(uuid[], text[], text[], integer[], jsonb[], jsonb[], timestamptz[],"
                     " bytea[], text[], bigint[])"):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO visionledger_writer")
    rehash_stored_events()


def downgrade() -> None:
    raise NotImplementedError("the event store is never downgraded: its history is the system of record")
