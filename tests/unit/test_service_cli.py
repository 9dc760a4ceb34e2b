"""``esap-spawner service``'s command line is ESAPService's own (traitlets): generated help,
every trait reachable, the contract options, and unknown or bad input refused. Parsing
only: nothing starts."""

from __future__ import annotations

from typing import Any

import pytest

from esap_spawner.cli import main
from esap_spawner.service.app import ESAPService
from esap_spawner.service.cli import ALIASES, FLAGS


def parsed(*argv: str) -> ESAPService:
    service = ESAPService()
    service.initialize(list(argv))
    return service


def option_for(trait: str) -> str | None:
    """The short option that sets ``ESAPService.<trait>``, if any."""
    for option, target in ALIASES.items():
        if target == f"ESAPService.{trait}":
            return f"--{option}"
    for option, (config, _help) in FLAGS.items():
        if trait in config.get("ESAPService", {}):
            return f"--{option}"
    return None


def test_help_is_generated_from_the_traits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["service", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for option, target in ALIASES.items():
        assert f"--{option}=" in out and f"[--{target}]" in out
        name = target.split(".")[1]
        first_words = " ".join(ESAPService.class_traits()[name].help.split()[:3])
        assert first_words in " ".join(out.split())  # the trait's own help text
    for option, (_config, help_text) in FLAGS.items():
        assert f"--{option}\n    {help_text}" in out
    assert "esap-spawner service --site-file site.yaml --token-file tokens.json" in out


def test_help_all_lists_the_cluster_watchers_traits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["service", "--help-all"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--ClusterWatcher.stale_after=" in out and "--ESAPService.db_url=" in out


def test_every_trait_has_a_short_option() -> None:
    ours = {n for c in ESAPService.__mro__ if c.__module__.startswith("esap_spawner")
            for n in c.class_own_traits(config=True)}  # fmt: skip
    assert {"config_file", "log_level", "site_file", "db_url"} <= ours
    missing = [name for name in sorted(ours) if not option_for(name)]
    assert missing == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--site-file", "/etc/esap/site.yaml"], {"site_file": "/etc/esap/site.yaml"}),
        (["--site-file=s.yaml", "--port", "9000", "--ip=0.0.0.0"], {"port": 9000, "ip": "0.0.0.0"}),
        (["--prefix=services/esap"], {"prefix": "/services/esap/"}),
        (["--token-file", "tokens.json"], {"token_file": "tokens.json"}),
        (["--allow-anonymous"], {"allow_anonymous": True}),
        (["--max-dids", "7", "--limited-threshold=3"], {"max_dids": 7, "limited_threshold": 3}),
        (["--db-url", "postgresql+psycopg://db/esap"], {"db_url": "postgresql+psycopg://db/esap"}),
        (["--db-url="], {"db_url": ""}),  # the Helm chart's "no history"
        (["--open-metrics"], {"metrics_require_auth": False}),
        (["--db-upgrade-on-start"], {"db_upgrade_on_start": True}),
        (["--log-level=DEBUG"], {"log_level": 10}),
        (["--availability-sample-seconds=0"], {"availability_sample_seconds": 0.0}),
        (["--ESAPService.history_refresh_seconds=5"], {"history_refresh_seconds": 5.0}),
        (["--service-name", "esap2"], {"service_name": "esap2"}),
        (["--kubeconfig", "k.yaml"], {"kubeconfig": "k.yaml"}),
    ],
)  # fmt: skip
def test_options_set_their_traits(argv: list[str], expected: dict[str, Any]) -> None:
    service = parsed(*argv)
    assert {name: getattr(service, name) for name in expected} == expected


def test_the_cluster_watcher_is_configured_from_the_command_line() -> None:
    service = parsed("--ClusterWatcher.stale_after=3")
    assert service.config.ClusterWatcher.stale_after == 3


def test_defaults_without_options(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JUPYTERHUB_SERVICE_URL", "JUPYTERHUB_SERVICE_PREFIX", "ESAP_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    service = parsed()
    assert (service.ip, service.port, service.prefix) == ("127.0.0.1", 8890, "/")
    assert service.db_url == "sqlite:///esap.sqlite" and service.log_level == 20
    assert not service.allow_anonymous and service.metrics_require_auth


@pytest.mark.parametrize(
    ("argv", "code", "said"),
    [
        (["--sitefile=x"], 2, "unrecognized option --sitefile"),
        (["--ESAPService.max_did=3"], 1, "unknown option --ESAPService.max_did"),
        (["--Nobody.x=1"], 1, "unknown option --Nobody.x"),
        (["--max-dids=many"], 1, "expected an int, not the str 'many'"),
        (["--port=eighty"], 1, "expected an int, not the str 'eighty'"),
        (["--availability-sample-seconds=-1"], 1, "must be at least 0"),
        (["--log-level=LOUD"], 1, "log_level"),
        (["serve"], 1, "unexpected argument(s) 'serve'"),
    ],
)
def test_bad_command_lines_are_refused_with_the_reason(
    argv: list[str], code: int, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["service", *argv])
    assert refused.value.code == code
    assert said in capsys.readouterr().err
