"""Alembic's environment for the ``esap_*`` tables.

Run by :mod:`esap_spawner.observe.schema` (``esap-spawner db upgrade``), which hands over an
open connection in a transaction; there is no ``alembic.ini``.
"""

from alembic import context

from esap_spawner.observe.schema import VERSION_TABLE, include_name
from esap_spawner.observe.tables import Base


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run the esap migrations with `esap-spawner db upgrade`, not alembic")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=True,  # SQLite alters a table by copying it: use batch operations
    )
    with context.begin_transaction():
        context.run_migrations()


if hasattr(context, "config"):  # run by alembic; imported as a module (a tool walking the
    run_migrations()  # package), it does nothing
