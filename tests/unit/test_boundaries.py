"""Who may import whom (docs/architecture.md), checked on the source: the product never
imports the developer tools (``esap_spawner/dev/``), and only the Kubernetes edge imports
kubernetes_asyncio and kubespawner. The hub's configuration snippets count as product."""

from __future__ import annotations

from pathlib import Path

import pytest

from esap_spawner.cli import SUBCOMMANDS
from esap_spawner.dev.imports import Import, imports_in, package_imports, wing_of

REPO = Path(__file__).resolve().parents[2]
IMPORTS = package_imports(REPO, sorted((REPO / "jupyterhub_config.d").glob("*.py")))

# The modules that talk to the Kubernetes API: the cluster view's list+watch, and the spawner
# (KubeSpawner's subclass, its data side, the objects its pods own, and the words for its API
# errors). Imports under `if TYPE_CHECKING:` do not count: they never run.
KUBERNETES_EDGE = {
    "esap_spawner.capacity.watch",
    "esap_spawner.spawn.spawner",
    "esap_spawner.spawn.data",
    "esap_spawner.spawn.pod_owned",
    "esap_spawner.spawn.records",
}
KUBESPAWNER_EDGE = {"esap_spawner.spawn.spawner", "esap_spawner.spawn.data"}


def product(found: Import) -> bool:
    return wing_of(found.source) != "dev"


def where(found: Import) -> str:
    return f"{found.source}:{found.line} imports {found.target}"


def test_the_product_never_imports_the_developer_tools() -> None:
    into_dev = [f for f in IMPORTS if product(f) and wing_of(f.target) == "dev"]
    # the one door: the CLI's demo and sim subcommands, named in its table and imported
    # only when chosen
    door = {SUBCOMMANDS["demo"][0], SUBCOMMANDS["sim"][0]}
    allowed = [f for f in into_dev if f.source == "esap_spawner.cli" and f.by_name]
    assert {f.target for f in allowed} == door
    assert [where(f) for f in into_dev if f not in allowed] == []


@pytest.mark.parametrize(
    ("library", "edge"),
    [("kubernetes_asyncio", KUBERNETES_EDGE), ("kubespawner", KUBESPAWNER_EDGE)],
)
def test_only_the_kubernetes_edge_imports_the_kubernetes_client(
    library: str, edge: set[str]
) -> None:
    users = [f for f in IMPORTS if product(f) and f.target.split(".")[0] == library]
    assert [where(f) for f in users if f.source not in edge] == []
    # every module the rule names still exists and still needs the exemption
    assert {f.source for f in users} == edge


def test_the_site_wing_imports_no_other_wing() -> None:
    """The site file's model is the base every wing builds on."""
    out = [f for f in IMPORTS if wing_of(f.source) == "site" and wing_of(f.target) not in
           ("site", "")]  # fmt: skip
    assert [where(f) for f in out] == []


def test_the_scanner_sees_every_kind_of_import() -> None:
    text = (
        "import kubernetes_asyncio\n"
        "from esap_spawner.dev import demo\n"
        "from . import sibling\n"
        "def later():\n"
        "    from kubespawner import KubeSpawner\n"
        "TABLE = {'demo': 'esap_spawner.dev.demo'}\n"
        "if TYPE_CHECKING:\n"
        "    from kubernetes_asyncio.client import ApiClient\n"
        "else:\n"
        "    import json\n"
    )
    found = {(f.target, f.line, f.by_name) for f in imports_in("esap_spawner.spawn.x", text)}
    assert found == {
        ("kubernetes_asyncio", 1, False),
        ("esap_spawner.dev.demo", 2, False),
        ("esap_spawner.spawn.sibling", 3, False),
        ("kubespawner.KubeSpawner", 5, False),
        ("esap_spawner.dev.demo", 6, True),
        ("json", 10, False),
    }
    assert wing_of("esap_spawner.cli") == "top" and wing_of("esap_spawner.dev.sim.cli") == "dev"
    assert wing_of("kubespawner") == ""
