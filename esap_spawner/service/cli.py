"""``esap-spawner service``: the command line of :class:`~esap_spawner.service.app.ESAPService`.

The command line is the traitlets Application's own: each option below is a short name for
an ESAPService trait, whose help text ``--help`` prints; ``--help-all`` lists every trait,
each reachable as ``--ESAPService.<trait>=VALUE`` (and the cluster watcher's as
``--ClusterWatcher.<trait>=VALUE``); ``--config FILE`` loads a traitlets config file, which
the command line overrides. Under JupyterHub (the managed service ``esap``) the prefix, the
listening address and the hub's API token come from the hub's environment; alone, pass
them here. An option the service does not know is refused, not ignored.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from traitlets import Enum, TraitError, Unicode, default
from traitlets.config import Application, Config, catch_config_error
from traitlets.config.loader import KVArgParseConfigLoader

from esap_spawner import __version__

if TYPE_CHECKING:  # typing names of traitlets 5.10+; the code runs on 5.9 (make test-min)
    from traitlets.config.application import ClassesType, StrDict

__all__ = ["ALIASES", "EXAMPLES", "FLAGS", "LOG_FORMAT", "CommandLineApp", "StrictLoader", "main"]

# option -> trait; Bool traits are FLAGS instead
ALIASES: dict[str, str] = {
    "site-file": "ESAPService.site_file",
    "config": "ESAPService.config_file",
    "ip": "ESAPService.ip",
    "port": "ESAPService.port",
    "prefix": "ESAPService.prefix",
    "service-name": "ESAPService.service_name",
    "token-file": "ESAPService.token_file",
    "limited-threshold": "ESAPService.limited_threshold",
    "max-dids": "ESAPService.max_dids",
    "max-body-size": "ESAPService.max_body_size",
    "kubeconfig": "ESAPService.kubeconfig",
    "db-url": "ESAPService.db_url",
    "availability-sample-seconds": "ESAPService.availability_sample_seconds",
    "history-refresh-seconds": "ESAPService.history_refresh_seconds",
    "reservations-poll-seconds": "ESAPService.reservations_poll_seconds",
    "workflow-ca-file": "ESAPService.workflow_ca_file",
    "workflow-lookup-timeout": "ESAPService.workflow_lookup_timeout",
    "hub-query-style": "ESAPService.hub_query_style",
    "log-level": "ESAPService.log_level",
}

FLAGS: dict[str, tuple[dict[str, dict[str, Any]], str]] = {
    "allow-anonymous": (
        {"ESAPService": {"allow_anonymous": True}},
        "Answer callers without a token (they see unrestricted profiles only).",
    ),
    "open-metrics": (
        {"ESAPService": {"metrics_require_auth": False}},
        "Serve /metrics without a token (ESAPService.metrics_require_auth = False).",
    ),
    "db-upgrade-on-start": (
        {"ESAPService": {"db_upgrade_on_start": True}},
        "Upgrade the database's esap tables at start instead of refusing to start.",
    ),
}

EXAMPLES = """
esap-spawner service --site-file site.yaml --token-file tokens.json --port 8890
esap-spawner service --site-file /etc/esap/site.yaml --db-url=postgresql+psycopg://u:p@db/esap
esap-spawner service --site-file site.yaml --config esap_config.py --ClusterWatcher.stale_after=30
"""

LOG_FORMAT = "[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"


class StrictLoader(KVArgParseConfigLoader):
    """traitlets' command-line loader, refusing an option it does not know (traitlets only
    warns, and a mistyped option would silently do nothing)."""

    def _handle_unrecognized_alias(self, arg: str) -> None:
        self.parser.error(f"unrecognized option --{arg} (see --help)")


class CommandLineApp(Application):
    """The command line ESAPService is run with: the options above, ``--config FILE``,
    ``--log-level``; anything unknown refused."""

    version = __version__
    examples = EXAMPLES
    aliases = ALIASES
    flags = FLAGS

    config_file = Unicode(
        "",
        help="""A traitlets config file (Python) for the service, e.g.
        ``esap_config.py`` holding ``c.ESAPService.max_dids = 100`` and
        ``c.ClusterWatcher.stale_after = 30``. Options on the command line win over it.""",
    ).tag(config=True)

    log_level = Enum(
        (0, 10, 20, 30, 40, 50, "DEBUG", "INFO", "WARN", "ERROR", "CRITICAL"),
        default_value=logging.INFO,
        help="Set the log level by value or name, e.g. ``DEBUG``.",
    ).tag(config=True)

    @default("log_format")
    def _default_log_format(self) -> str:
        return LOG_FORMAT

    @catch_config_error
    def initialize(self, argv: list[str] | None = None) -> None:
        """Read the command line, then the config file it names (the command line wins)."""
        self.parse_command_line(argv)
        if self.extra_args:
            raise TraitError(f"unexpected argument(s) {' '.join(self.extra_args)!r}")
        self.refuse_unknown(self.cli_config, "option --{}")
        if self.config_file:
            if not Path(self.config_file).is_file():
                raise TraitError(f"config_file {self.config_file!r}: no such file")
            self.load_config_file(self.config_file)
            self.refuse_unknown(self.config, f"{self.config_file}: c.{{}}")
            self.update_config(self.cli_config)

    def refuse_unknown(self, config: Config, where: str) -> None:
        """A trait this program does not have is an error, not a warning (a typo would
        silently change nothing); ``where`` words the place, e.g. ``option --{}``."""
        known = {cls.__name__: cls for cls in self._classes_inc_parents()}
        for section, values in config.items():
            cls = known.get(section)
            for name in values:
                if cls is None or name not in cls.class_traits(config=True):
                    raise TraitError(f"unknown {where.format(f'{section}.{name}')}")

    def _create_loader(
        self,
        argv: list[str] | None,
        aliases: StrDict,
        flags: StrDict,
        classes: ClassesType | None,
    ) -> KVArgParseConfigLoader:
        return StrictLoader(argv, aliases, flags, classes=classes, log=self.log)


def main(argv: Sequence[str]) -> int:
    """Run the service with ``argv`` (the arguments after ``service``). ``--help``, an
    unknown option or a bad value exit here (SystemExit); a site file or database the
    service cannot use returns 2 with the reason."""
    from esap_spawner.observe.schema import SchemaError
    from esap_spawner.service.app import ESAPService
    from esap_spawner.site.model import SiteError

    service = ESAPService()
    service.initialize(list(argv))
    # the modules' own loggers (the app's logger has a handler of its own); traitlets
    # turns a level's name into its number
    logging.basicConfig(level=cast(int, service.log_level), format=LOG_FORMAT)
    try:
        service.start()
    except (ValueError, TraitError, SiteError, SchemaError) as exc:
        print(f"esap-spawner service: {exc}", file=sys.stderr)
        return 2
    return 0
