"""The simulator's object store: what etcd plus the API server's registry do for core/v1.

Objects are JSON-like dicts, indexed by resource, namespace and name. Every change takes
the next ``resourceVersion`` and appends one :class:`Change` to a bounded log (the oldest
changes are compacted away; a watch from before them gets 410 Gone). Stored objects are
never mutated in place: an update stores a new dict, so a change in the log keeps the object
as it was, and its JSON is encoded once and shared by every watcher and list.

Deleting an owner deletes its dependents (ownerReferences, background propagation);
deleting a namespace deletes its contents and then the namespace. Pods bound to a node are
deleted gracefully: the store sets ``deletionTimestamp`` and the kubelet calls
:meth:`Store.remove` once the pod's processes are gone. A pod deleted at once (unbound, or
with a grace period of 0) is first marked with ``deletionTimestamp`` and a grace of 0 (a
MODIFIED event), then removed, as the real API server does.

All methods run on the simulator's event loop thread; none blocks.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from esap_spawner.dev.sim.clock import now_rfc3339
from esap_spawner.dev.sim.defaults import apply_defaults, default_pod_spec, normalize
from esap_spawner.dev.sim.errors import ApiError
from esap_spawner.dev.sim.selectors import FieldSelector, LabelSelector
from esap_spawner.dev.sim.validation import pod_update_causes, validate

__all__ = ["RESOURCES", "Change", "Store", "Watcher"]

Obj = dict[str, Any]

# resource -> (kind, namespaced)
RESOURCES: dict[str, tuple[str, bool]] = {
    "pods": ("Pod", True),
    "events": ("Event", True),
    "persistentvolumeclaims": ("PersistentVolumeClaim", True),
    "services": ("Service", True),
    "secrets": ("Secret", True),
    "configmaps": ("ConfigMap", True),
    "serviceaccounts": ("ServiceAccount", True),
    "resourcequotas": ("ResourceQuota", True),
    "nodes": ("Node", False),
    "namespaces": ("Namespace", False),
}


def _deleted_now(pod: Obj) -> None:
    pod["metadata"].setdefault("deletionTimestamp", now_rfc3339())
    pod["metadata"]["deletionGracePeriodSeconds"] = 0


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Entry:
    """One stored version of an object and its JSON, encoded at most once."""

    __slots__ = ("_json", "obj")

    def __init__(self, obj: Obj) -> None:
        self.obj = obj
        self._json: bytes | None = None

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = _dumps(self.obj)
        return self._json


@dataclass(slots=True)
class Change:
    """One watch event in the log: ADDED, MODIFIED or DELETED."""

    rv: int
    resource: str
    namespace: str
    type: str
    entry: Entry
    old: Obj | None
    _line: bytes | None = None

    def line(self, type_: str | None = None) -> bytes:
        """The watch event as one JSON line; encoded once for the change's own type."""
        if type_ is not None and type_ != self.type:
            return b'{"type":"' + type_.encode() + b'","object":' + self.entry.json + b"}\n"
        if self._line is None:
            self._line = (
                b'{"type":"' + self.type.encode() + b'","object":' + self.entry.json + b"}\n"
            )
        return self._line


