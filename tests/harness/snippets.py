"""The hub's configuration snippets (``jupyterhub_config.d``) as tests load them: in-process
the way a plain hub's ``load_subconfig`` does (or as zero-to-jupyterhub execs them), or
through a real hub (:data:`LOAD_SNIPPETS` in its config). The fixture ``clean_env`` clears
every variable they read."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

REPO = Path(__file__).resolve().parents[2]
CONFIG_D = REPO / "jupyterhub_config.d"
EXAMPLE_SITE = REPO / "esap_spawner" / "site" / "examples" / "site.yaml"
ENV_KEYS = (
    "ESAP_SITE_FILE",
    "ESAP_SERVICE_MODE",
    "ESAP_SERVICE_URL",
    "ESAP_SERVICE_API_TOKEN",
    "ESAP_SERVICE_PORT",
    "ESAP_PORTAL_API_TOKEN",
    "ESAP_PORTAL_SERVICE_NAME",
    "ESAP_PORTAL_GROUPS",
    "ESAP_PORTAL_USERS",
    "ESAP_USER_ACCESS",
    "ESAP_AUTHENTICATE_PROMETHEUS",
    "ESAP_PROMETHEUS_API_TOKEN",
    "ESAP_PROMETHEUS_SERVICE_NAME",
    "ESAP_DATABASE_URL",
    "ESAP_DATABASE_UPGRADE",
)

# what a plain hub's jupyterhub_config.py adds to load the snippets (as the docs say)
LOAD_SNIPPETS = f"""
import glob
for _path in sorted(glob.glob({str(CONFIG_D)!r} + "/*.py")):
    load_subconfig(_path)
"""

# how zero-to-jupyterhub's jupyterhub_config.py loads them: exec in its own namespace
EXEC_SNIPPETS_LIKE_Z2JH = f"""
import glob
for _path in sorted(glob.glob({str(CONFIG_D)!r} + "/*.py")):
    with open(_path) as _f:
        exec(compile(source=_f.read(), filename=_path, mode="exec"))
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No ``ESAP_*`` variable the snippets read, and the working directory ``tmp_path``."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)  # the default database, sqlite:///esap.sqlite, lands here
    yield monkeypatch


def load_snippets(tmp_path: Path, prelude: str = "", *, loader: str = LOAD_SNIPPETS) -> Config:
    """The config a hub gets from ``prelude`` followed by the snippets, in-process."""
    main = tmp_path / "jupyterhub_config.py"
    main.write_text("c = get_config()  # noqa\n" + textwrap.dedent(prelude) + loader)
    loader = PyFileConfigLoader(main.name, path=str(tmp_path))
    return loader.load_config()


def as_list(value: Any) -> list[Any]:
    """A list trait's config value, whether set as a list or only appended to (lazy)."""
    return list(value) if isinstance(value, list) else list(value.get_value([]))
