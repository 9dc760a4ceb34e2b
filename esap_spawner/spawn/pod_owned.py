"""Objects a server's pod owns: its token Secret and its datalinks ConfigMap.

Both must exist before the pod (it reads them as it starts), and must go with it. A mixin
over KubeSpawner (``ESAPSpawner``'s data side builds on it) that wires them into
KubeSpawner's seams:

- :meth:`PodOwnedObjects.create_before_pod` creates one such object (replacing one an
  earlier start left behind: delete and create again only then, so a spawn costs the API
  server one request per object, not two) and remembers it for the start going on; the
  data side creates the ConfigMap with it;
- ``get_pod_manifest``: the hub token leaves the pod spec for the Secret ``<pod>-token``
  (:mod:`esap_spawner.spawn.token_secret`), created here, right before KubeSpawner creates
  the pod; the variables read it through ``valueFrom.secretKeyRef``;
- ``after_pod_created_hook``: once the pod exists (it has a uid), it becomes the owner of
  everything created for this start (an ``ownerReference``), so deleting the pod deletes
  them; if that fails, the spawn fails. An administrator's own hook runs after this one,
  never instead of it;
- a start that fails deletes what it created; ``stop`` deletes both objects (their names
  come from the pod's, so this works after a hub restart too), except while a start is
  going on (KubeSpawner stops an old pod of the same name during a start).

The hub's ServiceAccount needs, in its namespace, ``create`` and ``delete`` on secrets and
configmaps and ``patch`` to set the owner (the chart's ``hub-data`` Role adds what
zero-to-jupyterhub's hub Role does not give).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from jupyterhub.utils import maybe_future
from kubernetes_asyncio.client import (
    V1EnvVar,
    V1EnvVarSource,
    V1SecretKeySelector,
)
from kubernetes_asyncio.client.rest import ApiException
from traitlets import default, validate

from esap_spawner.spawn import objects
from esap_spawner.spawn.token_secret import (
    env_from_token_secret,
    token_secret,
    token_secret_name,
)

if TYPE_CHECKING:
    from kubespawner import KubeSpawner as _Base
else:  # traits need a HasTraits class; KubeSpawner comes after this mixin in the MRO
    from traitlets.config import LoggingConfigurable as _Base

__all__ = ["PodOwnedObjects"]

# kind -> the CoreV1Api method suffix
_API = {"Secret": "secret", "ConfigMap": "config_map"}
Hook = Callable[[Any, dict[str, Any]], Awaitable[None]]


def _env_model(var: Any) -> Any:
    """A variable :func:`env_from_token_secret` rewrote (a dict) as the ``V1EnvVar`` model
    KubeSpawner's pod holds; others as they are."""
    if not isinstance(var, dict):
        return var
    ref = var["valueFrom"]["secretKeyRef"]
    selector = V1SecretKeySelector(name=ref["name"], key=ref["key"])
    return V1EnvVar(name=var["name"], value_from=V1EnvVarSource(secret_key_ref=selector))


def _own_then(theirs: Hook | None) -> Hook:
    """The after_pod_created_hook: the pod owns its objects, then ``theirs`` runs."""

    async def hook(spawner: Any, pod: dict[str, Any]) -> None:
        await spawner.own_by_pod(pod)
        if theirs is not None:
            await maybe_future(theirs(spawner, pod))

    hook.esap_owns_pod_objects = True  # type: ignore[attr-defined]
    return hook


class PodOwnedObjects(_Base):
    """The token Secret and the ConfigMap of a KubeSpawner's pod (see the module)."""

    _esap_created: list[tuple[str, str]] | None = None  # (kind, name) made for this start

    # -- creating, owning, deleting --------------------------------------------------------
    async def _send(self, verb: str, kind: str, *args: Any) -> None:
        """One request through the CoreV1Api method for ``verb`` and ``kind``; its answer is
        read as bytes and dropped (building kubernetes_asyncio's models from it, which
        nothing here reads, would cost more than the rest of the request). An answer
        outside 2xx raises :class:`ApiException`, as with the models."""
        call = getattr(self.api, f"{verb}_namespaced_{_API[kind]}")
        resp = await call(*args, _preload_content=False)
        try:
            body = await resp.read()
        finally:
            resp.release()
        if not 200 <= resp.status <= 299:
            error = ApiException(status=resp.status, reason=resp.reason)
            error.body, error.headers = body.decode("utf-8", "replace"), resp.headers
            raise error

    async def _delete(self, kind: str, name: str) -> None:
        try:
            await self._send("delete", kind, name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise

    async def create_before_pod(self, manifest: dict[str, Any]) -> None:
        """Create the object ``manifest`` describes, replacing one of that name an earlier
        start left behind; the pod will own it."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        try:
            await self._send("create", kind, self.namespace, manifest)
        except ApiException as e:
            if e.status != 409:  # AlreadyExists: left behind, its content may be old
                raise
            await self._delete(kind, name)
            await self._send("create", kind, self.namespace, manifest)
        if self._esap_created is None:
            self._esap_created = []
        self._esap_created.append((kind, name))

    async def own_by_pod(self, pod: dict[str, Any]) -> None:
        """Make the pod the owner of what was created for this start."""
        owner = objects.pod_owner_reference(self.pod_name, pod["metadata"]["uid"])
        for kind, name in self._esap_created or ():
            patch = {"metadata": {"ownerReferences": [owner]}}
            await self._send("patch", kind, name, self.namespace, patch)

    def pod_object_names(self) -> list[tuple[str, str]]:
        """(kind, name) of the objects this spawner's pod may own."""
        return [
            ("Secret", token_secret_name(self.pod_name)),
            ("ConfigMap", objects.config_map_name(self.pod_name)),
        ]

    async def _delete_all(self, found: list[tuple[str, str]]) -> None:
        for kind, name in found:
            try:
                await self._delete(kind, name)
            except ApiException as e:  # the pod's deletion removes it later anyway
                self.log.warning("esap: could not delete %s %s: %s", kind, name, e.reason)

    # -- KubeSpawner's seams ---------------------------------------------------------------
    async def get_pod_manifest(self) -> Any:
        pod = await super().get_pod_manifest()
        secret = token_secret_name(self.pod_name)
        moved = False
        for container in [*pod.spec.containers, *(pod.spec.init_containers or ())]:
            env, found = env_from_token_secret(container.env, secret)
            container.env = [_env_model(var) for var in env]
            moved = moved or found
        if moved:
            labels = self._build_common_labels({})
            await self.create_before_pod(token_secret(self.pod_name, self.api_token, labels=labels))
        return pod

    @default("after_pod_created_hook")
    def _default_after_pod_created_hook(self) -> Hook:
        return _own_then(None)

    @validate("after_pod_created_hook")
    def _own_before_theirs(self, proposal: Any) -> Hook:
        hook = proposal["value"]
        return hook if getattr(hook, "esap_owns_pod_objects", False) else _own_then(hook)

    def start(self) -> Any:
        self._esap_created = []
        return asyncio.ensure_future(self._deleting_on_failure(super().start()))

    async def _deleting_on_failure(self, started: Awaitable[Any]) -> Any:
        try:
            return await started
        except BaseException:
            await asyncio.shield(self._delete_all(list(self._esap_created or ())))
            raise

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        start = getattr(self, "_start_future", None)
        if start is not None and not start.done():
            return  # KubeSpawner stops an old pod of this name: what it owns is the start's
        await self._delete_all(self.pod_object_names())
