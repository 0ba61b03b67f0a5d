"""Alembic environment: runs the migrations on the connection or URL the catalog hands over."""

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)


def _run(connection) -> None:
    context.configure(connection=connection, version_table_schema="catalog", transaction_per_migration=True)
    connection.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS catalog")
    connection.commit()
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `visionledger db upgrade`")
run_migrations_online()
