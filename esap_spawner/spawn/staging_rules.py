"""The spawner and its staging rules, around a server's life.

A mixin (the base of the data side, :class:`~esap_spawner.spawn.data.DataSpawnerMixin`):

- the catalogue acts as the user when their ``auth_state`` holds a Rucio token
  (:meth:`StagingRules._catalogue_for_user`);
- at spawn, before the datasets are called ready, the rules keeping them here last
  ``rule_renew_margin`` more (:func:`esap_spawner.data.renewal.ensure_rules_last`), and the
  hub's one renewal loop (:class:`~esap_spawner.data.renewal.RuleRenewal`) is started, also
  by ``poll`` after a hub restart, for the datasets of the namespace's running servers;
- at stop, the server's staging requests are marked released in the database, and with
  ``remove_staging_rules_on_stop`` each rule its spawn made and nothing else needs goes
  (:meth:`StagingRules._why_the_rule_stays` says why one stays).
"""

from __future__ import annotations

import asyncio
from typing import Any

from traitlets import Float

from esap_spawner.data import staging
from esap_spawner.data.catalogue.base import Catalogue, CatalogueError, StagingRequest
from esap_spawner.data.renewal import RuleRenewal, ensure_rules_last
from esap_spawner.observe.db import Database
from esap_spawner.spawn import objects
from esap_spawner.spawn.host import _Host

__all__ = ["StagingRules"]


class StagingRules(_Host):
    """Renewing and releasing a spawner's staging rules (see the module)."""

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

    _esap_stager: staging.Stager | None = None
    _esap_saved_staging: dict[str, Any] | None = None

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
            return set(objects.servers_using(spawner._pods()))

        renewal = RuleRenewal(
            catalogue=lambda: context.catalogue, datasets_in_use=in_use,
            destination=destination, lifetime=lifetime, margin=margin,
            interval=self.rule_renew_interval,
        )  # fmt: skip
        context.start_once(f"rule-renewal-{self.namespace}", renewal.run)

    def _pods(self) -> list[dict[str, Any]]:
        """The servers' pods of this namespace, as KubeSpawner's watch last saw them."""
        reflector = self.pod_reflector
        return list(reflector.pods.values()) if reflector is not None else []

    async def poll(self) -> int | None:
        self._keep_rules_alive()  # after a hub restart: its running servers' rules too
        status: int | None = await super().poll()
        return status

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
            objects.servers_using(self._pods(), besides=self.pod_name).get(request.did, ())
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
