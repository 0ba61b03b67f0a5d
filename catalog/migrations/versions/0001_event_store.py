"""The append-only event table, its immutability triggers and the privileges of the group roles.

Revision ID: 0001
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Group roles: the embedded launcher creates them first; on another server the migration does, given
    # CREATEROLE, or the DBA did.
    op.execute(
        """
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'visionledger_writer') THEN
            CREATE ROLE visionledger_writer NOLOGIN;
          END IF;
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'visionledger_reader') THEN
            CREATE ROLE visionledger_reader NOLOGIN;
          END IF;
        END $$;
        """
    )
    op.execute(
        """
        CREATE TABLE catalog.events (
            position       bigint      PRIMARY KEY CHECK (position > 0),
            event_id       uuid        NOT NULL UNIQUE,
            stream_id      text        NOT NULL CHECK (stream_id ~ '^[a-z_]+(:.+)?$'),
            version        bigint      NOT NULL CHECK (version > 0),
            type           text        NOT NULL,
            schema_version integer     NOT NULL CHECK (schema_version > 0),
            payload        jsonb       NOT NULL,
            metadata       jsonb       NOT NULL DEFAULT '{}'::jsonb,
            occurred_at    timestamptz NOT NULL,
            -- statement_timestamp(): the inserting statement starts after the append lock is taken, so
            -- recorded_at never decreases along position and "as of time T" maps to one position.
            recorded_at    timestamptz NOT NULL DEFAULT statement_timestamp(),
            CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
        )
        """
    )
    op.execute("CREATE INDEX events_recorded_at_brin ON catalog.events USING brin (recorded_at)")
    op.execute(
        """
        CREATE FUNCTION catalog.refuse_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'catalog.events is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'record a new event instead (a CorrectionRecorded, an ImageExcluded)';
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON catalog.events
        FOR EACH STATEMENT EXECUTE FUNCTION catalog.refuse_event_change()
        """
    )
    # Tailing readers LISTEN on this channel instead of polling in a tight loop.
    op.execute(
        """
        CREATE FUNCTION catalog.notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          PERFORM pg_notify('catalog_events', '');
          RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER events_notify AFTER INSERT ON catalog.events
        FOR EACH STATEMENT EXECUTE FUNCTION catalog.notify_events()
        """
    )
    op.execute("REVOKE ALL ON catalog.events FROM PUBLIC")
    op.execute("GRANT USAGE ON SCHEMA catalog TO visionledger_writer, visionledger_reader")
    op.execute("GRANT SELECT, INSERT ON catalog.events TO visionledger_writer")
    op.execute("GRANT SELECT ON catalog.events TO visionledger_reader")
    op.execute("GRANT SELECT ON catalog.alembic_version TO visionledger_writer, visionledger_reader")


def downgrade() -> None:
    raise NotImplementedError("the event store is never downgraded: its history is the system of record")
