"""``catalog.append_events`` (0014, 0017) with plans that cost what its work does.

- **Stored ids are looked up by a join**, one index probe an id in each partition. Planned for the values at
  hand (a session's first calls), ``event_id = ANY(array)`` took 12 µs an id of a 5,000-event batch in two
  partitions, against 3.3 µs joined.
- **Generic plans, always.** A session plans each statement of the function once; left to choose, PostgreSQL
  re-planned several of them at every call (custom plans for array parameters), which cost a one-event append
  about 0.3 ms. Every lookup here has an index and every plan is a nested loop of index probes whatever the
  batch size, so the generic plan is the right one for one event and for 5,000.
- **No JIT.** With sequential scans disabled (0014), a generic plan's estimate can pass the JIT threshold, and
  compiling costs milliseconds for statements that run in microseconds.

Revision ID: 0018
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

SIGNATURE = ("catalog.append_events(uuid[], text[], text[], integer[], jsonb[], jsonb[], timestamptz[], bytea[],"
             " text[], bigint[])")

# The two statements of catalog.append_events that probe stored ids, and what they become.
ANY_STORED = "IF EXISTS (SELECT FROM catalog.events e WHERE e.event_id = ANY(event_ids)) THEN"
JOIN_STORED = ("IF EXISTS (SELECT FROM unnest(event_ids) g(event_id)"
               " JOIN catalog.events e ON e.event_id = g.event_id) THEN")
ANY_DUPLICATES = """LEFT JOIN (SELECT s.event_id, s.position, s.stream_id, s.type, s.payload FROM catalog.events s
                      WHERE s.event_id = ANY(event_ids)) e ON e.event_id = g.event_id;"""
JOIN_DUPLICATES = """LEFT JOIN catalog.events e ON e.event_id = g.event_id;"""


def upgrade() -> None:
    conn = op.get_bind().connection.driver_connection
    definition = conn.execute("SELECT pg_get_functiondef('catalog.append_events'::regproc)").fetchone()[0]
    if ANY_STORED not in definition or ANY_DUPLICATES not in definition:
        raise RuntimeError("catalog.append_events is not as migrations 0014 and 0017 left it: its id lookups"
                           " cannot be rewritten")
    # CREATE OR REPLACE keeps the function's grants.
    conn.execute(definition.replace(ANY_STORED, JOIN_STORED).replace(ANY_DUPLICATES, JOIN_DUPLICATES))
    op.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan SET jit = off")


def downgrade() -> None:
    raise NotImplementedError("the event store is never downgraded: its history is the system of record")
