"""The init containers' program, run for real: ``python3 datalinks.py ...`` in a subprocess, on
a temporary "container filesystem" (``--rootfs``) with fake storage mounts and files. The
program runs from a folder holding exactly what its ConfigMap holds, with an interpreter
that sees no site-packages (so no esap_spawner), as in the user's image. Its git checkout
is tested against a real https git server in ``tests/integration/test_checkout.py``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import esap_spawner.data.datalinks as datalinks_module
from esap_spawner.spawn import objects

pytestmark = pytest.mark.integration

ROOT = "/home/jovyan/datasets"
MOUNT = "/rucio/hub-local"
PROGRAM: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The program and the DID grammar it imports, written as the pod's ConfigMap holds them."""
    folder = tmp_path_factory.mktemp("opt-esap")
    data = objects.datalinks_config_map("p", {"version": 1, "datasets": {}})["data"]
    for key in (objects.SCRIPT_KEY, objects.GRAMMAR_KEY):
        (folder / key).write_text(data[key])
    PROGRAM["script"] = folder / objects.SCRIPT_KEY
    return folder


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The script as the init container runs it: no site-packages, no esap_spawner around."""
    return subprocess.run(
        [sys.executable, "-S", "-E", str(PROGRAM["script"]), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={"PATH": os.environ["PATH"]},
    )


def plan(files: list[dict[str, Any]], did: str = "escape:crab-2020") -> dict[str, Any]:
    return {
        "version": 1,
        "mount_root": ROOT,
        "allowed_roots": [MOUNT],
        "rses": ["HUB_LOCAL_DISK"],
        "datasets": {did: {"files": files, "bytes_total": sum(f["bytes"] for f in files)}},
    }


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A container filesystem: two replica files on the RSE mount, nothing else."""
    fs = tmp_path / "rootfs"
    for rel, content in (("escape/ab/cd/c.0000", b"zero"), ("escape/12/34/c.0001", b"one!!")):
        target = fs / MOUNT.lstrip("/") / rel
        target.parent.mkdir(parents=True)
        target.write_bytes(content)
    return fs


def files() -> list[dict[str, Any]]:
    return [
        {"name": "c.0000", "bytes": 4, "adler32": "0aaa01b6", "md5": None,
         "rse": "HUB_LOCAL_DISK", "path": f"{MOUNT}/escape/ab/cd/c.0000"},
        {"name": "c.0001", "bytes": 5, "adler32": "0bbb0222", "md5": "m",
         "rse": "HUB_LOCAL_DISK", "path": f"{MOUNT}/escape/12/34/c.0001"},
    ]  # fmt: skip


def write_plan(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    return path


def test_builds_relative_links_and_manifest_idempotently(tmp_path: Path, rootfs: Path) -> None:
    plan_file = write_plan(tmp_path, plan(files()))
    args = ("links", "--plan", str(plan_file), "--root", ROOT, "--rootfs", str(rootfs))
    first = run(*args)
    assert first.returncode == 0, first.stderr
    assert "escape:crab-2020: 2 files, 9 bytes" in first.stdout
    assert "(2 made, 0 kept, 0 replaced)" in first.stdout

    folder = rootfs / ROOT.lstrip("/") / "escape" / "crab-2020"
    assert sorted(p.name for p in folder.iterdir()) == ["c.0000", "c.0001"]
    link = folder / "c.0000"
    assert link.is_symlink()
    assert os.readlink(link) == "../../../../../rucio/hub-local/escape/ab/cd/c.0000"
    assert link.read_bytes() == b"zero"  # relative: resolves under the temporary root
    assert (folder / "c.0001").read_bytes() == b"one!!"

    manifest = json.loads((rootfs / ROOT.lstrip("/") / "manifest.json").read_text())
    assert manifest == {
        "version": 1,
        "mount_root": ROOT,
        "datasets": {
            "escape:crab-2020": {
                "path": f"{ROOT}/escape/crab-2020",
                "files_total": 2,
                "bytes_total": 9,
                "files": [
                    {"name": "c.0000", "bytes": 4, "adler32": "0aaa01b6", "md5": None,
                     "rse": "HUB_LOCAL_DISK", "path": f"{ROOT}/escape/crab-2020/c.0000",
                     "replica": f"{MOUNT}/escape/ab/cd/c.0000"},
                    {"name": "c.0001", "bytes": 5, "adler32": "0bbb0222", "md5": "m",
                     "rse": "HUB_LOCAL_DISK", "path": f"{ROOT}/escape/crab-2020/c.0001",
                     "replica": f"{MOUNT}/escape/12/34/c.0001"},
                ],
            }
        },
    }  # fmt: skip

    again = run(*args)
    assert again.returncode == 0, again.stderr
    assert "(0 made, 2 kept, 0 replaced)" in again.stdout
    assert os.readlink(link) == "../../../../../rucio/hub-local/escape/ab/cd/c.0000"

    # the whole tree moved elsewhere still resolves: links are relative
    moved = tmp_path / "moved"
    shutil.copytree(rootfs, moved, symlinks=True)
    assert (moved / ROOT.lstrip("/") / "escape" / "crab-2020" / "c.0001").read_bytes() == b"one!!"


def test_link_pointing_elsewhere_is_replaced_and_a_file_in_the_way_refused(
    tmp_path: Path, rootfs: Path
) -> None:
    folder = rootfs / ROOT.lstrip("/") / "escape" / "crab-2020"
    folder.mkdir(parents=True)
    (folder / "c.0000").symlink_to("/somewhere/else")
    plan_file = write_plan(tmp_path, plan(files()))
    done = run("links", "--plan", str(plan_file), "--root", ROOT, "--rootfs", str(rootfs))
    assert done.returncode == 0, done.stderr
    assert "(1 made, 0 kept, 1 replaced)" in done.stdout
    assert (folder / "c.0000").read_bytes() == b"zero"

    (folder / "c.0001").unlink()
    (folder / "c.0001").write_text("user file")
    refused = run("links", "--plan", str(plan_file), "--root", ROOT, "--rootfs", str(rootfs))
    assert refused.returncode == 2
    assert "is not a link: not touching it" in refused.stderr
    assert (folder / "c.0001").read_text() == "user file"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"path": f"{MOUNT}/../../etc/passwd"}, "not a normalised path"),
        ({"path": "/etc/passwd"}, "outside the storage mounts"),
        ({"path": f"{MOUNT}-evil/x"}, "outside the storage mounts"),
        ({"path": "relative/x"}, "must be an absolute path"),
        ({"name": "../../../../tmp/evil"}, "would leave the dataset folder"),
        ({"name": "/tmp/evil"}, "must be a relative path"),
        ({"name": "a//b"}, "would leave the dataset folder"),
    ],
)
def test_escaping_paths_are_refused_before_anything_is_made(
    tmp_path: Path, rootfs: Path, change: dict[str, str], words: str
) -> None:
    bad = files()
    bad[1] = dict(bad[1], **change)
    plan_file = write_plan(tmp_path, plan(bad))
    result = run("links", "--plan", str(plan_file), "--root", ROOT, "--rootfs", str(rootfs))
    assert result.returncode == 2
    assert words in result.stderr
    assert not (rootfs / ROOT.lstrip("/")).exists()  # checked first: nothing was made
    assert not (tmp_path / "tmp").exists()


