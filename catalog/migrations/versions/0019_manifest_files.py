"""Which manifest files were found intact, and as what file (``catalog.manifest_files``), so that a trace in a
fresh process need not hash a million-image manifest again (~60 ms) while the file is the one hashed.

A row says: the file at ``uri`` in the lake, with this identity on disk (device, inode, size, modification and
change times), held the bytes whose sha256 is ``manifest_hash``. The publisher records it as it writes the
file. Any write to the file, or replacing it, moves its change time, which nobody can set back short of the
system clock, so a trace that finds another identity hashes the file afresh (catalog.audit). It is a memo of
a check, not a fact of the log: the writers may replace a row when they write the file again.

Revision ID: 0019
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE catalog.manifest_files (
            manifest_hash text NOT NULL CHECK (manifest_hash ~ '^[0-9a-f]{64}$'),
            uri           text NOT NULL,
            file_identity text NOT NULL,
            hashed_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (manifest_hash, uri)
        )
        """
    )
    op.execute("REVOKE ALL ON catalog.manifest_files FROM PUBLIC")
    op.execute("GRANT SELECT, INSERT, UPDATE ON catalog.manifest_files TO visionledger_writer")
    op.execute("GRANT SELECT ON catalog.manifest_files TO visionledger_reader")


def downgrade() -> None:
    op.execute("DROP TABLE catalog.manifest_files")
