"""The data side of ESAPSpawner: staging, the datalinks ConfigMap, mounts, progress, state.

A mixin over KubeSpawner, so that ``spawner.py`` stays about profiles and admission. It
wires :mod:`esap_spawner.data.staging` (the orchestration) and
:mod:`esap_spawner.spawn.objects` (the
pure pod parts) into KubeSpawner's seams:

- the site's catalogue and the database come from the hub's context
  (:mod:`esap_spawner.spawn.context`); the catalogue's ``local_rses`` are the storage pods
  may mount;
- ``_prepare_data(options)``, called by ``ESAPSpawner.load_user_options`` after admission:
  resolves and stages the requested datasets (one bulk resolve; rules created or reused;
  polled until OK or the deadline), builds the plan and (re)creates the pod's ConfigMap
  (``<pod>-datalinks``: the plan and the datalinks program) before the pod exists, which
  owns it once it exists (:mod:`esap_spawner.spawn.pod_owned`). Every failure is a
  :class:`~esap_spawner.data.staging.StagingError` with an HTTP status and the reason in
  words, which the spawner turns into a refusal;
- ``add_data_to_pod(pod)``, called by ``get_pod_manifest``: storage volumes mounted
  read-only, the datasets folder, the init containers, ``ESAP_DATASETS``;
- ``get_env``: a workflow opens at ``/lab/tree/<folder>/<filepath>``
  (``JUPYTERHUB_DEFAULT_URL``);
- ``progress``: the staging messages first (0-30%), then KubeSpawner's pod events;
- ``get_state``/``load_state``: staging requests (rule ids, times, outcomes) are kept, so a
  spawn after a hub restart reuses its rules (and the database's in-flight rows, and
  Rucio's own rule for the same DID, RSE and account, back that up). JupyterHub saves a
  spawner's state when a start ends or a server stops, not in the middle of a start;
- ``stop``: rules expire after their lifetime, or are removed when
  ``remove_staging_rules_on_stop`` is set (the ConfigMap goes with the pod).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

from kubernetes_asyncio.client import V1Container, V1EnvVar, V1Volume, V1VolumeMount
from kubespawner.utils import get_k8s_model
from traitlets import Float

from esap_spawner.data import staging
from esap_spawner.data.catalogue.base import (
    Catalogue,
    CatalogueError,
    DidFiles,
    StagingRequest,
    StagingStatus,
)
from esap_spawner.data.renewal import RuleRenewal, ensure_rules_last
from esap_spawner.data.staging import StagingError
from esap_spawner.data.staging_limits import StagingLimits
from esap_spawner.observe.db import Database
from esap_spawner.site.model import DEFAULT_STAGING_TIMEOUT, LocalRSE, Site
from esap_spawner.site.quantity import format_bytes
from esap_spawner.spawn import objects
from esap_spawner.spawn.options import UserOptions
from esap_spawner.spawn.plan import DataPlanError, dataset_plan, narrow_to_datasets
from esap_spawner.spawn.pod_owned import PodOwnedObjects

if TYPE_CHECKING:
    from esap_spawner.spawn.context import HubContext
    from esap_spawner.spawn.records import SpawnAttempt


def staging_settings(site: Site, *, poll_min: float, poll_max: float) -> staging.StagingSettings:
    """Destination, lifetime and limits from the site file's ``data.rucio.staging``."""
    rucio = site.data.rucio
    if site.data.catalogue != "rucio" or rucio is None:
        return staging.StagingSettings(destination_rse=None, lifetime=0, poll_min=poll_min)
    return staging.StagingSettings(
        destination_rse=rucio.staging.destination_rse,
        lifetime=rucio.staging.rule_lifetime,
        poll_min=poll_min,
        poll_max=max(poll_min, poll_max),
        limits=StagingLimits(
            max_files=rucio.staging.max_files,
            max_bytes=rucio.staging.max_bytes,
            max_rules_per_user=rucio.staging.max_rules_per_user,
        ),
    )


def site_staging_timeout(site: Site) -> float:
    rucio = site.data.rucio
    return float(rucio.staging.timeout) if rucio is not None else float(DEFAULT_STAGING_TIMEOUT)


