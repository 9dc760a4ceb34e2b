"""ESAP's own code, replicated as it is written, for tests to build what ESAP sends.

Not our helpers: the Deploy redirect of esap-api-gateway (``ida/api/views/ida_views.py``,
``Deploy.deploy``), character for character, so a test proves that ESAP's unchanged code
lands where it must (see ``../shared/notes/anchors.md``, "ESAP").
"""

from __future__ import annotations

from urllib.parse import quote_plus


def esap_deploy(facility_url: str, repo: str, ref: str, filepath: str) -> str:
    """Where ESAP's Deploy button sends the browser for ``facility.url``, ``workflow.url``,
    ``workflow.ref`` and ``filepath``."""
    return f"{facility_url}v2/git/{quote_plus(repo)}/{ref}?urlpath=lab" + (
        "/tree/" + quote_plus(filepath) if filepath else ""
    )
