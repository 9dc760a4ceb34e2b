"""The esap-jupyterhub chart rendered offline (helm-python-sdk; zero-to-jupyterhub, which
cannot be downloaded here, disabled), and the chart's values-schema generator."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "esap-jupyterhub"


def generator() -> Any:
    """``helm/generate_schema.py`` as a module."""
    spec = importlib.util.spec_from_file_location(
        "generate_schema", REPO / "helm/generate_schema.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """Render with ``values`` (z2jh disabled); ``{(kind, name): manifest}``."""
    values = copy.deepcopy(values or {})
    values.setdefault("jupyterhub", {})["enabled"] = False
    helm = pytest.importorskip("helm_python")
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="esap", namespace="jhub")
    objects: dict[Any, Any] = {}
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in objects, f"{key} rendered twice"
                objects[key] = doc
    return objects
