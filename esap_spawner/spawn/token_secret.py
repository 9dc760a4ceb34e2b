"""The user's hub token in a Secret that the pod reads, never in the pod spec. Pure.

JupyterHub hands a server its API token in the environment (``JUPYTERHUB_API_TOKEN``, and
the older ``JPY_API_TOKEN``); KubeSpawner writes it into the pod spec as a literal ``value``,
so anyone who may list pods (the hub, the advertising service, monitoring) reads every
user's token. Instead the spawner puts it in a per-server Secret ``<pod>-token``
(:func:`token_secret`) and the container's variables point at it
(:func:`env_from_token_secret`: ``valueFrom.secretKeyRef``). The Secret is created just
before the pod and owned by it once the pod exists (:mod:`esap_spawner.spawn.pod_owned`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["TOKEN_ENV", "TOKEN_KEY", "env_from_token_secret", "token_secret", "token_secret_name"]

#: The variables that carry the token.
TOKEN_ENV = frozenset({"JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"})
#: The Secret's key that holds it.
TOKEN_KEY = "token"


def token_secret_name(pod_name: str) -> str:
    return f"{pod_name}-token"


def token_secret(pod_name: str, token: str, *, labels: Mapping[str, str]) -> dict[str, Any]:
    """The Secret ``<pod>-token`` holding ``token`` under :data:`TOKEN_KEY`."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": token_secret_name(pod_name), "labels": dict(labels)},
        "type": "Opaque",
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def _name_and_value(var: Any) -> tuple[str | None, Any]:
    if isinstance(var, Mapping):
        return var.get("name"), var.get("value")
    return getattr(var, "name", None), getattr(var, "value", None)


def env_from_token_secret(env: Sequence[Any] | None, secret: str) -> tuple[list[Any], bool]:
    """``env`` (``V1EnvVar`` models or dicts) with every :data:`TOKEN_ENV` variable that
    carries a literal value replaced by one read from the Secret ``secret`` (a dict in the
    API's camelCase); and whether any was."""
    out: list[Any] = []
    moved = False
    for var in env or ():
        name, value = _name_and_value(var)
        if name in TOKEN_ENV and value is not None:
            moved = True
            var = {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": TOKEN_KEY}}}
        out.append(var)
    return out, moved
