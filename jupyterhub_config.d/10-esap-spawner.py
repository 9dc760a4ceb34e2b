"""esap-spawner: use ESAPSpawner with the site file, and refuse to start on a bad one.

Loaded by zero-to-jupyterhub's hub from /usr/local/etc/jupyterhub/jupyterhub_config.d/
(in sorted order, after hub.config), or by a plain hub with ``load_subconfig`` (see the
docs: "jupyterhub_config.d snippets").

Environment (all optional; unset or empty means the default):

ESAP_SITE_FILE
    The site file (default ``/etc/esap/site.yaml``). It is validated here, at load time:
    a bad file stops the hub with every problem listed, instead of failing at the first
    spawn.
"""

import os
import sys

from esap_spawner.site.model import SiteError, load_site

c = globals()["c"]  # the config object, from load_subconfig or z2jh's jupyterhub_config.py

_esap_site_file = os.environ.get("ESAP_SITE_FILE", "").strip() or "/etc/esap/site.yaml"
try:
    _esap_site = load_site(_esap_site_file)
except SiteError as _esap_exc:
    print(
        f"FATAL: esap-spawner: the site file {_esap_site_file} cannot be used"
        f" (fix it, then check it with `esap-spawner check-config {_esap_site_file}`):\n"
        f"{_esap_exc}",
        file=sys.stderr,
    )
    sys.exit(1)
except OSError as _esap_exc:
    print(
        f"FATAL: esap-spawner: cannot read the site file {_esap_site_file}: {_esap_exc}"
        " (set ESAP_SITE_FILE to its path)",
        file=sys.stderr,
    )
    sys.exit(1)

print(f"esap-spawner: site file {_esap_site_file}: {_esap_site.summary()}")
c.JupyterHub.spawner_class = "esap"
c.ESAPSpawner.site_file = _esap_site_file