class Watcher:
    """One open watch: a queue of encoded event lines for the objects its selectors match."""

    def __init__(
        self, resource: str, namespace: str | None, labels: LabelSelector, fields: FieldSelector
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def _matches(self, obj: Obj | None) -> bool:
        return obj is not None and self.labels.matches(obj) and self.fields.matches(obj)

    def offer(self, change: Change) -> None:
        if self.namespace is not None and change.namespace != self.namespace:
            return
        now = self._matches(change.entry.obj)
        if change.type == "DELETED":
            if now:
                self.queue.put_nowait(change.line())
            return
        before = change.old is not None and self._matches(change.old)
        if now:
            self.queue.put_nowait(change.line("MODIFIED" if before else "ADDED"))
        elif before:
            self.queue.put_nowait(change.line("DELETED"))

    def close(self) -> None:
        self.queue.put_nowait(None)


Key = tuple[str, str, str]  # resource, namespace ("" when cluster-scoped), name


class Store:
    """Objects, resourceVersions, the change log, watchers and garbage collection."""

    def __init__(self, *, history: int = 10_000) -> None:
        self.rv = 0
        self.history = history
        self.compacted_rv = 0  # every change with a larger rv is still in the log
        self.log: deque[Change] = deque()
        self._objects: dict[str, dict[str, dict[str, Entry]]] = {r: {} for r in RESOURCES}
        self._dependents: dict[str, set[Key]] = {}
        self._watchers: dict[str, set[Watcher]] = {r: set() for r in RESOURCES}
        self.listeners: list[Callable[[Change], None]] = []

    # -- reading ---------------------------------------------------------------------------

    @staticmethod
    def check_resource(resource: str, namespace: str | None = None) -> None:
        if resource not in RESOURCES:
            raise ApiError.not_found_resource(resource)
        if namespace is not None and not RESOURCES[resource][1]:
            raise ApiError.not_found_resource(resource)

    def entry(self, resource: str, namespace: str, name: str) -> Entry | None:
        return self._objects[resource].get(namespace, {}).get(name)

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        entry = self.entry(resource, namespace, name)
        if entry is None:
            raise ApiError.not_found(resource, name)
        return entry.obj

    def entry_json(self, resource: str, namespace: str, name: str) -> bytes:
        entry = self.entry(resource, namespace, name)
        if entry is None:
            raise ApiError.not_found(resource, name)
        return entry.json

    def find(self, resource: str, namespace: str, name: str) -> Obj | None:
        entry = self.entry(resource, namespace, name)
        return None if entry is None else entry.obj

    def entries(
        self,
        resource: str,
        namespace: str | None = None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> Iterator[Entry]:
        """Stored entries of one resource, optionally in one namespace, matching selectors."""
        by_ns = self._objects[resource]
        groups = list(by_ns.values()) if namespace is None else [by_ns.get(namespace, {})]
        if fields is not None and (name := fields.equality("metadata.name")) is not None:
            groups = [{name: g[name]} if name in g else {} for g in groups]
        for group in groups:
            for entry in list(group.values()):
                if labels and not labels.matches(entry.obj):
                    continue
                if fields and not fields.matches(entry.obj):
                    continue
                yield entry

    def objects(self, resource: str, namespace: str | None = None) -> list[Obj]:
        return [e.obj for e in self.entries(resource, namespace)]

    def count(self, resource: str) -> int:
        return sum(len(group) for group in self._objects[resource].values())

    # -- writing ---------------------------------------------------------------------------

    def _append(self, change: Change) -> None:
        self.log.append(change)
        while len(self.log) > self.history:
            self.compacted_rv = self.log.popleft().rv
        for watcher in list(self._watchers[change.resource]):
            watcher.offer(change)
        for listener in list(self.listeners):
            listener(change)

    def compact(self) -> None:
        """Forget the whole change log (as etcd compaction would): older watches get 410."""
        if self.log:
            self.compacted_rv = self.log[-1].rv
            self.log.clear()

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _track_owners(self, key: Key, obj: Obj | None, old: Obj | None) -> None:
        for source, add in ((old, False), (obj, True)):
            for ref in (source or {}).get("metadata", {}).get("ownerReferences") or ():
                uid = ref.get("uid")
                if not uid:
                    continue
                if add:
                    self._dependents.setdefault(uid, set()).add(key)
                else:
                    self._dependents.get(uid, set()).discard(key)

    def create(self, resource: str, namespace: str, body: Any) -> Obj:
        """Store a new object the way POST does: fill in server fields, 409 if it exists."""
        kind, namespaced = RESOURCES[resource]
        if not isinstance(body, dict):
            raise ApiError.bad_request(f"the body of a {kind} must be a JSON object")
        obj = copy.deepcopy(body)
        metadata = obj.setdefault("metadata", {})
        if not isinstance(metadata, dict):
            raise ApiError.invalid(kind, "", [("metadata", "Invalid value: must be an object")])
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + secrets.token_hex(3)[:5]
        name = metadata.get("name") or ""
        if namespaced:
            if metadata.get("namespace") not in (None, "", namespace):
                raise ApiError.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            namespace_obj = self.find("namespaces", "", namespace)
            if namespace_obj is None:
                raise ApiError.not_found("namespaces", namespace)
            if namespace_obj.get("status", {}).get("phase") == "Terminating":
                raise ApiError.forbidden(
                    f'{resource} "{name}" is forbidden: unable to create new content in '
                    f"namespace {namespace} because it is being terminated"
                )
            metadata["namespace"] = namespace
        else:
            namespace = ""
            metadata.pop("namespace", None)
        causes = validate(resource, obj)
        if causes:
            raise ApiError.invalid(kind, name, causes)
        if self.entry(resource, namespace, name) is not None:
            raise ApiError.already_exists(resource, name)
        obj["kind"] = kind
        obj["apiVersion"] = "v1"
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = now_rfc3339()
        metadata.pop("deletionTimestamp", None)
        metadata["resourceVersion"] = self._next_rv()
        apply_defaults(resource, obj, self)
        return self._put(resource, namespace, name, obj, None, "ADDED")

    def _put(
        self, resource: str, namespace: str, name: str, obj: Obj, old: Obj | None, type_: str
    ) -> Obj:
        entry = Entry(obj)
        self._objects[resource].setdefault(namespace, {})[name] = entry
        self._track_owners((resource, namespace, name), obj, old)
        self._append(Change(self.rv, resource, namespace, type_, entry, old))
        return obj

    def update(self, resource: str, namespace: str, name: str, new: Obj) -> Obj:
        """Store a new version of an existing object (PUT, PATCH, controllers)."""
        old = self.get(resource, namespace, name)
        kind = RESOURCES[resource][0]
        new_meta = new.setdefault("metadata", {})
        sent_rv = new_meta.get("resourceVersion")
        if sent_rv not in (None, "", old["metadata"]["resourceVersion"]):
            raise ApiError.conflict(resource, name)
        if new_meta.get("name", name) != name:
            raise ApiError.invalid(kind, name, [("metadata.name", "Invalid value: immutable")])
        for field in ("uid", "creationTimestamp", "namespace", "deletionTimestamp"):
            if field in old["metadata"]:
                new_meta[field] = old["metadata"][field]
            else:
                new_meta.pop(field, None)
        new_meta["name"] = name
        new["kind"], new["apiVersion"] = kind, "v1"
        normalize(resource, new)
        causes = validate(resource, new)
        if resource == "pods" and not causes:
            default_pod_spec(new.setdefault("spec", {}))
            causes = pod_update_causes(old.get("spec") or {}, new["spec"])
        if causes:
            raise ApiError.invalid(kind, name, causes)
        new_meta["resourceVersion"] = self._next_rv()
        return self._put(resource, namespace, name, new, old, "MODIFIED")

    def modify(self, resource: str, namespace: str, name: str, fn: Callable[[Obj], Any]) -> Obj:
        """Apply ``fn`` to a copy of the stored object and store the result (for controllers).

        Controllers may set ``metadata.deletionTimestamp`` this way; clients cannot.
        """
        new = copy.deepcopy(self.get(resource, namespace, name))
        fn(new)
        old = self.get(resource, namespace, name)
        new["metadata"]["resourceVersion"] = self._next_rv()
        return self._put(resource, namespace, name, new, old, "MODIFIED")

    def remove(self, resource: str, namespace: str, name: str) -> Obj | None:
        """Take an object out of the store for good: DELETED event, then its dependents."""
        group = self._objects[resource].get(namespace, {})
        entry = group.pop(name, None)
        if entry is None:
            return None
        obj = copy.deepcopy(entry.obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._track_owners((resource, namespace, name), None, entry.obj)
        self._append(Change(self.rv, resource, namespace, "DELETED", Entry(obj), entry.obj))
        for dependent in sorted(self._dependents.pop(obj["metadata"]["uid"], set())):
            if self.entry(*dependent) is not None:
                self.delete(*dependent)
        if resource == "namespaces":
            for kind_group in self._objects.values():
                kind_group.pop(name, None)
        elif namespace:
            self._finish_namespace(namespace)
        return obj

    def delete(self, resource: str, namespace: str, name: str, grace: int | None = None) -> Obj:
        """DELETE: graceful for pods on a node and for namespaces, immediate otherwise."""
        obj = self.get(resource, namespace, name)
        if resource == "namespaces":
            return self._delete_namespace(name)
        if resource == "pods" and self._graceful(obj, grace):
            if "deletionTimestamp" in obj["metadata"]:
                return obj
            seconds = (
                obj["spec"].get("terminationGracePeriodSeconds", 30) if grace is None else grace
            )

            def mark(pod: Obj) -> None:
                pod["metadata"]["deletionTimestamp"] = now_rfc3339()
                pod["metadata"]["deletionGracePeriodSeconds"] = seconds

            return self.modify(resource, namespace, name, mark)
        if resource == "pods":  # the API server marks a pod it deletes at once (MODIFIED) too
            self.modify(resource, namespace, name, _deleted_now)
        removed = self.remove(resource, namespace, name)
        assert removed is not None
        if resource == "nodes":  # the pod garbage collector removes pods of a deleted node
            for entry in list(self.entries("pods")):
                pod = entry.obj
                if pod.get("spec", {}).get("nodeName") == name:
                    self.remove("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
        return removed

    @staticmethod
    def _graceful(pod: Obj, grace: int | None) -> bool:
        """Whether a pod's deletion waits for its kubelet (bound, running, grace not 0)."""
        if grace == 0 or not pod.get("spec", {}).get("nodeName"):
            return False
        return pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")

    def _delete_namespace(self, name: str) -> Obj:
        namespace = self.get("namespaces", "", name)
        if namespace.get("status", {}).get("phase") != "Terminating":

            def terminate(ns: Obj) -> None:
                ns["metadata"]["deletionTimestamp"] = now_rfc3339()
                ns.setdefault("status", {})["phase"] = "Terminating"

            namespace = self.modify("namespaces", "", name, terminate)
        for resource, (_, namespaced) in RESOURCES.items():
            if namespaced:
                for entry in list(self.entries(resource, name)):
                    meta = entry.obj["metadata"]
                    if self.entry(resource, name, meta["name"]) is not None:
                        self.delete(resource, name, meta["name"])
        self._finish_namespace(name)
        return self.find("namespaces", "", name) or namespace

    def _finish_namespace(self, namespace: str) -> None:
        ns = self.find("namespaces", "", namespace)
        if ns is None or ns.get("status", {}).get("phase") != "Terminating":
            return
        if any(self._objects[r].get(namespace) for r in RESOURCES if RESOURCES[r][1]):
            return
        self.remove("namespaces", "", namespace)

    # -- watching --------------------------------------------------------------------------

    def watch(
        self,
        resource: str,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        resource_version: str | None,
    ) -> Watcher:
        """Open a watch; its queue starts with what happened after ``resource_version``.

        No resourceVersion (or "0") starts with ADDED events for the current objects.
        A resourceVersion older than the log raises 410 Gone (reason Expired).
        """
        watcher = Watcher(resource, namespace, labels, fields)
        if resource_version in (None, "", "0"):
            for entry in self.entries(resource, namespace, labels, fields):
                watcher.queue.put_nowait(b'{"type":"ADDED","object":' + entry.json + b"}\n")
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise ApiError.bad_request(
                    f"invalid resource version {resource_version!r}"
                ) from None
            if since < self.compacted_rv:
                raise ApiError.gone(since, self.compacted_rv)
            for change in self.log:
                if change.rv > since and change.resource == resource:
                    watcher.offer(change)
        self._watchers[resource].add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers[watcher.resource].discard(watcher)

    def close_watches(self) -> int:
        """End every open watch (their clients see the stream end); returns how many."""
        count = 0
        for watchers in self._watchers.values():
            for watcher in list(watchers):
                watcher.close()
                count += 1
            watchers.clear()
        return count
