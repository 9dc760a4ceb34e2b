"""The advertising service ESAP calls: what this hub offers and whether any is free now.

Run by JupyterHub as the service ``esap`` (``esap-spawner service``), it answers under
``/services/esap/``: ``api/v1/facility``, ``api/v1/profiles[/<slug>]``,
``api/v1/locality``, ``api/v1/openapi.json``, ``health`` and ``metrics``.

- :mod:`.app`: :func:`~.app.make_app` (the tornado Application) and
  :class:`~.app.ESAPService` (the configurable program);
- :mod:`.handlers`: the routes; :mod:`.views`: the JSON bodies, pure;
- :mod:`.auth`: JupyterHub tokens and scopes -> who sees what;
- :mod:`.interfaces`: what the service needs from the cluster model and a catalogue;
- ``openapi.json``: the OpenAPI 3.1 document, served and checked in tests.
"""

from esap_spawner.service.app import ESAPService, make_app

__all__ = ["ESAPService", "make_app"]
