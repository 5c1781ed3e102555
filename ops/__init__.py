"""Operator tools: the `firepath drain|undrain|drains|routes|lsd|clients|masters` commands (ops.cli), their
REST calls to masters and clients (ops.api) and the drain dry-run (ops.dryrun, pure)."""
