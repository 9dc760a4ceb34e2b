"""esap-spawner: the `esap` advertising service, its custom scope and who may call it.

Loaded by zero-to-jupyterhub's hub from /usr/local/etc/jupyterhub/jupyterhub_config.d/
(in sorted order, after hub.config and hub.services), or by a plain hub with
``load_subconfig`` (see the docs: "jupyterhub_config.d snippets"). It adds to
``c.JupyterHub.services``, ``load_roles`` and ``custom_scopes``; it never replaces them.

Environment (all optional; unset or empty means the default):

ESAP_SERVICE_MODE
    ``auto`` (default): ``external`` when ESAP_SERVICE_URL is set, else ``managed``.
    ``managed``: the hub runs ``esap-spawner service`` itself (single-machine hubs).
    ``external``: the service runs elsewhere (the Helm chart's Deployment) at
    ESAP_SERVICE_URL, with the token ESAP_SERVICE_API_TOKEN (both required).
    ``off``: no service (the scope and roles are still defined).
ESAP_SERVICE_URL, ESAP_SERVICE_API_TOKEN
    See above.
ESAP_SERVICE_PORT
    Port of the managed service on 127.0.0.1 (default 8890).
ESAP_SITE_FILE
    The site file the managed service reads (default ``/etc/esap/site.yaml``).
ESAP_DATABASE_URL
    The database of spawn history, e.g. ``postgresql+psycopg://u:p@db/esap``: sets
    ``c.ESAPSpawner.db_url`` and is handed to the managed service, so the spawner writes
    what the service reads (and ``esap-spawner report`` reads it by default too).
    Unset: a ``c.ESAPSpawner.db_url`` this snippet can see is handed on, else both keep
    the default ``sqlite:///esap.sqlite`` in the hub's working directory. (Read here and
    in 15-esap-database.py alike: ``load_subconfig`` gives each snippet a config of its own.)
ESAP_PORTAL_API_TOKEN
    Registers the token-only hub service ESAP_PORTAL_SERVICE_NAME (default
    ``esap-portal``) with this token; ESAP (or another portal) calls the API with it.
ESAP_PORTAL_GROUPS, ESAP_PORTAL_USERS
    Comma-separated hub groups and users who also get the portal role.
GIT_SSL_CAINFO
    A CA bundle for workflow repositories' certificates, handed on to the managed
    service (its launch route looks up default branches over https).
ESAP_USER_ACCESS
    ``true`` (default): every user may call the service with their own token
    (``access:services!service=esap``) and sees the profiles they may start.

Roles: ``esap-portal`` has ``custom:esap:read`` (the whole catalogue). The service itself
needs no scopes: it checks a caller's token by calling ``GET /hub/api/user`` *with that
token* (HubAuth), so its own token only identifies it.

The service has a URL, so the hub lists it in the Services menu and gives it an OAuth
client: its root is a status page that users sign in to through the hub. It is part of
the hub, so ``oauth_no_confirm`` skips the "authorize access" step.
"""

import os
import sys

from jupyterhub import version_info as _esap_jupyterhub_version

c = globals()["c"]  # the config object, from load_subconfig or z2jh's jupyterhub_config.py

ESAP_SERVICE_NAME = "esap"
ESAP_PORTAL_SCOPE = "custom:esap:read"


def _esap_fatal(message):
    print(f"FATAL: esap-spawner: {message}", file=sys.stderr)
    sys.exit(1)


def _esap_flag(name, default):
    value = os.environ.get(name, "").strip().lower()
    if value == "":
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    _esap_fatal(f"{name}={value!r}: expected true or false")


def _esap_list(name):
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def _esap_add_role(role):
    """Add a role, or merge into a role of that name already configured."""
    roles = c.JupyterHub.load_roles
    if isinstance(roles, list):
        for existing in roles:
            if existing.get("name") == role["name"]:
                for key in ("scopes", "users", "groups", "services"):
                    merged = list(existing.get(key, []))
                    merged += [v for v in role.get(key, []) if v not in merged]
                    if merged:
                        existing[key] = merged
                return
    roles.append(role)


_esap_db_url = os.environ.get("ESAP_DATABASE_URL", "").strip()
if _esap_db_url:
    c.ESAPSpawner.db_url = _esap_db_url
