"""Observability: Prometheus metrics, the spawn-history database, phases, the report."""