def _field(obj: Any, attribute: str, key: str) -> Any:
    """A field of a Kubernetes object given as a ``V1*`` model or as a plain dict."""
    if obj is None:
        return None
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, attribute, None)


class SpawnerHost(Protocol):
    """What :class:`DataSpawnerMixin` needs from the spawner it is mixed into, beyond
    KubeSpawner's own members (``user``, ``log``, ``api``, ``namespace``, ``pod_name``...):
    ESAPSpawner, which documents these with its other options
    (``tests/unit/test_spawner_host.py`` holds it to them)."""

    @property
    def context(self) -> HubContext: ...
    @property
    def site(self) -> Site: ...
    @property
    def home_dir(self) -> str: ...
    @property
    def checkout_env(self) -> dict[str, str]: ...
    @property
    def staging_poll_interval(self) -> float: ...
    @property
    def staging_poll_max(self) -> float: ...
    @property
    def staging_pod_margin(self) -> float: ...
    @property
    def remove_staging_rules_on_stop(self) -> bool: ...
    def _attempt(self) -> SpawnAttempt: ...


if TYPE_CHECKING:

    class _Host(PodOwnedObjects, SpawnerHost):
        """For the type checker: the data side sits on the pod-owned objects (on
        KubeSpawner), in a host like ESAPSpawner, so the host's members are typed here."""

else:
    _Host = PodOwnedObjects


