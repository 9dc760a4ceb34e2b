"""``esap-spawner service``: run the advertising service.

Under JupyterHub (as the managed service ``esap``) the prefix, the listening address and
the hub's API token come from the hub's environment; alone, pass them here. Every option
maps onto an :class:`~esap_spawner.service.app.ESAPService` trait; ``--config FILE``
loads a traitlets config file for the rest.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from traitlets.config import Config

__all__ = ["add_arguments", "config_from_args", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site-file", required=True, help="the site file (YAML)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8890, or the hub's)")
    parser.add_argument("--ip", help="address to listen on (default 127.0.0.1, or the hub's)")
    parser.add_argument(
        "--prefix",
        help="URL prefix, e.g. /services/esap/ (default: JUPYTERHUB_SERVICE_PREFIX or /)",
    )
    parser.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="answer callers without a token (unrestricted profiles only)",
    )
    parser.add_argument(
        "--token-file",
        help="JSON list of tokens to accept when no hub runs the service (for portals testing)",
    )
    parser.add_argument(
        "--limited-threshold",
        type=int,
        help="'limited' when at most this many can start (default: the site file's, 2)",
    )
    parser.add_argument(
        "--max-dids",
        type=int,
        help="most DIDs per locality request (default: the site file's, 1000)",
    )
    parser.add_argument(
        "--open-metrics", action="store_true", help="serve /metrics without a token"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig for the cluster view")
    parser.add_argument(
        "--db-url",
        help="the hub's spawn-history database, as ESAPSpawner.db_url "
        "(default sqlite:///esap.sqlite; '' disables)",
    )
    parser.add_argument(
        "--availability-sample-seconds",
        type=float,
        help="store availability samples every this many seconds (default 60; 0 disables)",
    )
    parser.add_argument("--config", help="a traitlets config file (Python) for ESAPService")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING...")


def config_from_args(args: argparse.Namespace) -> Config:
    """The traitlets config the command-line options stand for."""
    config = Config()
    svc: dict[str, Any] = {"site_file": args.site_file}
    for option in (
        "port",
        "ip",
        "prefix",
        "token_file",
        "limited_threshold",
        "max_dids",
        "kubeconfig",
        "db_url",
        "availability_sample_seconds",
    ):
        value = getattr(args, option, None)
        if value is not None:
            svc[option] = value
    if args.allow_anonymous:
        svc["allow_anonymous"] = True
    if args.open_metrics:
        svc["metrics_require_auth"] = False
    config.ESAPService = Config(svc)
    return config


def run(args: argparse.Namespace) -> int:
    from esap_spawner.observe.schema import SchemaError
    from esap_spawner.service.app import ESAPService
    from esap_spawner.site.model import SiteError

    logging.basicConfig(
        level=str(args.log_level).upper(),
        format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s",
    )
    from traitlets import TraitError

    service = ESAPService()
    try:
        if args.config:
            service.load_config_file(args.config)
        service.update_config(config_from_args(args))
        service.log_level = str(args.log_level).upper()
        service.start()
    except (ValueError, TraitError, SiteError, SchemaError) as exc:
        print(f"esap-spawner service: {exc}", file=sys.stderr)
        return 2
    return 0
