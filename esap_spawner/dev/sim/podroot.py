"""The process kubelet's stand-in for a container's filesystem: a per-pod root and path translation.

A pod in process mode runs on the host's filesystem, with no mount namespace. Its containers
share one folder, the pod's *root* (``<podroot>``, under the simulator's work folder), in which
the kubelet lays out what a container would see: the image's home directory
(``<podroot>/home/jovyan`` by default) and every volume mount at ``<podroot>/<mountPath>``
(see :mod:`esap_spawner.dev.sim.volumes`).

Path translation (:meth:`PodRoot.translate`) is what makes an unmodified program, such as
``jupyterhub-singleuser`` or the datasets init container, find those files. The rule:

    An absolute path in a container's argv or env that lies under one of the pod's mount
    paths or under the home (``/home/jovyan/datasets/manifest.json``) is prefixed with
    ``<podroot>``; every other absolute path (the interpreter, ``/usr/...``, the venv) is
    left as it is, since the process runs on the host.

It applies to each whole argv element, to the value of an ``--option=/path`` (or
``-o=/path``) element, to each env value and to each element of a ``:``-separated env value
made only of absolute paths (``PYTHONPATH=/home/jovyan/lib:/opt/x``), after ``$(VAR)``
expansion, once. The working directory (``workingDir``, any absolute path, created if
missing) and ``HOME`` always live in ``<podroot>``; the environment inherited from the
"node" (PATH, VIRTUAL_ENV, ...) is never translated. Paths inside files (a ConfigMap's JSON,
a script) are not translated: a program that reads absolute pod paths from a file and
combines them with translated ones must work in pod coordinates (relative links from the
pod paths it was given), which is also what keeps such links valid on a real cluster.

Relative symbolic links made inside ``<podroot>`` resolve when both ends are under
``<podroot>`` and the folder holding the link is a real folder at its pod path (not reached
through a link to a hostPath or a claim's folder), since ``..`` is resolved physically.

This is a simulation, not a sandbox: a process may still read and write anywhere the
simulator's user may.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_HOME", "PodRoot", "remove_tree"]

#: The image's home directory when the simulator is not told otherwise (Jupyter images).
DEFAULT_HOME = "/home/jovyan"
_OPTION = re.compile(r"^(-{1,2}[A-Za-z0-9][A-Za-z0-9_.\-]*=)(/.*)$")


def _under(path: str, prefix: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix.rstrip("/") + "/")


@dataclass
class PodRoot:
    """One pod's root folder and the pod paths that live in it."""

    root: Path  # <podroot>, a real (resolved) path
    home: str = DEFAULT_HOME  # the home directory as a pod path
    mount_paths: tuple[str, ...] = ()  # every volumeMount's mountPath, normalised
    #: entries made OUTSIDE the root (mount points inside a claim's folder), removed at the end
    outside: list[Path] = field(default_factory=list)
    #: (namespace, claim) of the PersistentVolumeClaims this pod mounts
    claims: set[tuple[str, str]] = field(default_factory=set)

    def host(self, pod_path: str) -> Path:
        """Where absolute pod path ``pod_path`` is on the host: ``<podroot>/<pod_path>``."""
        return Path(str(self.root) + posixpath.normpath("/" + pod_path.lstrip("/")))

    def translated(self, path: str) -> bool:
        """Whether absolute ``path`` lies under a mount path or under the home."""
        if not path.startswith("/"):
            return False
        clean = posixpath.normpath(path)
        return any(_under(clean, p) for p in (*self.mount_paths, self.home))

    def translate(self, value: str) -> str:
        """``value`` with its pod path moved into the root (see the module's rule)."""
        if self.translated(value):
            return str(self.root) + value
        match = _OPTION.match(value)
        if match and self.translated(match.group(2)):
            return match.group(1) + str(self.root) + match.group(2)
        return value

    def translate_env_value(self, value: str) -> str:
        """An env value: a path, or a ``:``-separated list of absolute paths."""
        parts = value.split(":")
        if len(parts) > 1 and all(p.startswith("/") for p in parts):
            return ":".join(self.translate(p) for p in parts)
        return self.translate(value)

    def environment(self, env: Mapping[str, str], node: Mapping[str, str]) -> dict[str, str]:
        """``env`` with HOME and every value not inherited unchanged from ``node`` translated."""
        out = {}
        for key, value in env.items():
            inherited = key in node and node[key] == value
            out[key] = value if inherited else self.translate_env_value(value)
        return out

    def argv(self, argv: Iterable[str]) -> list[str]:
        return [self.translate(a) for a in argv]

    def working_dir(self, working_dir: str | None) -> Path:
        """The process's cwd: ``workingDir`` inside the root (made if missing), else the home.

        Falls back to the home (then the root) when the folder cannot be made inside the root.
        """
        for candidate in (working_dir, self.home):
            if not candidate or not candidate.startswith("/"):
                continue
            path = self.host(candidate)
            if path.is_dir():
                return path
            if self.inside(path.parent):
                with contextlib.suppress(OSError):
                    path.mkdir(parents=True, exist_ok=True)
                    return path
        return self.root

    def inside(self, path: Path) -> bool:
        """Whether ``path`` (resolved, links followed) is inside the root."""
        try:
            real = Path(os.path.realpath(path))
        except OSError:
            return False
        return real == self.root or real.is_relative_to(self.root)

    def make_home(self) -> None:
        """The image's home: a real folder, unless a volume is mounted there (or above it)."""
        path = self.host(self.home)
        if path.exists() or path.is_symlink():
            return
        parent = path.parent
        while not parent.exists() and parent != self.root:
            parent = parent.parent
        if self.inside(parent):
            path.mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        """Remove the root and what was made outside it; never follows a link."""
        for entry in reversed(self.outside):
            with contextlib.suppress(OSError):
                if entry.is_symlink() or entry.is_file():
                    entry.unlink()
                elif entry.is_dir():
                    entry.rmdir()  # only when empty: the claim's data stays
        self.outside.clear()
        remove_tree(self.root)


def remove_tree(path: Path) -> None:
    """``rm -rf path`` without following links (a link is removed, never what it points to);
    read-only folders made by the pod's processes are made writable first."""
    if path.is_symlink():
        path.unlink()
        return
    if not path.exists():
        return

    def retry(function: object, failed: str, _exc: object) -> None:
        parent = os.path.dirname(failed)
        with contextlib.suppress(OSError):
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
            if os.path.isdir(failed) and not os.path.islink(failed):
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)

    shutil.rmtree(path, onerror=retry)
