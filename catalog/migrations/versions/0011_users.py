"""People: the users read model (roles, state, consecutive login failures for lock-out), folded from the User*
events, and the table of password hashes, which only the writers' group can read and the lake never mirrors.

Revision ID: 0011
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SCHEMAS = ("projections", "projections_scratch")


def upgrade() -> None:
    for schema in SCHEMAS:
        op.create_table(
            "users",
            sa.Column("username", sa.Text, primary_key=True),
            sa.Column("full_name", sa.Text, nullable=False),
            sa.Column("roles", JSONB, nullable=False),
            sa.Column("disabled", sa.Boolean, nullable=False),
            sa.Column("credential_id", UUID(as_uuid=True)),
            sa.Column("password_set_at", sa.DateTime(timezone=True)),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("last_login_at", sa.DateTime(timezone=True)),
            sa.Column("failed_logins", sa.Integer, nullable=False),  # in a row, since the last success
            sa.Column("last_failure_at", sa.DateTime(timezone=True)),
            sa.Column("position", sa.BigInteger, nullable=False),
            schema=schema,
        )
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {schema}.users TO visionledger_writer")
        op.execute(f"GRANT SELECT ON {schema}.users TO visionledger_reader")
    # Hashes are written once and never changed (a new password is a new row): no UPDATE or DELETE for anyone
    # but the owner, and no SELECT for readers.
    op.create_table(
        "credentials",
        sa.Column("credential_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        schema="catalog",
    )
    op.execute("REVOKE ALL ON catalog.credentials FROM PUBLIC")
    op.execute("GRANT SELECT, INSERT ON catalog.credentials TO visionledger_writer")


def downgrade() -> None:
    op.drop_table("credentials", schema="catalog")
    for schema in SCHEMAS:
        op.drop_table("users", schema=schema)
