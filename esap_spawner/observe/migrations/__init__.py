"""Alembic migrations of the ``esap_*`` tables; run through :mod:`esap_spawner.observe.schema`."""
