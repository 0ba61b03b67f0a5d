"""Reads on a hot standby: how far behind the primary a standby is, and whether a read may go to it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from catalog.projections import ProjectionRunner

log = logging.getLogger(__name__)

RETRY_AFTER = 10.0  # seconds a standby that did not answer is left alone, so reads do not each wait on it
POLL = 0.02  # seconds between looks at a standby a reader waits for

# Asked of the standby; any login may. Its lag in time is how old its newest replayed commit is while WAL it
# received waits to be replayed; a standby that has replayed all it received is current (an idle primary sends
# no commits, so the age of the last one alone would call an idle pair late). Unknown (no commit replayed since
# the standby started, with WAL waiting) counts as infinitely late: the primary answers until it is known.
_STATE_SQL = """
SELECT pg_is_in_recovery(), pg_is_in_recovery() AND pg_is_wal_replay_paused(), pg_last_wal_replay_lsn()::text,
       CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() IS NULL
                 OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
            ELSE coalesce(extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8,
                          'Infinity') END,
       (SELECT status FROM pg_stat_wal_receiver)
"""


@dataclass(frozen=True)
class StandbyState:
    """How a standby stands. ``streaming`` is None where the login may not see the WAL receiver (only
    superusers and pg_read_all_stats may); ``lag_bytes`` is None unless the primary was asked too."""

    in_recovery: bool  # False: not a standby (any more): promoted, or not one at all
    replay_paused: bool
    replay_lsn: str | None
    lag_seconds: float
    streaming: bool | None
    lag_bytes: int | None = None


def standby_state(standby: psycopg.Connection, primary: psycopg.Connection | None = None) -> StandbyState:
    """How ``standby`` stands, and how many bytes of WAL it is behind ``primary`` when that is given."""
    in_recovery, paused, replay_lsn, lag_seconds, receiver = standby.execute(_STATE_SQL).fetchone()
    lag_bytes = None
    if primary is not None and replay_lsn is not None:
        lag_bytes = int(primary.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)",
                                        [replay_lsn]).fetchone()[0])
    return StandbyState(in_recovery=in_recovery, replay_paused=paused, replay_lsn=replay_lsn,
                        lag_seconds=lag_seconds, streaming=None if receiver is None else receiver == "streaming",
                        lag_bytes=lag_bytes)


class ReplicaReads:
    """A standby a catalog reads from while it keeps up.

    A read goes to it when it answers, is still a standby, is no more than ``max_lag`` seconds behind, and its
    read models have folded the position the reader must see, waiting up to ``wait`` seconds for that; else the
    read goes to the primary. A standby that fails to answer is left alone for `RETRY_AFTER` seconds.
    """

    def __init__(self, engine: Engine, *, wait: float, max_lag: float):
        self.engine = engine
        self.wait = wait
        self.max_lag = max_lag
        self._checkpoints = ProjectionRunner(engine)  # only read: the standby's copy of the primary's folds
        self._retry_at = 0.0

    def serves(self, position: int | None) -> bool:
        """Whether a read that must see ``position`` (None: any state within ``max_lag``) may go to the standby."""
        if time.monotonic() < self._retry_at:
            return False
        deadline = time.monotonic() + self.wait
        try:
            while True:
                with self.engine.connect() as conn:
                    state = standby_state(conn.connection.driver_connection)
                    conn.rollback()
                if not state.in_recovery or state.lag_seconds > self.max_lag:
                    return False
                if position is None or min(self._checkpoints.checkpoints().values()) >= position:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(POLL)
        except (DBAPIError, psycopg.Error) as exc:  # SQLAlchemy's when connecting, psycopg's when asking
            self._retry_at = time.monotonic() + RETRY_AFTER
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            log.warning("the replica at %s:%s does not answer (%s); reading from the primary",
                        self.engine.url.host, self.engine.url.port, reason)
            return False
