"""A rebuild puts its tables in place of the live read models instead of copying their rows over:
``catalog.swap_read_models(tables)``, run with its owner's rights by the writers, exchanges each named table of
``projections`` with its twin in ``projections_scratch`` (through the empty schema ``projections_swap``: index
names are unique within a schema, so the live table moves out of the way first).

Revision ID: 0015
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA projections_swap")
    op.execute(
        """
        CREATE FUNCTION catalog.swap_read_models(tables text[]) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
          t text;
        BEGIN
          FOREACH t IN ARRAY tables LOOP
            IF t = 'checkpoints' OR to_regclass(format('projections.%I', t)) IS NULL
               OR to_regclass(format('projections_scratch.%I', t)) IS NULL THEN
              RAISE EXCEPTION 'no read model table %', t USING ERRCODE = 'undefined_table';
            END IF;
            EXECUTE format('ALTER TABLE projections.%I SET SCHEMA projections_swap', t);
            EXECUTE format('ALTER TABLE projections_scratch.%I SET SCHEMA projections', t);
            EXECUTE format('ALTER TABLE projections_swap.%I SET SCHEMA projections_scratch', t);
          END LOOP;
        END $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION catalog.swap_read_models(text[]) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION catalog.swap_read_models(text[]) TO visionledger_writer")


def downgrade() -> None:
    op.execute("DROP FUNCTION catalog.swap_read_models(text[])")
    op.execute("DROP SCHEMA projections_swap")
