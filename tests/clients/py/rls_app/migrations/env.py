"""Alembic environment of rls_app: runs on the connection handed in by the caller
(config.attributes["connection"], the admin connection) or on sqlalchemy.url."""

from alembic import context
from sqlalchemy import create_engine, pool

from rls_app.models import Base

config = context.config


def run(connection):
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as conn:
        run(conn)