@pytest.mark.parametrize(
    ("did", "words"),
    [
        ("../etc:x", "the scope '../etc'"),
        ("..:x", "the scope '..'"),
        ("escape:../x", "the name '../x'"),
        ("noscope", "is not a dataset identifier"),
        ("a:b/c", "the name 'b/c'"),
    ],
)
def test_malformed_did_refused(tmp_path: Path, rootfs: Path, did: str, words: str) -> None:
    plan_file = write_plan(tmp_path, plan(files(), did=did))
    result = run("links", "--plan", str(plan_file), "--root", ROOT, "--rootfs", str(rootfs))
    assert result.returncode == 2
    assert words in result.stderr


def test_missing_replica_reported_and_strict_fails(tmp_path: Path, rootfs: Path) -> None:
    gone = files()
    gone[0] = dict(gone[0], path=f"{MOUNT}/escape/00/00/missing")
    plan_file = write_plan(tmp_path, plan(gone))
    args = ("links", "--plan", str(plan_file), "--root", ROOT, "--rootfs", str(rootfs))
    lenient = run(*args)
    assert lenient.returncode == 0
    assert "1 replicas MISSING" in lenient.stdout
    assert run(*args, "--strict").returncode == 1


def test_git_argv_never_uses_a_shell() -> None:
    argvs = datalinks_module.git_argvs("https://git.example.org/a/b.git", "v1", "/home/j/b")
    safety = ["-c", "protocol.allow=never", "-c", "protocol.https.allow=always",
              "-c", "http.followRedirects=false"]  # fmt: skip
    assert argvs == [
        ["git", *safety, "clone", "--depth", "1", "--branch", "v1", "--",
         "https://git.example.org/a/b.git", "/home/j/b"]
    ]  # fmt: skip
    sha = datalinks_module.git_argvs("https://g/a.git", "0123abcd", "/d")
    assert ["git", *safety, "-C", "/d", "fetch", "--depth", "1", "--", "origin", "0123abcd"] in sha
    assert all(argv[1:7] == safety for argv in sha)


def test_links_hold_the_pods_view_when_root_is_shown_elsewhere(
    tmp_path: Path, rootfs: Path
) -> None:
    """A runtime that shows the program the datasets folder at another path (the simulator's
    pod root translates ``--root``, not the plan's JSON): links are still pod-relative."""
    plan_file = write_plan(tmp_path, plan(files()))
    shown = rootfs / ROOT.lstrip("/")
    done = run("links", f"--plan={plan_file}", f"--root={shown}", "--strict")
    assert done.returncode == 0, done.stderr
    link = shown / "escape" / "crab-2020" / "c.0001"
    assert os.readlink(link) == "../../../../../rucio/hub-local/escape/12/34/c.0001"
    assert link.read_bytes() == b"one!!"
    manifest = json.loads((shown / "manifest.json").read_text())
    assert manifest["mount_root"] == ROOT
    assert manifest["datasets"]["escape:crab-2020"]["files"][1]["path"] == (
        f"{ROOT}/escape/crab-2020/c.0001"
    )
