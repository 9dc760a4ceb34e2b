"""The data catalogue behind ``POST api/v1/locality``, chosen by the site file.

The catalogue comes from the package's one factory,
:func:`esap_spawner.data.catalogue.factory.catalogue_from_site` (the hub uses it too);
:func:`locality_backend` adapts it: ``data.catalogue: none`` ->
:class:`~.interfaces.NoCatalogue` (every DID ``unknown``, saying why); ``static`` or
``rucio`` -> :class:`CatalogueLocality`. A catalogue that cannot be built (the ``rucio``
extra missing, a section it cannot use) does not stop the service: it answers ``unknown``
with the reason and fails the ``catalogue`` health check.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from esap_spawner.data.catalogue.base import Catalogue, CatalogueError, InvalidDid
from esap_spawner.data.catalogue.factory import catalogue_from_site
from esap_spawner.service.interfaces import (
    CheckResult,
    LocalityCatalogue,
    LocalityUnavailable,
    NoCatalogue,
)
from esap_spawner.site.model import Site

__all__ = ["BrokenCatalogue", "CatalogueLocality", "locality_backend"]

log = logging.getLogger(__name__)


class CatalogueLocality:
    """An :class:`esap_spawner.data.catalogue.Catalogue` as the service's locality backend."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    async def locality(self, dids: Sequence[str]) -> list[dict[str, Any]]:
        try:
            results: list[dict[str, Any]] = await self.catalogue.locality_json(dids)
        except InvalidDid:
            raise  # the handler checked every DID first: this is a bug, let it be a 500
        except CatalogueError as exc:
            # unreachable, credentials refused, access denied: nothing the caller can fix
            raise LocalityUnavailable(f"the data catalogue could not answer: {exc}") from exc
        return results

    def health(self) -> CheckResult:
        health = self.catalogue.health()
        return CheckResult(bool(health.ok), str(health.message))

    @property
    def cache_seconds(self) -> float:
        """How long the catalogue keeps what it learned about a DID (its ``cache_ttl``),
        so how long the service may repeat an answer; 0 for a catalogue without a cache."""
        settings = getattr(self.catalogue, "settings", self.catalogue)  # Rucio's, static's
        return float(getattr(settings, "cache_ttl", 0.0))

    async def close(self) -> None:
        await self.catalogue.close()


class BrokenCatalogue:
    """A catalogue the site file asks for but that could not be built (answering makes
    no call to it: ``remote`` is False, as for :class:`~.interfaces.NoCatalogue`)."""

    remote = False

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def locality(self, dids: Sequence[str]) -> list[dict[str, Any]]:
        results = await NoCatalogue().locality(dids)
        for result in results:
            result["message"] = self.reason
        return results

    def health(self) -> CheckResult:
        return CheckResult(False, self.reason)


def locality_backend(site: Site) -> LocalityCatalogue:
    """The locality backend for the catalogue the site file's ``data.catalogue`` names."""
    try:
        catalogue = catalogue_from_site(site)
    except Exception as exc:  # missing extra, unusable section: advertise profiles anyway
        kind = site.data.catalogue
        reason = f"the {kind} data catalogue could not be set up ({exc}): locality is unknown"
        log.error("%s", reason)
        return BrokenCatalogue(reason)
    return NoCatalogue() if catalogue is None else CatalogueLocality(catalogue)
