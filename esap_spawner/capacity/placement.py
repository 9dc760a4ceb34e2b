"""Where a pod can run: the scheduler's filter rules as pure functions over plain dicts.

Shared by the simulator's scheduler (``esap_spawner.dev.sim.scheduler``) and the capacity
model, so that "can this profile start now?" and "where did the simulator put the pod?"
follow the same rules. Inputs are Kubernetes objects as JSON-like dicts (camelCase keys,
as the API serves them); quantities go through :func:`esap_spawner.site.quantity.parse_quantity`.

The rules follow kube-scheduler's default filter plugins, in their order, and stop at the
first plugin that rejects a node, as the scheduler does:

1. NodeUnschedulable: ``spec.unschedulable`` -> "node(s) were unschedulable"
2. NodeName: ``spec.nodeName`` set on the pod and different -> "node(s) didn't match the
   requested node name"
3. TaintToleration: an untolerated NoSchedule/NoExecute taint -> "node(s) had untolerated
   taint(s)" (kube-scheduler 1.36's words; older releases named the taint). A node whose Ready
   condition is not True counts as carrying the ``node.kubernetes.io/not-ready`` taint, as the
   node lifecycle controller would add it.
4. NodeAffinity: ``nodeSelector`` and required node affinity -> "node(s) didn't match Pod's
   node affinity/selector"
5. NodeResourcesFit: one reason per short resource -> "Insufficient cpu",
   "Insufficient nvidia.com/gpu", "Too many pods"

:func:`failed_scheduling_message` words the FailedScheduling event like the scheduler:
"0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient
cpu." The "count reason" parts are sorted as strings (Go's ``sort.Strings``), which is what
kube-scheduler does. The sentences kube-scheduler 1.36 appends after its PostFilter plugins ran
("no new claims to deallocate, preemption: 0/3 nodes are available: ...") are left out: the
first sentence is the one that says why (docs/simulator.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from esap_spawner.site.quantity import parse_quantity

__all__ = [
    "NOT_READY_TAINT",
    "failed_scheduling_message",
    "fit_reasons",
    "matches_node_selector",
    "matches_required_affinity",
    "node_allocatable",
    "node_is_ready",
    "pod_requests",
    "tolerates",
    "untolerated_taint",
]

Json = Mapping[str, Any]

NOT_READY_TAINT: dict[str, str] = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
_FILTERED_EFFECTS = ("NoSchedule", "NoExecute")

REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_NODE_NAME = "node(s) didn't match the requested node name"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_TAINT = "node(s) had untolerated taint(s)"
REASON_TOO_MANY_PODS = "Too many pods"


def _quantities(mapping: Mapping[str, Any] | None) -> dict[str, Decimal]:
    return {name: parse_quantity(value) for name, value in (mapping or {}).items()}


def _container_requests(container: Json) -> dict[str, Decimal]:
    """A container's requests, with a limit standing in for a missing request."""
    resources = container.get("resources") or {}
    merged = _quantities(resources.get("limits"))
    merged.update(_quantities(resources.get("requests")))
    return merged


def pod_requests(pod_spec: Json) -> dict[str, Decimal]:
    """What a pod asks the scheduler for, per resource name.

    The sum over ``containers`` (a limit counts when a request is absent, as the API server
    defaults it), then per resource the max of that sum and each init container's own
    request (init containers run one at a time), plus ``overhead``.

    >>> pod_requests({"containers": [{"resources": {"requests": {"cpu": "500m"}}},
    ...                              {"resources": {"limits": {"cpu": "1"}}}]})
    {'cpu': Decimal('1.500')}
    """
    total: dict[str, Decimal] = {}
    for container in pod_spec.get("containers") or ():
        for name, amount in _container_requests(container).items():
            total[name] = total.get(name, Decimal(0)) + amount
    for container in pod_spec.get("initContainers") or ():
        for name, amount in _container_requests(container).items():
            if amount > total.get(name, Decimal(0)):
                total[name] = amount
    for name, amount in _quantities(pod_spec.get("overhead")).items():
        total[name] = total.get(name, Decimal(0)) + amount
    return total


def node_allocatable(node: Json) -> dict[str, Decimal]:
    """A node's ``status.allocatable`` (falling back to ``status.capacity``) as numbers."""
    status = node.get("status") or {}
    return _quantities(status.get("allocatable") or status.get("capacity"))


