"""The documentation: builds with ``mkdocs build --strict``; generated references are complete.

The reference sections come from the sources of truth (docs/gen_reference.py); these
tests check they cover every key and option, and that the hand-written pages do not drift
from the code they describe (the snippets' environment variables).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def _gen() -> Any:
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _gen()


def _schema_paths(node: dict[str, Any], root: dict[str, Any], path: str = "") -> set[str]:
    """Every key path of a schema, written as the reference writes them."""
    node = gen._resolve(node, root)
    paths = {path} if path else set()
    for key, sub in node.get("properties", {}).items():
        paths |= _schema_paths(sub, root, f"{path}.{key}" if path else key)
    items = node.get("items")
    if isinstance(items, dict):
        items = gen._resolve(items, root)
        for key, sub in items.get("properties", {}).items():
            paths |= _schema_paths(sub, root, f"{path}[].{key}")
    return paths


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stderr
    page = (site / "reference" / "site-file" / "index.html").read_text()
    assert "<!-- esap:" not in page  # every marker was expanded
    assert "profiles[].slug" in page
    assert not list(site.rglob("*.py")), "the hook's source must not be published"


def test_site_reference_lists_every_key() -> None:
    schema = json.loads(gen.SITE_SCHEMA.read_text())
    text = gen.site_reference()
    missing = [p for p in sorted(_schema_paths(schema, schema)) if f"| `{p}` |" not in text]
    assert missing == []
    # types, defaults and descriptions are there too
    assert "| `profiles[].gpu.count` | integer | `0` | Number of GPUs" in text
    assert "| `facility.name` | string | required |" in text


def test_values_reference_lists_every_chart_key() -> None:
    schema = yaml.safe_load(gen.VALUES_SCHEMA.read_text())
    text = gen.values_reference()
    wanted = {
        p
        for p in _schema_paths(schema, schema)
        if not p.startswith(("esap", "global", "jupyterhub."))
    }
    missing = sorted(p for p in wanted if f"| `{p}` |" not in text)
    assert missing == []
    # defaults come from values.yaml
    assert '| `service.hubApiUrl` | string | `"http://hub:8081/hub/api"` |' in text


def test_config_reference_lists_every_option() -> None:
    from esap_spawner.service.app import ESAPService
    from esap_spawner.spawn.spawner import ESAPSpawner

    text = gen.config_reference()
    for cls in (ESAPSpawner, ESAPService):
        for name in cls.class_own_traits(config=True):
            assert f"### `{cls.__name__}.{name}`" in text
    # reStructuredText examples became fenced code
    assert '```python\nc.ESAPSpawner.site_file = "/etc/esap/site.yaml"\n```' in text


def test_api_routes_follow_the_openapi_document() -> None:
    spec = json.loads(gen.OPENAPI.read_text())
    text = gen.api_routes()
    for path in spec["paths"]:
        assert f"/services/esap{path}`" in text


def test_unknown_marker_is_an_error() -> None:
    with pytest.raises(ValueError, match="esap-nope"):
        gen.expand("intro\n<!-- esap:esap-nope -->\n")


def test_rst_help_becomes_markdown() -> None:
    help_text = """First line with ``code``.

        Example::

            c.X.y = 1
            c.X.z = 2

        After.
        """
    assert gen.rst_to_markdown(help_text) == (
        "First line with `code`.\n\nExample:\n\n```python\nc.X.y = 1\nc.X.z = 2\n```\n\nAfter."
    )


def test_snippet_environment_is_documented() -> None:
    used = set()
    for snippet in (REPO / "jupyterhub_config.d").glob("*.py"):
        used |= set(re.findall(r'"(ESAP_[A-Z_]+)"', snippet.read_text()))
    page = (DOCS / "jupyterhub-config-d.md").read_text()
    assert used, "no environment variables found: the pattern is stale"
    assert sorted(v for v in used if f"`{v}`" not in page) == []


def test_nav_names_only_pages_that_exist_or_are_owned_elsewhere() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())

    def pages(nav: Any) -> list[str]:
        if isinstance(nav, list):
            return [p for item in nav for p in pages(item)]
        if isinstance(nav, dict):
            return [p for v in nav.values() for p in pages(v)]
        return [nav]

    missing = [p for p in pages(config["nav"]) if not (DOCS / p).exists()]
    assert set(missing) <= gen.OPTIONAL_PAGES
