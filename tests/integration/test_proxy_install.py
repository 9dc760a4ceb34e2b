"""configurable-http-proxy from npm: pinned by the lock, installed inside the checkout
wherever it sits, and ``make`` checks Node.js before it tries.

Runs ``make setup-proxy`` and ``make check-node`` in a copy of the files they use, in a
temporary folder (npm fetches from the registry or its cache).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def checkout_copy(where: Path) -> Path:
    where.mkdir(parents=True)
    for name in ("Makefile", "package.json", "package-lock.json"):
        shutil.copy2(REPO / name, where / name)
    return where


def make(
    folder: Path, target: str, *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=folder,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_npm_ci_installs_exactly_the_locked_tree_in_the_checkout(tmp_path: Path) -> None:
    folder = checkout_copy(tmp_path / "somewhere" / "esap-spawner")
    first = make(folder, "setup-proxy")
    assert first.returncode == 0, first.stdout + first.stderr
    proxy = folder / "node_modules/.bin/configurable-http-proxy"
    assert proxy.exists()
    lock = json.loads((folder / "package-lock.json").read_text())["packages"]
    wanted = json.loads((folder / "package.json").read_text())["dependencies"]
    assert (
        lock["node_modules/configurable-http-proxy"]["version"] == wanted["configurable-http-proxy"]
    )
    for path, entry in lock.items():
        if path:  # "" is the root package
            installed = json.loads((folder / path / "package.json").read_text())
            assert installed["version"] == entry["version"], path
    version = subprocess.run([str(proxy), "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == wanted["configurable-http-proxy"]
    # a second run leaves a tree that matches the lock alone
    (folder / "node_modules" / "left-alone").write_text("")
    again = make(folder, "setup-proxy")
    assert again.returncode == 0 and (folder / "node_modules" / "left-alone").exists()


def test_a_linked_node_modules_is_never_emptied(tmp_path: Path) -> None:
    shared = checkout_copy(tmp_path / "main")
    assert make(shared, "setup-proxy").returncode == 0
    worktree = checkout_copy(tmp_path / "worktree")
    (worktree / "node_modules").symlink_to(shared / "node_modules")
    linked = make(worktree, "setup-proxy")
    assert linked.returncode == 0, linked.stdout + linked.stderr
    assert (shared / "node_modules/.bin/configurable-http-proxy").exists()
    assert (worktree / "node_modules").is_symlink()


def test_make_says_which_node_to_install(tmp_path: Path) -> None:
    folder = checkout_copy(tmp_path / "checkout")
    old_node = tmp_path / "bin" / "node"
    old_node.parent.mkdir()
    # a stand-in for Debian 12's Node 18: answers what make asks it
    old_node.write_text('#!/bin/sh\ncase "$1" in --version) echo v18.20.4;; -p) echo 18;; esac\n')
    old_node.chmod(0o755)
    path = f"{old_node.parent}:{os.environ['PATH']}"
    result = make(folder, "check-node", env={"PATH": path})
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "Node.js 20 or newer is needed, this is v18.20.4" in said
    assert "install Node 20+" in said
    assert not (folder / "node_modules").exists()
    assert make(folder, "check-node").returncode == 0  # this machine's Node
