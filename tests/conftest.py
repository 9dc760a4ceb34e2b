"""Shared test set-up. Fixtures that start real servers live in tests/harness/."""

pytest_plugins = [
    "tests.harness.sim",
    "tests.harness.kube",
    "tests.harness.hub",
    "tests.harness.rucio_server",
    "tests.harness.database",
    "tests.harness.service",
    "tests.harness.snippets",
]
