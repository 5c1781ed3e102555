"""The master core's roles and operator errors (controller.core), in their own module so the core's operator
mixins (controller.coredrains, controller.corerollout) and the runtime can import them without a cycle."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    INACTIVE = "inactive"
    BACKUP = "backup"
    MASTER = "master"


class NotMaster(RuntimeError):
    """An operation that only the master of the current term may do (e.g. a drain) was asked of a non-master."""


class UnknownTarget(ValueError):
    """A drain named a link or switch that the fabric does not have (message says which, and why)."""


class DrainRefused(ValueError):
    """A drain that cannot be recorded (bad who/reason text, too many drains): nothing changed."""
