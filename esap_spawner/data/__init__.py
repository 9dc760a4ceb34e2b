"""Data: catalogues (Rucio, static), staging, and the init container's links program."""