class DataSpawnerMixin(_Host):
    """Datasets and workflow for a KubeSpawner subclass that is a :class:`SpawnerHost`
    (ESAPSpawner)."""

    rule_renew_margin = Float(
        86400.0,
        config=True,
        help="""
        Seconds before its end a staging rule is renewed (given
        `data.rucio.staging.rule_lifetime` again): at spawn, datasets whose rule ends sooner
        are renewed before they are called ready, and a spawn whose rule cannot be
        extended stops with the reason; while servers run, the hub renews the rules of
        their datasets (every `rule_renew_interval`). At most half the rules' lifetime is
        used, so a rule just made never needs renewing. Extending a rule needs a Rucio
        account allowed to update rules (an admin account under the generic policy).
        0 turns both off.
        """,
    )

    rule_renew_interval = Float(
        600.0,
        config=True,
        help="""
        Seconds between two rounds of the hub's renewal of running servers' staging rules
        (one `list_did_rules` per dataset in use per round). 0 turns the rounds off.
        """,
    )

    _esap_plan: dict[str, Any] | None = None
    _esap_storage: tuple[LocalRSE, ...] = ()
    _esap_stager: staging.Stager | None = None
    _esap_saved_staging: dict[str, Any] | None = None
    _esap_messages: list[dict[str, Any]] | None = None
    _esap_data_ready: asyncio.Event | None = None

    def _progress_message(self, message: str, fraction: float) -> None:
        if self._esap_messages is None:
            self._esap_messages = []
        progress = int(30 * max(0.0, min(1.0, fraction)))
        self._esap_messages.append({"progress": progress, "message": message})

    async def _catalogue_for_user(self) -> Any:
        """The site's catalogue, acting with the user's own Rucio token when auth_state has
        one (``rucio_token``, and ``rucio_account`` or the user name)."""
        catalogue = self.context.catalogue
        if catalogue is None or not hasattr(catalogue, "for_token"):
            return catalogue
        get_auth_state = getattr(self.user, "get_auth_state", None)
        auth_state = (await get_auth_state() if get_auth_state else None) or {}
        token = auth_state.get("rucio_token")
        if not token:
            return catalogue
        account = auth_state.get("rucio_account") or self.user.name
        return catalogue.for_token(token, account=account)

    async def _prepare_data(self, options: UserOptions) -> None:
        """Stage and lay out the requested datasets; ship the plan in a ConfigMap."""
        self._esap_plan = None
        self._esap_storage = ()
        if self._esap_data_ready is None or self._esap_data_ready.is_set():
            # not started through start() (tests, tools): a fresh page of messages
            self._esap_data_ready = asyncio.Event()
            self._esap_messages = []
        try:
            resolved = await self._stage(options) if options.datasets else None
            if resolved is not None:
                self._esap_plan = self._plan(resolved)
            if options.workflow:
                self._say_where_the_workflow_goes(options.workflow)
            if self._esap_plan is not None or options.workflow:
                await self._create_config_map(self._esap_plan or {"version": 1, "datasets": {}})
        finally:
            self._esap_data_ready.set()

    async def _stage(self, options: UserOptions) -> dict[str, DidFiles] | None:
        catalogue = await self._catalogue_for_user()
        if catalogue is None:
            self.log.warning(
                "esap: %s asked for datasets %s, but the site has no data catalogue",
                self.user.name,
                ", ".join(options.datasets),
            )
            return None
        attempt = self._attempt()
        saved = staging.load_staging_state(self._esap_saved_staging)
        stager = staging.Stager(
            catalogue=catalogue,
            user=self.user.name,
            settings=staging_settings(
                self.site, poll_min=self.staging_poll_interval, poll_max=self.staging_poll_max
            ),
            deadline=staging.staging_deadline(
                now=time.monotonic(),
                site_timeout=site_staging_timeout(self.site),
                start_timeout=float(self.start_timeout),
                started=attempt.requested,
                wall_now=time.time(),
                pod_margin=self.staging_pod_margin,
            ),
            db=await self.context.database(),
            metrics=self.context.metrics,
            saved=saved,
            on_message=self._progress_message,
        )
        self._esap_stager = stager
        started = time.time()
        try:
            resolved = await stager.run(list(options.datasets))
        except CatalogueError as e:
            raise StagingError(500, f"Staging failed: {e}", StagingStatus.failure) from None
        finally:
            self._esap_saved_staging = stager.state()
            if stager.staged:
                attempt.staging_started, attempt.staging_finished = started, time.time()
        await self._rules_last(catalogue, list(resolved))
        files = sum(len(f.files) for f in resolved.values())
        size = sum(f.bytes for f in resolved.values())
        self._progress_message(
            f"Datasets ready: {len(resolved)} datasets, {files} files, {format_bytes(size)} "
            f"under {self.site.data.mount_root}",
            1.0,
        )
        return resolved

    def _rucio_staging(self) -> tuple[str, int, float] | None:
        """The destination RSE, the rules' lifetime and the renewal margin (at most half
        the lifetime, so a fresh rule never needs renewing), when this site stages with
        Rucio and renews rules."""
        rucio = self.site.data.rucio
        if self.site.data.catalogue != "rucio" or rucio is None or self.rule_renew_margin <= 0:
            return None
        destination, lifetime = rucio.staging.destination_rse, rucio.staging.rule_lifetime
        if not destination:
            return None
        return destination, lifetime, min(self.rule_renew_margin, lifetime / 2)

    async def _rules_last(self, catalogue: Catalogue, dids: list[str]) -> None:
        """Before the datasets are called ready: the rules keeping them here last
        ``rule_renew_margin`` more seconds (renewed if need be), or the spawn stops (and the
        hub keeps renewing the rules of running servers: :meth:`_keep_rules_alive`)."""
        staged = self._rucio_staging()
        if staged is None:
            return
        destination, lifetime, margin = staged
        await ensure_rules_last(
            catalogue, dids, destination=destination, lifetime=lifetime, margin=margin
        )
        self._keep_rules_alive()

    def _keep_rules_alive(self) -> None:
        """Start the hub's one rule renewal loop (:class:`RuleRenewal`), once."""
        staged = self._rucio_staging()
        if staged is None or self.rule_renew_interval <= 0:
            return
        destination, lifetime, margin = staged
        context, spawner = self.context, self

        def in_use() -> set[str]:  # the datasets the namespace's servers were started with
            reflector = spawner.pod_reflector
            pods = list(reflector.pods.values()) if reflector is not None else []
            return {did for pod in pods for did in objects.datasets_of(pod)}

        renewal = RuleRenewal(
            catalogue=lambda: context.catalogue, datasets_in_use=in_use,
            destination=destination, lifetime=lifetime, margin=margin,
            interval=self.rule_renew_interval,
        )  # fmt: skip
        context.start_once(f"rule-renewal-{self.namespace}", renewal.run)

    async def poll(self) -> int | None:
        self._keep_rules_alive()  # after a hub restart: its running servers' rules too
        status: int | None = await super().poll()
        return status

    def _plan(self, resolved: dict[str, DidFiles]) -> dict[str, Any]:
        catalogue = self.context.catalogue
        storage = catalogue.local_rses if catalogue is not None else ()
        try:
            plan = dataset_plan(resolved, storage, self.site.data.mount_root)
            if self.site.data.catalogue == "static":  # only the datasets asked for
                plan = narrow_to_datasets(plan, storage, [s.name for s in storage])
        except ValueError as e:  # DataPlanError, PathOutsideMount
            raise StagingError(
                500, f"The datasets cannot be mounted: {e}", StagingStatus.failure
            ) from None
        self._esap_storage = storage
        return plan

    async def _create_config_map(self, plan: dict[str, Any]) -> None:
        """Replace this pod's ConfigMap (plan + program); the pod owns it once created."""
        try:
            manifest = objects.datalinks_config_map(
                self.pod_name, plan, labels=self._build_common_labels({})
            )
        except DataPlanError as e:
            raise StagingError(413, str(e), StagingStatus.failure) from None
        await self.create_before_pod(manifest)

    def _pod_data(self, pod: Any) -> objects.PodData:
        options = getattr(self, "esap_options", None)
        container = pod.spec.containers[0]
        mounts = [
            {
                "name": _field(m, "name", "name"),
                "mountPath": _field(m, "mount_path", "mountPath"),
                "subPath": _field(m, "sub_path", "subPath"),
            }
            for m in container.volume_mounts or []
        ]
        return objects.pod_data(
            pod_name=self.pod_name,
            image=container.image,
            uid=_field(container.security_context, "run_as_user", "runAsUser")
            or _field(pod.spec.security_context, "run_as_user", "runAsUser"),
            plan=self._esap_plan,
            storage=self._esap_storage,
            workflow=options.workflow if options else None,
            ref=options.ref if options else None,
            home=self.home_dir,
            home_volume=objects.find_home_volume(mounts, self.home_dir),
            reserved=self.site.data.mount_paths,
            image_pull_policy=container.image_pull_policy,
            checkout_env=self.checkout_env,
        )

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()
        options = getattr(self, "esap_options", None)
        if options is not None and options.workflow:
            folder = self._checkout_folder(options.workflow)
            env["JUPYTERHUB_DEFAULT_URL"] = objects.workflow_url(folder, options.filepath)
        return env

    def _checkout_folder(self, workflow: str) -> str:
        return objects.checkout_folder(
            workflow, home=self.home_dir, reserved=self.site.data.mount_paths
        )

    def _say_where_the_workflow_goes(self, workflow: str) -> None:
        """A progress message when the workflow cannot have its own name as its folder."""
        folder, name = self._checkout_folder(workflow), objects.workflow_folder(workflow)
        if folder != name:
            home = self.home_dir.rstrip("/")
            self._progress_message(
                f"The workflow is checked out into {home}/{folder}: {home}/{name} is where "
                "this hub mounts data",
                1.0,
            )

    async def progress(self) -> Any:
        """Staging messages first (0-30%), then KubeSpawner's pod events."""
        sent = 0
        while True:
            messages = self._esap_messages or []
            for message in messages[sent:]:
                yield message
            sent = len(messages)
            ready = self._esap_data_ready
            future = getattr(self, "_start_future", None)
            over = (ready is not None and ready.is_set()) or (future is not None and future.done())
            if over and sent >= len(self._esap_messages or []):
                break
            if not over:
                await asyncio.sleep(0.25)
        async for event in super().progress():
            yield event

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self._esap_stager is not None:
            self._esap_saved_staging = self._esap_stager.state()
        if self._esap_saved_staging:
            state["esap_staging"] = self._esap_saved_staging
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        saved = state.get("esap_staging")
        if isinstance(saved, dict):
            self._esap_saved_staging = saved

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        start = getattr(self, "_start_future", None)
        if start is not None and not start.done():
            # KubeSpawner stops an old pod of the same name during a start (409): the
            # rules belong to the start going on
            return
        await self._release_staging()

    async def _release_staging(self) -> None:
        """The server stopped: its staging requests no longer hold their data (the database
        says so); with ``remove_staging_rules_on_stop``, each rule this spawn created and
        nothing else needs (:meth:`_why_the_rule_stays`) is removed."""
        stager = self._esap_stager
        entries = list(
            stager.entries.values()
            if stager is not None
            else staging.load_staging_state(self._esap_saved_staging).values()
        )
        ours = [e.record_id for e in entries if e.record_id is not None]
        db = await self.context.database()
        if db is not None and ours:
            try:
                await asyncio.to_thread(db.release_staging, ours)
            except Exception as e:  # the rules then count as in use: they stay, and expire
                self.log.warning("esap: could not mark the staging of %s done: %s", self.name, e)
        if not self.remove_staging_rules_on_stop:
            return
        catalogue = stager.catalogue if stager is not None else await self._catalogue_for_user()
        for entry in entries:
            request = entry.request
            if request is None or not request.rule_id or catalogue is None:
                continue
            reason = await self._why_the_rule_stays(request, db, ours)
            if reason:
                self.log.info("esap: rule %s for %s stays: %s", request.rule_id, entry.did, reason)
                continue
            try:
                await catalogue.cancel(request)
            except CatalogueError as e:
                self.log.warning("esap: could not remove rule %s: %s", request.rule_id, e)

    async def _why_the_rule_stays(
        self, request: StagingRequest, db: Database | None, ours: list[int]
    ) -> str | None:
        """Why a rule must not be removed as its server stops, or None when it may go: it
        was not made by this spawn; another server runs with its dataset (the pods' options,
        which also name data found already local); or the database shows another request
        in flight on it, or done for a server that has not stopped."""
        if request.reused:
            return "this spawn did not create it (another request or server may use it)"
        users = sorted(
            pod["metadata"]["name"]
            for pod in list(self.pod_reflector.pods.values())
            if pod["metadata"]["name"] != self.pod_name
            and not pod["metadata"].get("deletionTimestamp")
            and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and request.did in objects.datasets_of(pod)
        )
        if users:
            return f"the server{'s' if len(users) > 1 else ''} {', '.join(users)} use its dataset"
        if db is None:
            return "without the database, who else uses it cannot be known"
        assert request.rule_id is not None
        try:
            in_use = await asyncio.to_thread(db.rule_in_use, request.rule_id, besides=ours)
        except Exception as e:
            return f"the database could not say who uses it ({e})"
        return "another server or staging request still uses it" if in_use else None

    def start_data(self) -> None:
        """A new start: a fresh page of progress messages."""
        self._esap_messages = []
        self._esap_data_ready = asyncio.Event()

    def add_data_to_pod(self, pod: Any) -> None:
        """Add the datasets' and the workflow's volumes, mounts, env and init containers."""
        options = getattr(self, "esap_options", None)
        if self._esap_plan is None and not (options and options.workflow):
            return  # neither: nothing to add (objects.pod_data), so nothing to work out
        data = self._pod_data(pod)
        if not data.init_containers:
            return
        pod.spec.volumes = [
            *(pod.spec.volumes or []),
            *(get_k8s_model(V1Volume, v) for v in data.volumes),
        ]
        notebook = pod.spec.containers[0]
        notebook.volume_mounts = [
            *(notebook.volume_mounts or []),
            *(get_k8s_model(V1VolumeMount, m) for m in data.mounts),
        ]
        notebook.env = [
            *(notebook.env or []),
            *(V1EnvVar(name=k, value=v) for k, v in data.env.items()),
        ]
        pod.spec.init_containers = [
            *(pod.spec.init_containers or []),
            *(get_k8s_model(V1Container, c) for c in data.init_containers),
        ]
