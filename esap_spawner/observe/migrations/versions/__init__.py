"""One file per revision, in one linear history (see docs/operations.md)."""