def node_is_ready(node: Json) -> bool:
    """True unless the node reports a Ready condition that is not "True".

    A node without conditions (as tests and fixtures often create them) counts as ready.
    """
    for condition in (node.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return True


def tolerates(toleration: Json, taint: Json) -> bool:
    """Whether one toleration tolerates one taint (Kubernetes' ``ToleratesTaint``)."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return not key or key == taint.get("key")
    if operator != "Equal":
        return False
    return key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or "")


def _effective_taints(node: Json) -> list[Json]:
    taints: list[Json] = list((node.get("spec") or {}).get("taints") or ())
    if not node_is_ready(node) and not any(t.get("key") == NOT_READY_TAINT["key"] for t in taints):
        taints.append(NOT_READY_TAINT)
    return taints


def untolerated_taint(node: Json, tolerations: Iterable[Json] | None) -> Json | None:
    """The first NoSchedule/NoExecute taint of ``node`` that no toleration tolerates, or None."""
    tolerations = list(tolerations or ())
    for taint in _effective_taints(node):
        if taint.get("effect") not in _FILTERED_EFFECTS:
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def matches_node_selector(node_labels: Mapping[str, str] | None, selector: Json | None) -> bool:
    """Whether the node's labels carry every ``key: value`` of a pod's ``nodeSelector``."""
    labels = node_labels or {}
    return all(labels.get(key) == value for key, value in (selector or {}).items())


def _as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _matches_expression(labels: Mapping[str, str], expression: Json) -> bool:
    key = expression.get("key", "")
    operator = expression.get("operator")
    values: Sequence[str] = expression.get("values") or ()
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt"):
        have = _as_int(labels.get(key))
        want = _as_int(values[0]) if len(values) == 1 else None
        if have is None or want is None:
            return False
        return have > want if operator == "Gt" else have < want
    raise ValueError(f"unknown node selector operator {operator!r} in {dict(expression)!r}")


def matches_required_affinity(node_labels: Mapping[str, str] | None, affinity: Json | None) -> bool:
    """Whether a node satisfies a pod's required node affinity.

    ``affinity`` is the pod's ``spec.affinity`` (or None). Terms of
    ``requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms`` are ORed; the
    ``matchExpressions`` inside one term are ANDed; a term with no expressions matches nothing.
    """
    required = ((affinity or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not required:
        return True
    labels = node_labels or {}
    for term in required.get("nodeSelectorTerms") or ():
        expressions = term.get("matchExpressions") or ()
        if expressions and all(_matches_expression(labels, e) for e in expressions):
            return True
    return False


def fit_reasons(pod_spec: Json, node: Json, used: Mapping[str, Decimal]) -> list[str]:
    """Why ``pod_spec`` cannot run on ``node``; an empty list when it fits.

    ``used`` is what the pods already bound to the node request (summed
    :func:`pod_requests`), with the number of those pods under ``"pods"``.
    """
    metadata = node.get("metadata") or {}
    if (node.get("spec") or {}).get("unschedulable"):
        return [REASON_UNSCHEDULABLE]
    wanted_name = pod_spec.get("nodeName")
    if wanted_name and wanted_name != metadata.get("name"):
        return [REASON_NODE_NAME]
    if untolerated_taint(node, pod_spec.get("tolerations")) is not None:
        return [REASON_TAINT]
    labels = metadata.get("labels") or {}
    if not matches_node_selector(labels, pod_spec.get("nodeSelector")):
        return [REASON_AFFINITY]
    if not matches_required_affinity(labels, pod_spec.get("affinity")):
        return [REASON_AFFINITY]
    allocatable = node_allocatable(node)
    reasons = []
    if "pods" in allocatable and used.get("pods", Decimal(0)) + 1 > allocatable["pods"]:
        reasons.append(REASON_TOO_MANY_PODS)
    for name, amount in sorted(pod_requests(pod_spec).items()):
        if name == "pods" or amount <= 0:
            continue
        if used.get(name, Decimal(0)) + amount > allocatable.get(name, Decimal(0)):
            reasons.append(f"Insufficient {name}")
    return reasons


def failed_scheduling_message(reasons_by_node: Mapping[str, Sequence[str]]) -> str:
    """The FailedScheduling message for a pod that fits on none of these nodes.

    >>> failed_scheduling_message({"a": ["Insufficient cpu"], "b": ["Insufficient cpu"],
    ...     "c": ["node(s) were unschedulable"]})
    '0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu.'

    """
    if not reasons_by_node:
        return "no nodes available to schedule pods"
    counts: Counter[str] = Counter()
    for reasons in reasons_by_node.values():
        counts.update(set(reasons))
    parts = sorted(f"{count} {reason}" for reason, count in counts.items())
    message = f"0/{len(reasons_by_node)} nodes are available"
    if parts:
        message += ": " + ", ".join(parts)
    return message + "."