elif "db_url" in c.ESAPSpawner:  # set earlier in the same config namespace (z2jh's hub.config)
    _esap_db_url = c.ESAPSpawner.db_url

_esap_mode = os.environ.get("ESAP_SERVICE_MODE", "").strip().lower() or "auto"
_esap_url = os.environ.get("ESAP_SERVICE_URL", "").strip()
if _esap_mode == "auto":
    _esap_mode = "external" if _esap_url else "managed"

if _esap_mode == "external":
    _esap_token = os.environ.get("ESAP_SERVICE_API_TOKEN", "").strip()
    if not _esap_url or not _esap_token:
        _esap_fatal(
            "ESAP_SERVICE_MODE=external needs ESAP_SERVICE_URL (where the service listens)"
            " and ESAP_SERVICE_API_TOKEN (the token it was given)"
        )
    c.JupyterHub.services.append(
        {
            "name": ESAP_SERVICE_NAME,
            "url": _esap_url,
            "api_token": _esap_token,
            "oauth_no_confirm": True,
        }
    )
elif _esap_mode == "managed":
    _esap_port = os.environ.get("ESAP_SERVICE_PORT", "").strip() or "8890"
    if not _esap_port.isdigit():
        _esap_fatal(f"ESAP_SERVICE_PORT={_esap_port!r}: expected a port number")
    # JupyterHub passes managed services a minimal environment: hand on where the
    # cluster is, so the service's cluster view follows the same cluster as the hub, the
    # CA bundle git uses (the launch route asks workflow repositories for their default
    # branch over https), and
    # the spawner's database (in the environment: a URL may hold a password, which a
    # command line would show to every local user).
    _esap_env = {
        name: os.environ[name]
        for name in (
            "KUBECONFIG",
            "KUBERNETES_SERVICE_HOST",
            "KUBERNETES_SERVICE_PORT",
            "GIT_SSL_CAINFO",
        )
        if os.environ.get(name)
    }
    if _esap_db_url:
        _esap_env["ESAP_DATABASE_URL"] = _esap_db_url
    c.JupyterHub.services.append(
        {
            "name": ESAP_SERVICE_NAME,
            "url": f"http://127.0.0.1:{_esap_port}",
            "command": [
                sys.executable,
                "-m",
                "esap_spawner.cli",
                "service",
                "--site-file",
                (os.environ.get("ESAP_SITE_FILE", "").strip() or "/etc/esap/site.yaml"),
            ],
            "environment": _esap_env,
            "oauth_no_confirm": True,
        }
    )
elif _esap_mode != "off":
    _esap_fatal(f"ESAP_SERVICE_MODE={_esap_mode!r}: expected auto, managed, external or off")

c.JupyterHub.custom_scopes.update(
    {
        ESAP_PORTAL_SCOPE: {
            "description": "Read the esap service's whole catalogue: every profile with"
            " its availability and allowed groups, and data locality.",
        }
    }
)

_esap_portal_role = {
    "name": "esap-portal",
    "description": "Portals such as ESAP: read the whole esap catalogue",
    "scopes": [ESAP_PORTAL_SCOPE],
    "groups": _esap_list("ESAP_PORTAL_GROUPS"),
    "users": _esap_list("ESAP_PORTAL_USERS"),
    "services": [],
}
_esap_portal_token = os.environ.get("ESAP_PORTAL_API_TOKEN", "").strip()
if _esap_portal_token:
    _esap_portal_name = os.environ.get("ESAP_PORTAL_SERVICE_NAME", "").strip() or "esap-portal"
    c.JupyterHub.services.append({"name": _esap_portal_name, "api_token": _esap_portal_token})
    _esap_portal_role["services"].append(_esap_portal_name)
_esap_add_role(_esap_portal_role)

if _esap_flag("ESAP_USER_ACCESS", True):
    _esap_access = f"access:services!service={ESAP_SERVICE_NAME}"
    if _esap_jupyterhub_version >= (6,):
        c.JupyterHub.extra_user_scopes.add(_esap_access)
    else:
        # JupyterHub 5: redefine the `user` role with its default scope plus ours
        _esap_add_role({"name": "user", "scopes": ["self", _esap_access]})
