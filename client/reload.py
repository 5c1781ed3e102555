"""A switch client reads its config file again (issue #21: SIGHUP), and which config it holds.

A client programs only LSDs of the config it runs (client.replica refuses a snapshot of another digest
and says so: `config_mismatch`). During a two-phase rollout (controller.rollout) a switch moves to the
next config by reloading: its reports then carry the next digest (the masters accept both while the
rollout is prepared), it keeps forwarding on what it has installed until the masters commit and serve
the next config, and then programs that snapshot.

`check(path, switch, running)` decides; the runtime (client.cli) acts:
- the file is invalid, or no longer has this switch -> refused (the usual file:line:field error), nothing
  changes;
- the same config (digest) -> nothing to do (`on_same` hooks still see it: e.g. the security section,
  which the digest excludes);
- another config -> the client restarts itself on it, gracefully (ND peers hold its links for the restart
  hold, the new process reconciles the switch without a flush): the same path as a SIGTERM + start, with
  no operator or supervisor involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from proto.config import ConfigError, Fabric, load_fabric

__all__ = ["ReloadDecision", "check"]


@dataclass(frozen=True, slots=True)
class ReloadDecision:
    outcome: str                 # "unchanged" | "changed"
    fabric: Fabric


def check(path: str | Path, switch: str, running: Fabric) -> ReloadDecision:
    """Read `path` and compare it with the `running` config. Raises ConfigError (file:line:field) for an
    invalid file or one without `switch`."""
    fabric = load_fabric(path)
    try:
        fabric.switch(switch)
    except KeyError:
        raise ConfigError(str(path), None, "switches", f"no switch named {switch!r} any more") from None
    return ReloadDecision("unchanged" if fabric.digest == running.digest else "changed", fabric)
