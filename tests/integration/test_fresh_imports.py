"""What a command imports, in a fresh interpreter (this test process has JupyterHub and the
rest loaded by other tests)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_check_config_does_not_import_jupyterhub() -> None:
    code = (
        "import sys; from esap_spawner.site import cli; "
        "heavy = [m for m in ('jupyterhub', 'kubespawner', 'kubernetes_asyncio', 'tornado') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
