"""``catalog.append_event``: one event appended in five statements, for the writers that append one at a time
(a served decision, a label, a correction).

It keeps ``catalog.append_events``'s contract for a batch of one (0014, 0017, 0018): the same lock, a stored
id with the same content reported as a duplicate at its position and one with other content refused (VL001),
the stream's version checked against the expected one when given (VL002, the same DETAIL), its version read
across the archive, positions and ``recorded_at`` as the batch function sets them, and the same chain link
(``catalog.chain_link``). Its arguments are scalars: the batch function's ten arrays cost the client more to
encode than the server takes to append one event. ``tests/catalog/test_append_function.py`` runs the
single-event cases through both.

Revision ID: 0020
"""

from alembic import op

from catalog.store import APPEND_LOCK_KEY

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

APPEND_EVENT = f"""
CREATE FUNCTION catalog.append_event(
    new_event_id uuid, new_stream_id text, event_type text, new_schema_version integer, new_payload jsonb,
    new_metadata jsonb, new_occurred_at timestamptz, digest bytea, expected_version bigint,
    OUT event_position bigint, OUT duplicate boolean)
LANGUAGE plpgsql SECURITY INVOKER
SET enable_seqscan = off SET plan_cache_mode = force_generic_plan SET jit = off
AS $fn$
DECLARE
    stored record;
    head record;
    stream_version bigint;
    recorded timestamptz;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- A snapshot taken before the lock would miss the appends committed while it waited.
        RAISE EXCEPTION 'catalog.append_event must run at READ COMMITTED, not %',
            current_setting('transaction_isolation') USING ERRCODE = 'invalid_transaction_state';
    END IF;
    PERFORM pg_advisory_xact_lock({APPEND_LOCK_KEY});
    -- Each statement from here sees every append committed before the lock was granted.
    SELECT e.position, e.stream_id, e.type, e.payload INTO stored FROM catalog.events e WHERE e.event_id = new_event_id;
    IF FOUND THEN
        IF (stored.stream_id, stored.type, stored.payload) IS DISTINCT FROM (new_stream_id, event_type, new_payload) THEN
            RAISE EXCEPTION 'event % is already stored as a different % on %; give a new event a new id',
                new_event_id, stored.type, stored.stream_id USING ERRCODE = 'VL001';
        END IF;
        event_position := stored.position;  -- a retry of an append that went through
        duplicate := true;
        RETURN;
    END IF;

    SELECT coalesce(greatest(
               (SELECT e.version FROM catalog.events e WHERE e.stream_id = new_stream_id ORDER BY e.version DESC LIMIT 1),
               (SELECT a.last_version FROM catalog.archived_streams a WHERE a.stream_id = new_stream_id)), 0)
      INTO stream_version;
    IF stream_version IS DISTINCT FROM coalesce(expected_version, stream_version) THEN
        RAISE EXCEPTION 'stream % is at version %, not the expected %', new_stream_id, stream_version,
            expected_version USING ERRCODE = 'VL002', DETAIL = json_build_object(
                'stream_id', new_stream_id, 'expected', expected_version, 'actual', stream_version)::text;
    END IF;

    SELECT e.position, e.hash, e.recorded_at INTO head FROM catalog.events e ORDER BY e.position DESC LIMIT 1;
    -- recorded_at never before the head's (a clock stepped back), as in catalog.append_events
    recorded := greatest(clock_timestamp(), head.recorded_at);
    event_position := coalesce(head.position, 0) + 1;
    INSERT INTO catalog.events (position, event_id, stream_id, version, type, schema_version, payload, metadata,
                                occurred_at, recorded_at, hash)
    VALUES (event_position, new_event_id, new_stream_id, stream_version + 1, event_type, new_schema_version,
            new_payload, new_metadata, new_occurred_at, recorded,
            catalog.chain_link(coalesce(head.hash, decode(repeat('00', 32), 'hex')),  -- catalog.chain.GENESIS
                               event_position, stream_version + 1, (extract(epoch FROM recorded) * 1000000)::bigint,
                               digest));
    duplicate := false;
END
$fn$
"""
SIGNATURE = "catalog.append_event(uuid, text, text, integer, jsonb, jsonb, timestamptz, bytea, bigint)"


def upgrade() -> None:
    op.execute(APPEND_EVENT)
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO visionledger_writer")


def downgrade() -> None:
    raise NotImplementedError("the event store is never downgraded: its history is the system of record")
