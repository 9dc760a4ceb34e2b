"""``python -m esap_spawner``: the same command as ``esap-spawner``."""

import sys

from esap_spawner.cli import main

sys.exit(main())
