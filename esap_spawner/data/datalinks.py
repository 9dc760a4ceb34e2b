#!/usr/bin/env python3
"""The init containers' program: dataset links and workflow checkout. STDLIB ONLY.

This file runs inside the user's image, where esap-spawner is not installed: the spawner
ships its source in the pod's ConfigMap and runs it as ``python3 /path/datalinks.py ...``.
It imports nothing but the standard library and the DID grammar
(:mod:`esap_spawner.data.did`, stdlib only too), which the ConfigMap carries beside it as
``esap_did.py``.

``links --plan PLAN --root MOUNT_ROOT [--rootfs DIR] [--strict]``
    For every dataset of the plan (JSON written by :mod:`esap_spawner.spawn.objects`) make
    ``<root>/<scope>/<name>/<file>`` a RELATIVE symbolic link to the file's replica path
    (under one of the plan's ``allowed_roots``, the read-only storage mounts), computed from
    the plan's own ``mount_root`` (the pod's view, so it holds wherever ``--root`` shows
    that folder), then write
    ``<root>/manifest.json``: DID -> files (name, bytes, checksums, link path, replica path).
    Refuses (exit 2) a plan with a malformed DID, a file name that climbs out of its dataset
    folder, or a replica path outside the allowed roots. Idempotent: links already right are
    kept, links pointing elsewhere are replaced, anything else in the way is refused.
    ``--rootfs`` treats every absolute path as relative to DIR (tests, debugging): links are
    relative, so the tree resolves the same under any root. Missing replicas are reported;
    with ``--strict`` they fail the run (exit 1).

``checkout --url URL --dest DIR [--ref REF]``
    ``git clone --depth 1 [--branch REF] -- URL DIR``, or for a commit id ``git init``, a
    shallow ``git fetch`` of that commit and a detached checkout. Only an ``https://`` URL
    is taken, and git itself runs with every transport but https refused and redirects not
    followed (:data:`GIT_SAFETY`), so nothing the repository's server answers can lead it
    to a local path, ssh or another host. Arguments go to git as an argv list (never a
    shell) after ``--``; ``GIT_TERMINAL_PROMPT=0``. A DIR that already holds files is left
    alone (a restart must never overwrite the user's work).
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile

try:  # in the pod: the grammar travels beside this program
    from esap_did import DidError, parse_did
except ImportError:  # imported from the installed package
    from esap_spawner.data.did import DidError, parse_did

MANIFEST_NAME = "manifest.json"
PLAN_VERSION = 1
_SEGMENT = re.compile(r"^[^/\x00]{1,255}$")
_SHA = re.compile(r"^[0-9a-f]{7,40}$")
#: Given to every git command: https is the only transport (no file://, local paths, ssh,
#: git://, ext::), and no redirect is followed.
GIT_SAFETY = (
    "-c", "protocol.allow=never",
    "-c", "protocol.https.allow=always",
    "-c", "http.followRedirects=false",
)  # fmt: skip
_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./\-]{0,254}$")


class Refused(Exception):
    """The plan (or the arguments) would do something unsafe; nothing more is done."""


# --- checking the plan ---------------------------------------------------------------------
def split_did(did: object) -> tuple[str, str]:
    """``scope:name`` -> its two parts, both safe as one path segment each."""
    try:
        scope, name = parse_did(did)
    except DidError as exc:
        raise Refused(str(exc)) from None
    return scope, name


def safe_relative(name: object, did: str) -> str:
    """A file name inside its dataset folder: relative, no '', '.' or '..' segments."""
    if not isinstance(name, str) or not name or name.startswith("/"):
        raise Refused(f"{did}: file name {name!r} must be a relative path")
    parts = name.split("/")
    if any(p in ("", ".", "..") or not _SEGMENT.match(p) for p in parts):
        raise Refused(f"{did}: file name {name!r} would leave the dataset folder")
    return name


def safe_target(path: object, roots: list[str], did: str) -> str:
    """A replica path: absolute, normalised, inside one of ``roots`` (or one of them: a
    storage mounted file by file)."""
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        raise Refused(f"{did}: replica path {path!r} must be an absolute path")
    if any(p in (".", "..") for p in path.split("/")) or posixpath.normpath(path) != path:
        raise Refused(f"{did}: replica path {path!r} is not a normalised path")
    for root in roots:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return path
    raise Refused(f"{did}: replica path {path!r} is outside the storage mounts {roots}")


def check_plan(plan: object, root: str) -> list[tuple[str, list[dict[str, object]]]]:
    """The plan's datasets as ``[(did, [file, ...])]`` with ``link`` and ``target`` filled in;
    :class:`Refused` at the first unsafe entry."""
    if not isinstance(plan, dict) or plan.get("version") != PLAN_VERSION:
        raise Refused(f"not a version {PLAN_VERSION} esap-spawner plan")
    roots = plan.get("allowed_roots")
    if not isinstance(roots, list) or not all(
        isinstance(r, str) and r.startswith("/") and posixpath.normpath(r) == r.rstrip("/")
        for r in roots
    ):
        raise Refused("the plan's allowed_roots must be absolute, normalised paths")
    datasets = plan.get("datasets")
    if not isinstance(datasets, dict):
        raise Refused("the plan has no 'datasets' mapping")
    out = []
    for did, entry in datasets.items():
        scope, name = split_did(did)
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, list):
            raise Refused(f"{did}: 'files' must be a list")
        folder = posixpath.join(root, scope, name)
        checked = []
        seen: set[str] = set()
        for item in files:
            if not isinstance(item, dict):
                raise Refused(f"{did}: file entries must be objects")
            rel = safe_relative(item.get("name"), did)
            if rel in seen:
                raise Refused(f"{did}: file {rel!r} is listed twice")
            seen.add(rel)
            target = safe_target(item.get("path"), roots, did)
            checked.append(dict(item, name=rel, link=posixpath.join(folder, rel), target=target))
        out.append((did, checked))
    return out


# --- building the tree ---------------------------------------------------------------------
def on_disk(path: str, rootfs: str | None) -> str:
    """Where absolute pod path ``path`` is on this machine (under ``rootfs`` if given)."""
    return rootfs.rstrip("/") + path if rootfs else path


def make_link(link: str, target: str, where: str) -> str:
    """Make ``where`` (pod path ``link``, on this machine) a symlink to pod path ``target``,
    relative in pod coordinates; returns made / kept / replaced."""
    text = os.path.relpath(target, posixpath.dirname(link))
    os.makedirs(os.path.dirname(where), exist_ok=True)
    if os.path.islink(where):
        if os.readlink(where) == text:
            return "kept"
        os.unlink(where)
        os.symlink(text, where)
        return "replaced"
    if os.path.lexists(where):
        raise Refused(f"{link} exists and is not a link: not touching it")
    os.symlink(text, where)
    return "made"


def write_json(path: str, data: object) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file, then a rename)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def build_links(plan: object, root: str, *, rootfs: str | None, strict: bool) -> int:
    """Make the links and the manifest; print one line per dataset. Returns the exit code.

    Links are computed in pod coordinates (the plan's ``mount_root`` and replica paths)
    and written under ``root`` (plus ``rootfs``): in a real pod both are the same folder;
    where a runtime shows the program another path for the same folder (the simulator's
    pod root), the links still hold the pod's view.
    """
    root = posixpath.normpath(root)
    if not root.startswith("/"):
        raise Refused(f"--root {root!r} must be an absolute path")
    declared = plan.get("mount_root") if isinstance(plan, dict) else None
    pod_root = posixpath.normpath(declared) if isinstance(declared, str) else root
    if not pod_root.startswith("/"):
        raise Refused(f"the plan's mount_root {declared!r} must be an absolute path")
    disk_root = on_disk(root, rootfs)
    datasets = check_plan(plan, pod_root)  # everything checked before anything is touched
    manifest: dict[str, object] = {"version": PLAN_VERSION, "mount_root": pod_root, "datasets": {}}
    missing_total = 0
    for did, files in datasets:
        counts = {"made": 0, "kept": 0, "replaced": 0}
        missing = 0
        for f in files:
            link = str(f["link"])
            where = disk_root + link[len(pod_root) :]
            counts[make_link(link, str(f["target"]), where)] += 1
            if not os.path.exists(where):  # follows the link, as the notebook will
                missing += 1
        scope, name = split_did(did)
        folder = posixpath.join(pod_root, scope, name)
        size = sum(int(f.get("bytes") or 0) for f in files)  # type: ignore[call-overload]
        manifest["datasets"][did] = {  # type: ignore[index]
            "path": folder,
            "files_total": len(files),
            "bytes_total": size,
            "files": [
                {
                    "name": f["name"],
                    "bytes": f.get("bytes"),
                    "adler32": f.get("adler32"),
                    "md5": f.get("md5"),
                    "rse": f.get("rse"),
                    "path": f["link"],
                    "replica": f["target"],
                }
                for f in files
            ],
        }
        note = f", {missing} replicas MISSING" if missing else ""
        print(
            f"esap-datalinks: {did}: {len(files)} files, {size} bytes -> {folder} "
            f"({counts['made']} made, {counts['kept']} kept, {counts['replaced']} replaced{note})"
        )
        missing_total += missing
    write_json(posixpath.join(disk_root, MANIFEST_NAME), manifest)
    print(f"esap-datalinks: wrote {posixpath.join(pod_root, MANIFEST_NAME)}")
    return 1 if strict and missing_total else 0


# --- workflow checkout ---------------------------------------------------------------------
def git_argvs(url: str, ref: str | None, dest: str) -> list[list[str]]:
    """The git commands (argv lists) that check ``url`` at ``ref`` out into ``dest``."""
    if not url or url.startswith("-") or any(c.isspace() for c in url):
        raise Refused(f"workflow URL {url!r} is not usable")
    if not url.lower().startswith("https://"):
        raise Refused(f"workflow URL {url[:80]!r} is not an https URL: nothing else is fetched")
    git = ["git", *GIT_SAFETY]
    if ref in (None, "", "HEAD"):
        return [[*git, "clone", "--depth", "1", "--", url, dest]]
    assert ref is not None
    if not _REF.match(ref) or ".." in ref or ref.endswith((".lock", "/", ".")):
        raise Refused(f"workflow ref {ref!r} is not a valid branch, tag or commit")
    if _SHA.match(ref):
        return [
            [*git, "init", "--quiet", "--", dest],
            [*git, "-C", dest, "remote", "add", "--", "origin", url],
            [*git, "-C", dest, "fetch", "--depth", "1", "--", "origin", ref],
            [*git, "-C", dest, "-c", "advice.detachedHead=false", "checkout", "--detach",
             "FETCH_HEAD"],
        ]  # fmt: skip
    return [[*git, "clone", "--depth", "1", "--branch", ref, "--", url, dest]]


def checkout(url: str, ref: str | None, dest: str) -> int:
    """Check the workflow out into ``dest`` unless something is there already."""
    if os.path.isdir(dest) and os.listdir(dest):
        print(f"esap-checkout: {dest} already holds files: kept as it is")
        return 0
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    for argv in git_argvs(url, ref, dest):
        print("esap-checkout: " + " ".join(argv), flush=True)
        result = subprocess.run(argv, env=env, check=False)  # argv list: no shell
        if result.returncode != 0:
            if os.path.isdir(dest):  # a partial checkout helps no one
                for entry in os.listdir(dest):
                    full = os.path.join(dest, entry)
                    if os.path.isdir(full) and not os.path.islink(full):
                        shutil.rmtree(full)
                    else:
                        os.unlink(full)
            print(f"esap-checkout: git failed with exit code {result.returncode}", file=sys.stderr)
            return result.returncode
    print(f"esap-checkout: {url} at {ref or 'HEAD'} is in {dest}")
    return 0


# --- command line --------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="datalinks.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    links = sub.add_parser("links", help="build <root>/<scope>/<name>/<file> and manifest.json")
    links.add_argument("--plan", required=True, help="the spawner's plan (JSON)")
    links.add_argument("--root", required=True, help="mount_root: where the tree is built")
    links.add_argument("--rootfs", help="treat absolute paths as relative to this folder")
    links.add_argument("--strict", action="store_true", help="fail when a replica is missing")
    co = sub.add_parser("checkout", help="check a workflow repository out")
    co.add_argument("--url", required=True)
    co.add_argument("--ref")
    co.add_argument("--dest", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "links":
            with open(args.plan, encoding="utf-8") as f:
                plan = json.load(f)
            return build_links(plan, args.root, rootfs=args.rootfs, strict=args.strict)
        return checkout(args.url, args.ref, args.dest)
    except Refused as exc:
        print(f"esap-datalinks: refused: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"esap-datalinks: failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
