"""Operator tools: the `firepath drain|undrain|drains|routes|lsd|clients|masters` commands (controller.ops.cli), their
REST calls to masters and clients (controller.ops.api) and the drain dry-run (controller.ops.dryrun, pure)."""
