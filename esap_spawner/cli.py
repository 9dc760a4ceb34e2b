"""`esap-spawner`: one command, one subcommand per job.

Each subcommand lives next to what it runs and is imported only when chosen, so
``esap-spawner check-config`` does not pay for JupyterHub's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from esap_spawner import __version__

# subcommand -> (module, help). Each module provides ``add_arguments(parser)`` and
# ``run(args) -> int``, or ``main(argv) -> int`` when it parses its own command line (the
# service: a traitlets Application, whose --help is its own).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("esap_spawner.site.cli", "validate a site file and list every error"),
    "sim": ("esap_spawner.dev.sim.cli", "run the Kubernetes API simulator"),
    "service": ("esap_spawner.service.cli", "run the advertising service"),
    "demo": ("esap_spawner.dev.demo", "run the whole product on this machine"),
    "report": ("esap_spawner.observe.report", "write the performance-assessment report"),
    "db": ("esap_spawner.observe.db_cli", "create, upgrade or check the database's esap tables"),
    "esap-fixture": (
        "esap_spawner.service.fixture_cli",
        "print ESAP's facility fixture (YAML) from live hubs",
    ),
}


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser; only the chosen subcommand's module is imported for its arguments."""
    parser = argparse.ArgumentParser(prog="esap-spawner", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    if chosen in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[chosen][0])
        if hasattr(module, "main"):
            return int(module.main(args_list[args_list.index(chosen) + 1 :]))
    args = build_parser(chosen).parse_args(args_list)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
