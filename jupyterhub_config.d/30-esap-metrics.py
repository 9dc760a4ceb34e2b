"""esap-spawner: who may read Prometheus metrics (the hub's and the esap service's).

Loaded by zero-to-jupyterhub's hub from /usr/local/etc/jupyterhub/jupyterhub_config.d/
(in sorted order), or by a plain hub with ``load_subconfig`` (see the docs:
"jupyterhub_config.d snippets").

Environment (all optional; unset or empty means the default):

ESAP_AUTHENTICATE_PROMETHEUS
    ``true`` (default): ``/hub/metrics`` needs a token with the ``read:metrics`` scope
    (``c.JupyterHub.authenticate_prometheus``); the esap service asks the same of
    ``/services/esap/metrics`` unless it runs with ``--open-metrics``.
ESAP_PROMETHEUS_API_TOKEN
    Registers the token-only hub service ESAP_PROMETHEUS_SERVICE_NAME (default
    ``prometheus``) with this token and the role ``esap-metrics`` (``read:metrics``):
    give Prometheus this token as its bearer token.
"""

import os
import sys

c = globals()["c"]  # the config object, from load_subconfig or z2jh's jupyterhub_config.py

_esap_value = os.environ.get("ESAP_AUTHENTICATE_PROMETHEUS", "").strip().lower() or "true"
if _esap_value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
    print(
        f"FATAL: esap-spawner: ESAP_AUTHENTICATE_PROMETHEUS={_esap_value!r}:"
        " expected true or false",
        file=sys.stderr,
    )
    sys.exit(1)
c.JupyterHub.authenticate_prometheus = _esap_value in ("1", "true", "yes", "on")

_esap_prometheus_token = os.environ.get("ESAP_PROMETHEUS_API_TOKEN", "").strip()
if _esap_prometheus_token:
    _esap_prometheus_name = (
        os.environ.get("ESAP_PROMETHEUS_SERVICE_NAME", "").strip() or "prometheus"
    )
    c.JupyterHub.services.append(
        {"name": _esap_prometheus_name, "api_token": _esap_prometheus_token}
    )
    c.JupyterHub.load_roles.append(
        {
            "name": "esap-metrics",
            "description": "Prometheus: read the hub's and the esap service's metrics",
            "scopes": ["read:metrics"],
            "services": [_esap_prometheus_name],
        }
    )
