"""The demo's prerequisites are read from the ``demo`` extra as declared, not from a copy."""

from __future__ import annotations

from collections.abc import Callable

from esap_spawner.dev.prerequisites import missing_from_extra

REQUIRES = [
    "jupyterhub<7,>=5",
    "jinja2>=3.1",
    "jupyterlab>=4; extra == 'demo'",
    "cryptography>=41; extra == 'demo'",
    "rucio-clients>=35; extra == 'demo'",
    "rucio-clients>=35; extra == 'rucio'",
    "pytest>=8; extra == 'test'",
]


def versions(**found: str) -> Callable[[str], str | None]:
    table = {name.replace("_", "-"): version for name, version in found.items()}
    return lambda name: table.get(name)


def test_everything_installed_misses_nothing() -> None:
    have = versions(jupyterlab="4.2.0", cryptography="44.0.1", rucio_clients="41.5.1")
    assert missing_from_extra(REQUIRES, "demo", have) == []


def test_a_base_install_misses_exactly_the_demo_extra() -> None:
    have = versions(jupyterhub="6.1.1", jinja2="3.1.6", pytest="8.3.0")
    assert missing_from_extra(REQUIRES, "demo", have) == [
        "jupyterlab>=4",
        "cryptography>=41",
        "rucio-clients>=35",
    ]


def test_too_old_counts_as_missing_and_other_extras_are_ignored() -> None:
    have = versions(jupyterlab="3.6.8", cryptography="44.0.1", rucio_clients="41.5.1")
    assert missing_from_extra(REQUIRES, "demo", have) == ["jupyterlab>=4"]
    assert missing_from_extra(REQUIRES, "test", versions()) == ["pytest>=8"]


def test_unparsable_lines_and_versions_do_not_stop_the_check() -> None:
    lines = ["not a requirement !!", "jupyterlab>=4; extra == 'demo'"]
    assert missing_from_extra(lines, "demo", versions(jupyterlab="local-build")) == []
