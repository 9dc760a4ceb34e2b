"""The part of a JupyterHub user a spawner built in-process reads (tests that construct
ESAPSpawner themselves, without a hub)."""

from __future__ import annotations

from jupyterhub.objects import Server


class Group:
    def __init__(self, name: str) -> None:
        self.name = name


class MockUser:
    """The part of a JupyterHub user the spawner reads."""

    def __init__(self, name: str, groups: tuple[str, ...] = (), admin: bool = False) -> None:
        self.name = name
        self.id = 1
        self.groups = [Group(g) for g in groups]
        self.admin = admin
        self.server = Server(ip="127.0.0.1", port=8888)

    @property
    def escaped_name(self) -> str:
        return str(self.name)

    @property
    def url(self) -> str:
        return str(self.server.url)
