"""``esap-spawner esap-fixture`` against two running services: a fixture ESAP's loader accepts.

Two ``esap`` services (``esap-spawner service --token-file``), each knowing only its own
portal token; the command runs as a subprocess, as an ESAP operator's cron job would, with
a token file naming each hub's token. Its YAML is checked as Django's ``loaddata`` would
read it against ESAP's ``ida.Facility`` (four CharFields: name 30, description, url and
facilitytype 240): a list of objects with ``model``, an integer ``pk`` and exactly the
model's fields, each a string within its length.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.harness.service import SITE_YAML, StandaloneService

pytestmark = pytest.mark.integration

# ESAP's ida.Facility, as its model declares it (see ../shared/notes/anchors.md)
FACILITY_FIELDS = {"name": 30, "description": 240, "url": 240, "facilitytype": 240}


def django_fixture_problems(text: str) -> list[str]:
    """What Django's YAML deserializer and ``full_clean`` would refuse in ``text``."""
    data = yaml.safe_load(text)
    if not isinstance(data, list):
        return ["a fixture is a list of objects"]
    problems, pks = [], set()
    for i, obj in enumerate(data):
        if not isinstance(obj, dict) or set(obj) - {"model", "pk", "fields"}:
            problems.append(f"[{i}]: an object has model, pk and fields only")
            continue
        if str(obj.get("model", "")).lower() != "ida.facility":
            problems.append(f"[{i}]: model {obj.get('model')!r} is not ida.facility")
        pk = obj.get("pk")
        if not isinstance(pk, int) or isinstance(pk, bool) or pk < 1:
            problems.append(f"[{i}]: pk {pk!r} is not a positive integer")
        elif pk in pks:
            problems.append(f"[{i}]: pk {pk} appears twice")
        pks.add(pk)
        fields = obj.get("fields")
        if not isinstance(fields, dict):
            problems.append(f"[{i}]: fields is not a mapping")
            continue
        for name in set(fields) - set(FACILITY_FIELDS):
            problems.append(f"[{i}]: Facility has no field named {name!r}")
        for name, limit in FACILITY_FIELDS.items():
            value = fields.get(name)
            if not isinstance(value, str) or (value == "" and name != "description"):
                problems.append(f"[{i}].{name}: {value!r} is not a non-empty string")
            elif len(value) > limit:
                problems.append(f"[{i}].{name}: {len(value)} characters, at most {limit}")
    return problems


def site(name: str, url: str) -> str:
    return SITE_YAML.replace("name: Test Hub", f"name: {name}").replace(
        "url: https://hub.example.org/", f"url: {url}"
    )


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[tuple[StandaloneService, str]]]:
    started = []
    try:
        for n, (name, url) in enumerate(
            [("LOFAR hub", "https://lofar.example.org/"), ("CTA hub", "https://cta.example.org/")]
        ):
            token = f"portal-token-{n}"
            tokens = [{"token": token, "name": "esap", "scopes": ["custom:esap:read"]}]
            folder = tmp_path / f"service-{n}"
            folder.mkdir()
            service = StandaloneService(folder, site_text=site(name, url), tokens=tokens)
            started.append((service, token))
        yield started
    finally:
        for service, _ in started:
            service.stop()


def esap_fixture(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "esap_spawner.cli", "esap-fixture", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_fixture_of_two_hubs_loads(
    services: list[tuple[StandaloneService, str]], tmp_path: Path
) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("".join(f"{s.base}api/v1/facility {t}\n" for s, t in services))
    urls = [f"{s.base}api/v1/facility" for s, _ in services]
    done = esap_fixture(*urls, "--pk-start", "40", "--token-file", str(token_file))
    assert done.returncode == 0, done.stderr
    assert django_fixture_problems(done.stdout) == []
    entries = yaml.safe_load(done.stdout)
    assert [(e["pk"], e["fields"]["name"]) for e in entries] == [(40, "LOFAR hub"), (41, "CTA hub")]
    assert entries[0]["fields"]["url"] == "https://lofar.example.org/esap/"  # the launch prefix
    assert entries[1]["fields"]["facilitytype"] == "jupyterhub"
    # each hub's own entry is the same as the command's
    service, token = services[1]
    own = requests.get(
        f"{service.base}api/v1/esap/fixture?pk=41",
        headers={"Authorization": f"token {token}"},
        timeout=20,
    ).json()
    assert own == [entries[1]]

    # written to a file: replaced only when every hub answered
    output = tmp_path / "hubs.yaml"
    output.write_text("previous fixture\n")
    failed = esap_fixture(*urls, "--token-file", str(token_file), "--output", str(output))
    assert failed.returncode == 0 and django_fixture_problems(output.read_text()) == []
    one_token = tmp_path / "one-token"
    one_token.write_text(services[0][1] + "\n")  # the first hub's token for both: 401
    failed = esap_fixture(*urls, "--token-file", str(one_token), "--output", str(output))
    assert failed.returncode == 1
    assert "401" in failed.stderr and urls[1] in failed.stderr
    assert django_fixture_problems(output.read_text()) == []  # the good one is kept


def test_validator_catches_what_django_refuses() -> None:
    """The checker above is not a rubber stamp."""
    fields = {"name": "n", "description": "", "url": "https://h/", "facilitytype": "x"}
    good = {"model": "ida.facility", "pk": 1, "fields": fields}
    assert django_fixture_problems(yaml.safe_dump([good])) == []
    bad: list[Any] = [
        {**good, "pk": "1x"},
        {**good, "model": "ida.workflow"},
        {**good, "fields": {**good["fields"], "name": "n" * 31}},
        {**good, "fields": {**good["fields"], "keywords": []}},
        {**good, "fields": {k: v for k, v in good["fields"].items() if k != "url"}},
    ]
    for obj in bad:
        assert django_fixture_problems(yaml.safe_dump([obj])), obj
    assert django_fixture_problems(yaml.safe_dump([good, good]))  # pk twice
