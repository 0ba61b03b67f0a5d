"""Line stations' API tokens (hashes only), their scope, expiry and revocation, folded from the Token* events.

`catalog.station_token_hashes` holds each token's SHA-256 of its secret, outside the log (so the lake never
mirrors it) and out of the readers' reach: only the writers' group may select and insert, and nobody may
change a row. `station_tokens` is the read model of the StationToken* events, without any hash.

Revision ID: 0012
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SCHEMAS = ("projections", "projections_scratch")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE catalog.station_token_hashes (
            token_id text PRIMARY KEY CHECK (token_id ~ '^[0-9a-f]{16}$'),
            sha256   text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$')
        )
        """
    )
    op.execute("REVOKE ALL ON catalog.station_token_hashes FROM PUBLIC")
    op.execute("GRANT SELECT, INSERT ON catalog.station_token_hashes TO visionledger_writer")
    for schema in SCHEMAS:
        op.create_table(
            "station_tokens",
            sa.Column("token_id", sa.Text, primary_key=True),
            sa.Column("line", sa.Text, nullable=False),
            sa.Column("station", sa.Text, nullable=False),
            sa.Column("cameras", JSONB),  # null: any camera of the station
            sa.Column("expires_at", TS, nullable=False),
            sa.Column("issued_by", sa.Text, nullable=False),
            sa.Column("issued_at", TS, nullable=False),
            sa.Column("revoked_at", TS),
            sa.Column("revoked_by", sa.Text),
            sa.Column("revoke_reason", sa.Text),
            sa.Column("position", sa.BigInteger, nullable=False),
            schema=schema,
        )
        op.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {schema}.station_tokens TO visionledger_writer")
        op.execute(f"GRANT SELECT ON {schema}.station_tokens TO visionledger_reader")


def downgrade() -> None:
    for schema in SCHEMAS:
        op.drop_table("station_tokens", schema=schema)
    op.execute("DROP TABLE catalog.station_token_hashes")
