"""esap-spawner: the spawner's database, and its esap tables checked before the hub starts.

Loaded by zero-to-jupyterhub's hub from /usr/local/etc/jupyterhub/jupyterhub_config.d/
(in sorted order, after hub.config), or by a plain hub with ``load_subconfig`` (see the
docs: "jupyterhub_config.d snippets").

Environment (all optional; unset or empty means the default):

ESAP_DATABASE_URL
    The database of spawn history and staging requests, e.g.
    ``postgresql+psycopg://u:p@db/esap``: sets ``c.ESAPSpawner.db_url`` (20-esap-service.py
    reads it too and hands it to the managed service). Unset: a ``c.ESAPSpawner.db_url``
    this snippet can see (z2jh's ``hub.config``; a plain hub's ``load_subconfig`` shows a
    snippet nothing of the main file: set this variable there), else
    ``sqlite:///esap.sqlite`` in the hub's working directory.
ESAP_DATABASE_UPGRADE
    ``false`` (default): esap tables older than this esap-spawner stop the hub with a line
    naming ``esap-spawner db upgrade``. ``true``: they are upgraded here
    (``c.ESAPSpawner.db_upgrade_on_start``, which may also be set in the config).

An empty database gets its tables here. A database that cannot be reached is only a
warning: the spawner checks again when it first needs it.
"""

import os
import sys

from esap_spawner.observe.db import DEFAULT_URL
from esap_spawner.observe.schema import SchemaError, display_url, ensure_schema

c = globals()["c"]  # the config object, from load_subconfig or z2jh's jupyterhub_config.py

_esap_env_url = os.environ.get("ESAP_DATABASE_URL", "").strip()
if _esap_env_url:
    c.ESAPSpawner.db_url = _esap_env_url

_esap_upgrade = os.environ.get("ESAP_DATABASE_UPGRADE", "").strip().lower()
if _esap_upgrade in ("1", "true", "yes", "on"):
    c.ESAPSpawner.db_upgrade_on_start = True
elif _esap_upgrade not in ("", "0", "false", "no", "off"):
    print(
        f"FATAL: esap-spawner: ESAP_DATABASE_UPGRADE={_esap_upgrade!r}: expected true or false",
        file=sys.stderr,
    )
    sys.exit(1)

_esap_db_url = c.ESAPSpawner.db_url if "db_url" in c.ESAPSpawner else DEFAULT_URL
if _esap_db_url:  # empty: no history, nothing to check
    try:
        _esap_schema = ensure_schema(
            _esap_db_url,
            upgrade=bool(c.ESAPSpawner.get("db_upgrade_on_start", False)),
            hint="set ESAP_DATABASE_UPGRADE=true to upgrade them when the hub starts",
        )
    except SchemaError as _esap_exc:
        print(f"FATAL: esap-spawner: {_esap_exc}", file=sys.stderr)
        sys.exit(1)
    except Exception as _esap_exc:  # unreachable, no driver: the spawner tries again
        print(
            f"esap-spawner: WARNING: cannot check the database {display_url(_esap_db_url)}:"
            f" {getattr(_esap_exc, 'orig', None) or _esap_exc}",
            file=sys.stderr,
        )
    else:
        print(f"esap-spawner: database {display_url(_esap_db_url)} {_esap_schema.describe()}")
