"""``esap-spawner check-config FILE``: validate a site file and list every problem.

Prints each problem as ``FILE: path: message`` and exits 1, or prints a one-line summary
and exits 0. Imports only the site-file layer, so it runs without JupyterHub.
"""

from __future__ import annotations

import argparse
import sys

from esap_spawner.site.model import SiteError, load_site


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the site file to check, e.g. site.yaml")


def run(args: argparse.Namespace) -> int:
    try:
        site = load_site(args.file)
    except SiteError as exc:
        for problem in exc.problems:
            print(f"{args.file}: {problem}", file=sys.stderr)
        count = len(exc.problems)
        print(f"{args.file}: {count} problem{'s' if count != 1 else ''}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK: {site.summary()}")
    return 0
