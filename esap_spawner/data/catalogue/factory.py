"""The one catalogue factory: the site file's ``data.catalogue`` -> a :class:`Catalogue`.

Used by the hub (through its context, once per site-file version) and by the advertising
service (which adapts the result for ``POST api/v1/locality``).
"""

from __future__ import annotations

from esap_spawner.data.catalogue.base import Catalogue
from esap_spawner.site.model import Site

__all__ = ["catalogue_from_site"]


def catalogue_from_site(site: Site) -> Catalogue | None:
    """The catalogue ``site.data.catalogue`` names: ``rucio`` (needs the ``rucio`` extra),
    ``static``, or None for ``none``.

    Raises what building it raises (``ImportError`` without rucio-clients, ``ValueError``
    for a section the catalogue cannot use): callers decide whether that stops them.
    """
    kind = site.data.catalogue
    if kind == "rucio":
        from esap_spawner.data.catalogue.rucio import RucioCatalogue  # needs rucio-clients

        return RucioCatalogue.from_site(site)
    if kind == "static":
        from esap_spawner.data.catalogue.static import StaticCatalogue

        return StaticCatalogue.from_site(site)
    return None
