"""`esap-spawner`: one command, one subcommand per job.

Each subcommand lives next to what it runs and is imported only when chosen, so
``esap-spawner check-config`` does not pay for JupyterHub's imports.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

# subcommand -> (module, help). Each module provides ``add_arguments(parser)`` and
# ``run(args) -> int``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("esap_spawner.site_cli", "validate a site file and list every error"),
    "sim": ("esap_spawner.sim.cli", "run the Kubernetes API simulator"),
    "service": ("esap_spawner.service.cli", "run the advertising service"),
    "demo": ("esap_spawner.demo", "run the whole product on this machine"),
    "report": ("esap_spawner.report", "write the performance-assessment report"),
}


def build_parser(available: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esap-spawner", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in available.items():
        help_text = SUBCOMMANDS[name][1]
        sp = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(sp)
    return parser


def _available() -> dict[str, str]:
    found = {}
    for name, (module, _) in SUBCOMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = module
    return found


def main(argv: Sequence[str] | None = None) -> int:
    available = _available()
    args = build_parser(available).parse_args(argv)
    module = importlib.import_module(available[args.command])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
