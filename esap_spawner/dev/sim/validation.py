"""What the API server refuses with 422 Invalid: names, labels, and a pod without containers.

:func:`validate` returns a list of ``(field, message)`` causes; an empty list means the
object is acceptable. Only the checks that clients of this project can trip are made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["pod_update_causes", "validate"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_RESOURCES = {"namespaces", "services"}  # names must be DNS-1123 labels

Cause = tuple[str, str]


def _name_causes(resource: str, name: Any) -> list[Cause]:
    if not isinstance(name, str) or not name:
        return [("metadata.name", "Required value: name or generateName is required")]
    if resource in _LABEL_RESOURCES:
        if len(name) > 63 or not _DNS_LABEL.match(name):
            return [
                (
                    "metadata.name",
                    f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower '
                    "case alphanumeric characters or '-', and must start and end with an "
                    "alphanumeric character",
                )
            ]
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return [
            (
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
                "case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character",
            )
        ]
    return []


def _label_causes(labels: Any) -> list[Cause]:
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [("metadata.labels", "Invalid value: labels must be a map of strings")]
    causes = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/") if isinstance(key, str) else ("", "", "")
        if (
            not name
            or len(name) > 63
            or not _LABEL_NAME.match(name)
            or (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)))
        ):
            causes.append(("metadata.labels", f'Invalid value: "{key}": invalid label key'))
        if not isinstance(value, str) or (
            value and (len(value) > 63 or not _LABEL_NAME.match(value))
        ):
            causes.append(
                (
                    "metadata.labels",
                    f'Invalid value: "{value}": a valid label must be an empty string or consist '
                    "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                    "alphanumeric character (at most 63 characters)",
                )
            )
    return causes


def _pod_causes(spec: Any) -> list[Cause]:
    if not isinstance(spec, Mapping):
        return [("spec", "Required value")]
    containers = spec.get("containers")
    if not containers or not isinstance(containers, list):
        return [("spec.containers", "Required value")]
    causes: list[Cause] = []
    for field in ("containers", "initContainers"):
        for n, container in enumerate(spec.get(field) or ()):
            if not isinstance(container, Mapping) or not container.get("name"):
                causes.append((f"spec.{field}[{n}].name", "Required value"))
            elif not container.get("image"):
                causes.append((f"spec.{field}[{n}].image", "Required value"))
    return causes


def validate(resource: str, obj: Mapping[str, Any]) -> list[Cause]:
    """Causes for which the API server would refuse ``obj`` (of ``resource``, e.g. "pods")."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return [("metadata", "Required value")]
    causes = _name_causes(resource, metadata.get("name"))
    causes += _label_causes(metadata.get("labels"))
    if resource == "pods":
        causes += _pod_causes(obj.get("spec"))
    return causes


_MUTABLE_POD_FIELDS = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
    "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only "
    "additions to existing tolerations) or `spec.terminationGracePeriodSeconds`"
)


def _comparable_pod_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    comparable = {k: v for k, v in spec.items() if k not in ("activeDeadlineSeconds",
                  "terminationGracePeriodSeconds", "tolerations")}  # fmt: skip
    for field in ("containers", "initContainers"):
        if field in comparable:
            comparable[field] = [
                {k: v for k, v in c.items() if k != "image"} for c in comparable[field] or []
            ]
    return comparable


def pod_update_causes(old_spec: Mapping[str, Any], new_spec: Mapping[str, Any]) -> list[Cause]:
    """Why the API server refuses an update of a pod's spec (most of it is immutable)."""
    old_tolerations = list(old_spec.get("tolerations") or [])
    new_tolerations = list(new_spec.get("tolerations") or [])
    if new_tolerations[: len(old_tolerations)] != old_tolerations:
        return [("spec.tolerations", "Forbidden: existing toleration can not be modified")]
    if _comparable_pod_spec(old_spec) != _comparable_pod_spec(new_spec):
        return [("spec", _MUTABLE_POD_FIELDS)]
    return []
