"""``esap-spawner service`` with a config file, and the command lines the repository writes
(the hub's snippet, the docs) against the options the service has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from esap_spawner.cli import main
from esap_spawner.service.app import ESAPService
from esap_spawner.service.cli import ALIASES, FLAGS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_a_config_file_sets_traits_and_the_command_line_wins(tmp_path: Path) -> None:
    config = tmp_path / "esap_config.py"
    config.write_text(
        "c.ESAPService.max_dids = 5\n"
        "c.ESAPService.allow_anonymous = True\n"
        "c.ClusterWatcher.stale_after = 7\n"
    )
    service = ESAPService()
    service.initialize(["--config", str(config), "--max-dids=9"])
    assert service.max_dids == 9 and service.allow_anonymous is True
    assert service.config.ClusterWatcher.stale_after == 7


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("c.ESAPService.max_didz = 5\n", "esap_config.py: c.ESAPService.max_didz"),
        ("c.ClusterWatcher.stale_afterr = 5\n", "esap_config.py: c.ClusterWatcher.stale_afterr"),
        ("c.ESAPService.max_dids = 'many'\n", "expected an int"),
    ],
)
def test_a_bad_config_file_is_refused(
    tmp_path: Path, text: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "esap_config.py"
    config.write_text(text)
    with pytest.raises(SystemExit) as refused:
        main(["service", "--config", str(config)])
    assert refused.value.code == 1
    assert said in capsys.readouterr().err


def test_a_missing_config_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["service", "--config", str(tmp_path / "absent.py")])
    assert "absent.py': no such file" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_env")  # no ESAP_* variable; cwd tmp_path
def test_the_hubs_managed_service_command_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.harness import snippets

    monkeypatch.setenv("ESAP_SITE_FILE", str(snippets.EXAMPLE_SITE))
    config = snippets.load_snippets(tmp_path)
    (managed,) = [s for s in snippets.as_list(config.JupyterHub.services) if s["name"] == "esap"]
    command = managed["command"]
    assert command[1:4] == ["-m", "esap_spawner.cli", "service"]
    service = ESAPService()
    service.initialize(command[4:])
    assert service.site_file == str(snippets.EXAMPLE_SITE)


def test_every_option_the_docs_give_the_service_exists() -> None:
    known = {f"--{name}" for name in (*ALIASES, *FLAGS)} | {"--help", "--help-all"}
    found: set[str] = set()
    for page in [*(REPO / "docs").rglob("*.md"), REPO / "README.md"]:
        for span in re.findall(r"`esap-spawner service([^`]*)`", page.read_text()):
            found |= set(re.findall(r"--[A-Za-z][\w.-]*", span))
    assert found, "no option found in the docs: the pattern is stale"
    long_form = {o for o in found if re.fullmatch(r"--(ESAPService|ClusterWatcher)\.\w+", o)}
    assert found - long_form - known == set()
