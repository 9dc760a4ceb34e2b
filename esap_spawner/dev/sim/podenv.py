"""What Kubernetes resolves in a container before it runs: env values and ``$(VAR)`` expansion.

:func:`container_env` builds a container's environment from the pod (``value``,
``valueFrom.fieldRef``, ``secretKeyRef``, ``configMapKeyRef``, ``resourceFieldRef``,
``envFrom``) in Kubernetes' order, so a value may use ``$(NAME)`` of an earlier variable;
:func:`expand` applies the same rule to ``command`` and ``args``. Unknown references stay
as written and ``$$`` is a literal ``$``, as in Kubernetes.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Lookup", "container_env", "expand", "field_ref"]

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
Lookup = Callable[[str, str], Mapping[str, Any] | None]  # (resource, name) -> object


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` from ``env``; ``$$`` -> ``$``; unknown references stay as they are."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REF.sub(replace, text)


def field_ref(pod: Mapping[str, Any], path: str) -> str:
    """The downward-API value of ``path`` (``metadata.name``, ``status.podIP``, ...)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.podIPs": ",".join(ip["ip"] for ip in status.get("podIPs") or []),
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ValueError(f"unsupported fieldRef fieldPath {path!r}")


def _key_ref(lookup: Lookup, resource: str, ref: Mapping[str, Any]) -> str | None:
    obj = lookup(resource, ref.get("name", ""))
    if obj is None:
        if ref.get("optional"):
            return None
        raise ValueError(f'{resource[:-1]} "{ref.get("name")}" not found')
    if resource == "secrets":
        data = obj.get("stringData") or {}
        if ref["key"] in data:
            return str(data[ref["key"]])
        raw = (obj.get("data") or {}).get(ref["key"])
        return None if raw is None else base64.b64decode(raw).decode()
    return (obj.get("data") or {}).get(ref["key"])


def _all_keys(lookup: Lookup, resource: str, ref: Mapping[str, Any]) -> dict[str, str]:
    obj = lookup(resource, ref.get("name", ""))
    if obj is None:
        if ref.get("optional"):
            return {}
        raise ValueError(f'{resource[:-1]} "{ref.get("name")}" not found')
    if resource == "secrets":
        values = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        values.update(obj.get("stringData") or {})
        return values
    return dict(obj.get("data") or {})


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    base: Mapping[str, str],
    lookup: Lookup,
) -> dict[str, str]:
    """The environment of one container: ``base`` (PATH, HOME...) then envFrom, then env.

    Raises ValueError for a reference that cannot be resolved (the kubelet reports
    CreateContainerConfigError).
    """
    env = dict(base)
    for source in container.get("envFrom") or ():
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            values = _all_keys(lookup, "configmaps", source["configMapRef"])
        else:
            values = _all_keys(lookup, "secrets", source.get("secretRef") or {})
        env.update({prefix + k: v for k, v in values.items()})
    for item in container.get("env") or ():
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = field_ref(pod, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source:
            value = _key_ref(lookup, "secrets", source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            value = _key_ref(lookup, "configmaps", source["configMapKeyRef"])
        elif "resourceFieldRef" in source:
            kind, _, resource = source["resourceFieldRef"].get("resource", "").partition(".")
            value = str(((container.get("resources") or {}).get(kind) or {}).get(resource, "0"))
        else:
            raise ValueError(f"unsupported valueFrom for env {name!r}: {dict(source)!r}")
        if value is not None:
            env[name] = value
    return env
