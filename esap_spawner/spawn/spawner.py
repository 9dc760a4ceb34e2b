"""ESAPSpawner: KubeSpawner with profiles from the site file, one options validator and safe pods.

Thin on purpose: the site file (:mod:`esap_spawner.site.model`), the profile model
(:mod:`esap_spawner.site.profiles`) and the options validator
(:mod:`esap_spawner.spawn.options`) hold
the logic; this class wires them into KubeSpawner's seams:

- ``profile_list``: a callable giving only the profiles this user may use;
- ``options_form``: our form (profiles with their resources, datasets, workflow);
- ``options_from_form`` / ``options_from_query``: normalise, then validate;
- ``load_user_options``: validate again (the REST API skips the form parser), let
  KubeSpawner apply the chosen profile's overrides, then admit the spawn against the live
  cluster view (:mod:`esap_spawner.capacity.hub_view`): a profile at its ``max_servers`` or with no
  node that can hold it is refused at once, with the reason, before any pod exists;
- ``context``: what the hub's spawners share (:mod:`esap_spawner.spawn.context`);
- after admission, the datasets (:mod:`esap_spawner.data.staging`): resolved in the site's
  catalogue, staged to the destination RSE when not local (progress on the spawn page
  through ``progress()``, 0-30%), laid out as a plan in a ConfigMap that the pod owns once
  it exists (:mod:`esap_spawner.spawn.objects`);
- ``get_pod_manifest``: the storage mounted read-only, the links and checkout init
  containers, ``ESAP_DATASETS``; a workflow opens at ``/lab/tree/<folder>/<filepath>``;
- ``get_state``/``load_state``: staging requests (rule ids) survive a hub restart;
- ``start``: marks the moments of the spawn; when it settles, metrics, the spawn-history
  row and the duration estimate are written (:mod:`esap_spawner.spawn.records`).

User options can never carry an image, a volume, resources or any pod field: the validator
returns a closed ``UserOptions`` value and only its ``profile`` reaches KubeSpawner.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner import KubeSpawner
from traitlets import Any as AnyValue
from traitlets import Bool, Dict, Float, Instance, Integer, TraitError, Unicode, default, validate

from esap_spawner.capacity.model import ClusterModel, Refusal, Reservation
from esap_spawner.data.staging import StagingError
from esap_spawner.observe.schema import SchemaError
from esap_spawner.site.model import Site
from esap_spawner.site.profiles import Profile, kubespawner_profile, visible_profiles
from esap_spawner.spawn import objects, refusals
from esap_spawner.spawn.confirm import (
    ConfirmFirst,
    dataset_localities,
    quiet_confirmations,
    summary,
)
from esap_spawner.spawn.context import HubContext
from esap_spawner.spawn.data import DataSpawnerMixin
from esap_spawner.spawn.form import render_form
from esap_spawner.spawn.options import (
    OptionsError,
    UserOptions,
    options_from_form_data,
    options_from_query,
    validate_options,
)
from esap_spawner.spawn.records import SpawnAttempt, outcome_of, reason_in_words
from esap_spawner.spawn.status import RefusalReason

DATABASE_OUT_OF_DATE = (
    "This hub's database must be upgraded before servers can start: "
    "an administrator runs `esap-spawner db upgrade`."
)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


async def _api_errors_in_words(started: Any) -> Any:
    """Await KubeSpawner's start; a Kubernetes API error reaches the user in words.

    Without this the REST caller and the spawn page see a bare 500; with it they read what
    the API server said, as 503 when it is worth trying again (5xx, 429).
    """
    try:
        return await started
    except ApiException as error:
        retry = error.status is None or error.status >= 500 or error.status == 429
        raise refusals.failed(503 if retry else 500, reason_in_words(error)) from error


refusals.show_refusal_reasons()  # the hub imports this module as it starts


class ESAPSpawner(DataSpawnerMixin, KubeSpawner):
    """KubeSpawner for ESAP: profiles, datasets and workflows from a site file."""

    _esap_attempt: SpawnAttempt | None = None
    _esap_reservation: Reservation | None = None
    _esap_query: dict[str, list[str]] | None = None
    _esap_confirm: dict[str, Any] | None = None

    site_file = Unicode(
        "/etc/esap/site.yaml",
        config=True,
        help="""
        Path of the site file (facility, profiles, data catalogue) shared with the `esap`
        service. Validated when first read; every problem is listed at once.

        Example::

            c.ESAPSpawner.site_file = "/etc/esap/site.yaml"
        """,
    )

    max_datasets = Integer(
        0,
        config=True,
        help="""
        Most datasets one spawn may request. 0 takes `data.rucio.staging.max_dids` from
        the site file (100 by default).
        """,
    )

    admission = Bool(
        True,
        config=True,
        help="""
        Check quota (`max_servers`) and room on the cluster before creating a pod, from a
        live model of nodes and pods kept by watches (the hub needs get/list/watch on nodes
        and pods cluster-wide). A spawn that cannot start is refused at once with the
        reason instead of a pod pending until the start timeout. False skips the check.
        """,
    )

    admission_sync_timeout = Float(
        10.0,
        config=True,
        help="""
        Seconds the first spawn waits for the cluster view to finish its first list. A
        spawn while the view is unavailable is refused (quota cannot be enforced blind).
        """,
    )

    db_url = Unicode(
        "sqlite:///esap.sqlite",
        config=True,
        help="""
        Database for spawn history (phases, outcomes), read by `esap-spawner report` and
        by the service for `estimated_start_seconds`. SQLite by default (a file in the
        hub's working directory), or PostgreSQL, e.g. `postgresql+psycopg://u:p@db/esap`.
        Empty disables the history (metrics still work).
        """,
    )

    db_upgrade_on_start = Bool(
        False,
        config=True,
        help="""
        Upgrade the database's esap tables to this esap-spawner's schema when the hub
        starts (`jupyterhub_config.d/15-esap-database.py`) or first uses them. False (the
        default): an out-of-date schema stops the hub, naming `esap-spawner db upgrade`.
        """,
    )

    link_locality_timeout = Float(
        10.0,
        config=True,
        help="""
        Seconds the confirmation of a spawn link waits for the data catalogue to say where
        the link's datasets are; past it the form says "locality unknown" (the spawn
        itself still stages what is missing).
        """,
    )

    staging_poll_interval = Float(
        2.0,
        config=True,
        help="""
        Seconds between the first polls of a staging request; the interval grows while
        nothing moves (up to `staging_poll_max`) and drops back when a file arrives.
        """,
    )

    staging_poll_max = Float(
        15.0, config=True, help="Longest interval between polls of a staging request (seconds)."
    )

    staging_pod_margin = Float(
        30.0,
        config=True,
        help="""
        Seconds of `start_timeout` kept for the pod after staging: staging gives up when
        less than this is left (or at the site file's `data.rucio.staging.timeout`,
        whichever comes first). Raise `start_timeout` for sites that stage large datasets.
        """,
    )

    remove_staging_rules_on_stop = Bool(
        False,
        config=True,
        help="""
        Remove this server's staging rules when it stops. False (the default) leaves them
        to expire after `data.rucio.staging.rule_lifetime`, so a restarted server finds its
        data still there; removing needs a Rucio account allowed to delete rules. Only a
        rule this spawn created is removed, and only when the database (`db_url`) shows no
        other request in flight and no running server that still uses it (the site's
        account holds one rule per dataset and RSE, shared by every user who asked);
        without a database nothing is removed.
        """,
    )

    home_dir = Unicode(
        "/home/jovyan",
        config=True,
        help="""
        The notebook user's home directory: a workflow is checked out into
        `<home_dir>/<repository name>`, on the volume mounted there if there is one.
        """,
    )

    checkout_env = Dict(
        value_trait=Unicode(),
        config=True,
        help="""
        Extra environment for the workflow checkout init container (`esap-checkout`), for
        what git needs at a site: a CA bundle the image holds (`GIT_SSL_CAINFO`), a proxy
        (`HTTPS_PROXY`, `NO_PROXY`). `HOME` and `GIT_TERMINAL_PROMPT` are always set by
        the spawner; names must be environment variable names.

        Example::

            c.ESAPSpawner.checkout_env = {"GIT_SSL_CAINFO": "/etc/ssl/site-ca.pem"}
        """,
    )

    @validate("checkout_env")
    def _valid_checkout_env(self, proposal: Any) -> dict[str, str]:
        env = dict(proposal["value"])
        bad = sorted(k for k in env if not ENV_NAME.fullmatch(str(k)))
        if bad:
            raise TraitError(
                f"ESAPSpawner.checkout_env: {', '.join(map(repr, bad))} "
                "is not an environment variable name (letters, digits and '_', not first a digit)"
            )
        ours = sorted(set(env) & objects.CHECKOUT_OWN_ENV)
        if ours:
            raise TraitError(
                f"ESAPSpawner.checkout_env: {', '.join(ours)} is set by the spawner and cannot "
                "be changed"
            )
        return env

    # -- the site file ---------------------------------------------------------------

    context = Instance(
        HubContext,
        help="What the hub's spawners share (esap_spawner.spawn.context); tests pass their own.",
    )

    @default("context")
    def _default_context(self) -> HubContext:
        return HubContext.of(self)

    @property
    def site(self) -> Site:
        return self.context.site

    def _user_groups(self) -> list[str]:
        return sorted(g.name for g in self.user.groups)

    def _is_admin(self) -> bool:
        return bool(getattr(self.user, "admin", False))

    def _visible(self) -> list[Profile]:
        return list(
            visible_profiles(
                self.site.profiles, groups=self._user_groups(), is_admin=self._is_admin()
            )
        )

    def _max_datasets(self) -> int:
        return self.max_datasets or self.site.data.max_dids

    # -- safe pod defaults (KubeSpawner traits; administrators may still change them) --

    @default("automount_service_account_token")
    def _default_automount(self) -> bool:
        return False

    @default("uid")
    def _default_uid(self) -> int:
        return 1000

    @default("fs_gid")
    def _default_fs_gid(self) -> int:
        return 100

    @default("container_security_context")
    def _default_container_security_context(self) -> dict[str, Any]:
        return {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }

    # -- profiles and the form ----------------------------------------------------------

    @default("profile_list")
    def _default_profile_list(self) -> Any:
        def profiles_for_user(spawner: ESAPSpawner) -> list[dict[str, Any]]:
            return [kubespawner_profile(p) for p in spawner._visible()]

        return profiles_for_user

    @default("options_form")
    def _default_options_form(self) -> Any:
        async def render(spawner: ESAPSpawner) -> str:
            return spawner.render_options_form(await spawner._form_availability())

        return render

    async def _cluster_view(self) -> ClusterModel:
        """The hub's cluster view, watching through KubeSpawner's own API client (and this
        spawner's namespace's quotas too)."""
        return await self.context.cluster_model(
            api_client=self.api.api_client,
            config=self.config,
            sync_timeout=self.admission_sync_timeout,
            namespace=self.namespace,
        )

    async def _form_availability(self) -> dict[str, Any] | None:
        """Live availability per profile for the form, from the hub's cluster view."""
        if not self.admission:
            return None
        model = await self._cluster_view()
        threshold = self.site.service.limited_threshold
        return dict(model.availability(self._visible(), limited_threshold=threshold))

    def _query_preselection(self) -> dict[str, Any]:
        """Choices of the deep link being shown, even refused ones, to correct on the form.

        From the request being rendered, or, after a start that failed (JupyterHub then
        drops the handler), from the last query this spawner was given; used once.
        """
        handler = getattr(self, "handler", None)
        if handler is not None:
            query = {
                key: [v.decode("utf8", "replace") for v in values]
                for key, values in handler.request.query_arguments.items()
            }
        else:
            query = self._esap_query or {}
        self._esap_query = None
        try:
            return options_from_query(query)
        except OptionsError:
            return {}

    def render_options_form(self, availability: dict[str, Any] | None = None) -> str:
        confirm, self._esap_confirm = self._esap_confirm, None
        return render_form(
            self._visible(), availability, chosen=self._query_preselection(), confirm=confirm
        )

    # -- the one validator, three ways in -----------------------------------------------

    # JupyterHub 5 sets a REST body here as sent and keeps it for the next start (6 refuses
    # one that is not a JSON object): any value is taken, and load_user_options refuses it
    # (Spawner's Dict made a body such as "small" a 500, and this spawner unbuildable).
    user_options = AnyValue(help="This spawn's options as sent; load_user_options checks them.")

    @default("user_options")
    def _default_user_options(self) -> dict[str, Any]:
        return {}

    def _validated(self, raw: Any) -> UserOptions:
        """Validate raw options; a refusal becomes a 400 (or 403) with the reason."""
        try:
            return validate_options(
                raw,
                site_profiles=self.site.profiles,
                groups=self._user_groups(),
                is_admin=self._is_admin(),
                max_datasets=self._max_datasets(),
                workflow_hosts=self.site.workflows.allowed_hosts,
            )
        except OptionsError as e:
            raise refusals.from_options(e) from None

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return self.esap_options_from_form

    def esap_options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        try:
            raw = options_from_form_data(formdata)
        except OptionsError as e:
            raise refusals.from_options(e) from None
        return self._validated(raw).to_dict()

    async def options_from_query(self, query_data: dict[str, list[str]]) -> dict[str, Any]:
        """A link's options; one with a workflow or datasets is confirmed on the form first
        (see :mod:`esap_spawner.spawn.confirm`), a dataset not in the catalogue refused."""
        self._esap_query = query_data  # for the form, if this link is refused or confirmed
        try:
            raw = options_from_query(query_data)
        except OptionsError as e:
            raise refusals.from_options(e) from None
        options = self._validated(raw)
        if not options.asks_to_run_code:
            return options.to_dict()
        localities = await dataset_localities(
            self.context.catalogue, options.datasets, timeout=self.link_locality_timeout
        )
        missing = [loc.message for loc in localities.values() if loc.status == "not_found"]
        if missing:
            raise refusals.refuse(RefusalReason.staging_refused, 404, "; ".join(missing))
        self._esap_confirm = summary(options, self.site.profile(options.profile), localities)
        quiet_confirmations(self.log)
        raise ConfirmFirst(options)

    async def load_user_options(self) -> None:
        # The REST API stores whatever JSON it was sent: validate it here, before
        # KubeSpawner reads anything from it.
        options = self._validated(getattr(self, "user_options", None) or {})
        self.user_options = options.to_dict()
        self.esap_options = options
        attempt = self._attempt()
        attempt.profile = options.profile
        attempt.datasets = len(options.datasets)
        attempt.validated = time.time()
        await super().load_user_options()
        try:
            await self.context.database()
        except SchemaError as e:  # the hub's snippet refuses to start on it; without it:
            self.log.error("esap: %s", e)
            raise refusals.failed(503, DATABASE_OUT_OF_DATE) from None
        await self._admit(self.site.profile(options.profile))
        try:
            await self._prepare_data(options)
        except StagingError as e:
            raise refusals.from_staging(e) from None

    async def _admit(self, profile: Profile) -> None:
        """Hold a slot for this spawn in the cluster view, or refuse with the reason."""
        if not self.admission:
            return
        model = await self._cluster_view()
        decision = model.reserve(
            profile,
            namespace=self.namespace,
            pod_name=self.pod_name,
            ttl=float(self.start_timeout) + 60,
        )
        if isinstance(decision, Refusal):
            raise refusals.from_capacity(decision)
        self._esap_reservation = decision

    # -- the life of one spawn ------------------------------------------------------------

    def _attempt(self) -> SpawnAttempt:
        if self._esap_attempt is None:
            self._esap_attempt = SpawnAttempt(user=self.user.name, requested=time.time())
        return self._esap_attempt

    def start(self) -> Any:
        self._esap_attempt = SpawnAttempt(user=self.user.name, requested=time.time())
        self._esap_reservation = None
        self.context.use_api_client(self.api.api_client)
        self.start_data()
        future = asyncio.ensure_future(_api_errors_in_words(super().start()))
        self._start_future = future  # KubeSpawner's progress() follows the start by it
        future.add_done_callback(self._spawn_settled)
        return future

    def _spawn_settled(self, future: asyncio.Future[Any]) -> None:
        attempt = self._attempt()
        status, reason = outcome_of(future, attempt)
        if self._esap_reservation is not None and status.value != "success":
            self._esap_reservation.release()
        self._esap_attempt = None
        events = list(self.events) if attempt.pod_created else []
        self.context.record(attempt, status, reason, events)

    async def get_pod_manifest(self) -> Any:
        pod = await super().get_pod_manifest()
        attempt = self._esap_attempt
        if attempt is not None:  # KubeSpawner creates the pod right after building it
            attempt.pod_created = time.time()
            attempt.pod_name = pod.metadata.name
        self.add_data_to_pod(pod)
        # Added after KubeSpawner's templating, which would read JSON braces as fields.
        options = getattr(self, "esap_options", None)
        if options is not None:
            pod.metadata.annotations = {
                **(pod.metadata.annotations or {}),
                objects.OPTIONS_ANNOTATION: json.dumps(options.to_dict(), sort_keys=True),
            }
        return pod
